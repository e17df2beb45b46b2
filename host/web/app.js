// The page's entry: tabs (photo, video, camera, live; the URL's #hash picks
// one), the settings bar shared by the views, and the server's readiness.

import { $ } from './common.js';
import * as photo from './photo.js';
import * as video from './video.js';
import * as camera from './camera.js';
import * as live from './live.js';

const TABS = ['photo', 'video', 'camera', 'live'];

function showTab(name) {
  if (!TABS.includes(name)) name = 'photo';
  for (const tab of TABS) {
    document.getElementById(tab).hidden = tab !== name;
    document.getElementById(`tab-${tab}`).setAttribute('aria-selected', String(tab === name));
  }
  // A camera left running in a hidden tab would keep sending frames.
  if (name !== 'camera') camera.stopCamera();
  photo.draw();
  camera.draw();
  live.draw();
}

/** Labels and size change every view's drawing. */
function settings() {
  const size = $('#size');
  const applySize = () => {
    document.documentElement.style.setProperty('--stage-size', `${size.value}%`);
    $('#size-value').textContent = `${size.value}%`;
  };
  size.addEventListener('input', applySize);
  applySize();
  $('#labels').addEventListener('change', () => { photo.draw(); camera.draw(); live.draw(); });
  $('#route').addEventListener('change', () => { $('#conf').disabled = $('#route').value === '/v1/classify'; });
  $('#settings').addEventListener('submit', (e) => e.preventDefault());
}

/** "Ready: yolov5s v1 (CPU), ..." from /readyz, or why not. */
async function readiness() {
  const el = $('#ready');
  try {
    const resp = await fetch('/readyz');
    const body = await resp.json();
    const models = (body.models || []).map((m) => `${m.name} v${m.version} (${String(m.provider).replace('ExecutionProvider', '')})`);
    el.textContent = resp.ok ? `Ready: ${models.join(', ')}` : `Not ready (HTTP ${resp.status})`;
  } catch (e) {
    el.textContent = `The server does not answer /readyz: ${e.message}`;
  }
}

for (const button of document.querySelectorAll('[data-tab]')) {
  button.addEventListener('click', () => { window.location.hash = button.dataset.tab; });
}
window.addEventListener('hashchange', () => showTab(window.location.hash.slice(1)));
settings();
photo.init();
video.init();
camera.init();
live.init();
showTab(window.location.hash.slice(1));
readiness();
window.osprey.ready = true;
