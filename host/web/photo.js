// The photo view: a chosen file is shrunk and recompressed in the browser
// (canvas -> JPEG, longest side from the settings), previewed, and sent once
// to the chosen route; the answer is drawn on a canvas over the preview.

import { $, osprey, setState, route, labelsShown, maxSide, postImage, errorText, showError, formatBytes } from './common.js';
import { fitOverlay, drawAnswer, resultsTable, timingText } from './draw.js';

const input = $('#photo-file');
const run = $('#photo-run');
const img = $('#photo-img');
const overlay = $('#photo-overlay');
const stage = $('#photo-stage');
const state = osprey.photo;

let file = null; // the chosen file
let pending = null; // the latest preparation: a promise of { blob, width, height, note }
let answer = null; // the route's answer for it
let sent = false; // the button works once per chosen file
let generation = 0; // bumped by each choice: answers for an older one are dropped

export function init() {
  input.addEventListener('change', () => {
    if (input.files.length) choose(input.files[0]);
    // Cleared so that choosing the same file again counts as a new choice.
    input.value = '';
  });
  run.addEventListener('click', send);
  // A new size before sending: prepared again. The button stays armed; a
  // click meanwhile waits for this preparation.
  $('#max-side').addEventListener('change', () => { if (file && !sent) prepare(); });
  $('#route').addEventListener('change', label);
  img.addEventListener('load', draw);
  new ResizeObserver(draw).observe(img);
  label();
}

/** The button says what the chosen route does. */
function label() {
  run.textContent = route() === '/v1/classify' ? 'Classify' : 'Detect';
}

function choose(chosen) {
  file = chosen;
  sent = false;
  answer = null;
  generation += 1;
  $('#photo-name').textContent = file.name;
  $('#photo-results').replaceChildren();
  showError('photo', '');
  run.disabled = false;
  prepare();
}

/** Shrinks and recompresses the chosen file, and previews the result. */
function prepare() {
  setState('photo', 'preparing');
  const mine = shrink(file, maxSide());
  pending = mine;
  mine.then((upload) => {
    if (mine !== pending) return; // a newer preparation replaced this one
    if (upload.width) {
      if (img.src) URL.revokeObjectURL(img.src);
      img.src = URL.createObjectURL(upload.blob);
      stage.hidden = false;
    } else {
      stage.hidden = true;
    }
    Object.assign(state, { imageWidth: upload.width, imageHeight: upload.height, uploadBytes: upload.blob.size });
    $('#photo-info').textContent = upload.note;
    if (!sent) setState('photo', 'ready');
  });
}

/** The latest preparation, once done (another may start while waiting). */
async function prepared() {
  for (;;) {
    const p = pending;
    const upload = await p;
    if (p === pending) return upload;
  }
}

/**
 * The JPEG to upload: at most `longest` pixels on its longest side, EXIF
 * orientation applied. A file the browser cannot decode goes as it is, so
 * the server's own error message is what the user sees.
 */
export async function shrink(blob, longest) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob, { imageOrientation: 'from-image' });
  } catch {
    return { blob, width: 0, height: 0, note: 'This browser cannot read the file as an image; it is sent as it is.' };
  }
  const scale = Math.min(1, longest / Math.max(bitmap.width, bitmap.height));
  const width = Math.max(1, Math.round(bitmap.width * scale));
  const height = Math.max(1, Math.round(bitmap.height * scale));
  const canvas = document.createElement('canvas');
  canvas.width = width;
  canvas.height = height;
  const g = canvas.getContext('2d');
  g.fillStyle = '#fff'; // transparent PNG pixels become white, not black
  g.fillRect(0, 0, width, height);
  g.drawImage(bitmap, 0, 0, width, height);
  const note = `${bitmap.width}×${bitmap.height}` + (scale < 1 ? ` shrunk to ${width}×${height}` : '');
  bitmap.close();
  const jpeg = await new Promise((resolve) => canvas.toBlob(resolve, 'image/jpeg', 0.9));
  return { blob: jpeg, width, height, note: `${note}, ${formatBytes(jpeg.size)} to upload (was ${formatBytes(blob.size)}).` };
}

async function send() {
  if (sent || !file) return;
  sent = true;
  run.disabled = true;
  const mine = generation;
  const upload = await prepared();
  if (mine !== generation) return;
  state.requests += 1;
  setState('photo', 'sending');
  showError('photo', '');
  const path = route();
  const started = performance.now();
  const r = await postImage(path, upload.blob);
  if (mine !== generation) return; // another file was chosen meanwhile
  if (!r.ok) {
    state.error = r.error;
    showError('photo', `Not analysed: ${errorText(r.error, r.status)}`);
    setState('photo', 'error');
    return;
  }
  answer = r.body;
  Object.assign(state, { answer, cached: r.cached });
  const wall = Math.round(performance.now() - started);
  const source = r.cached ? 'Answered from the server\'s cache' : timingText(answer);
  $('#photo-info').textContent = `${upload.note} ${source}; ${wall} ms in all.`;
  $('#photo-results').replaceChildren(summary(answer), resultsTable(answer));
  draw();
  setState('photo', 'done');
}

function summary(a) {
  const p = document.createElement('p');
  if (a.detections) {
    const n = a.detections.length;
    p.textContent = n ? `${n} object${n === 1 ? '' : 's'} found.` : 'Nothing found above the minimum score.';
  } else {
    p.textContent = a.top && a.top.length ? `Most likely: ${a.top[0].label}.` : 'No class.';
  }
  return p;
}

/** Redraws the overlay at the photo's displayed size (after a resize, a toggle, an answer). */
export function draw() {
  if (stage.hidden || !img.complete || !img.naturalWidth) return;
  const width = img.clientWidth;
  const height = img.clientHeight;
  const g = fitOverlay(overlay, width, height);
  const drawn = answer ? drawAnswer(g, answer, width, height, { labels: labelsShown() }) : { boxes: 0, labels: 0 };
  Object.assign(state, drawn, { displayWidth: width, displayHeight: height });
  state.draws += 1;
}
