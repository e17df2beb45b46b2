// The camera view: frames from getUserMedia are grabbed onto a canvas,
// sent as JPEGs to the chosen route, and the latest answer is drawn over the
// live picture. One frame is in flight at a time, so the rate follows what
// the server keeps up with.

import { $, osprey, setState, route, labelsShown, maxSide, postImage, errorText, showError, Rate, sleep } from './common.js';
import { fitOverlay, drawAnswer, resultsTable, timingText } from './draw.js';

const video = $('#camera-el');
const overlay = $('#camera-overlay');
const stage = $('#camera-stage');
const startButton = $('#camera-start');
const pauseButton = $('#camera-pause');
const state = osprey.camera;
const grabber = document.createElement('canvas');
const rate = new Rate(2000);

let stream = null;
let running = false;
let paused = false;
let resume = null; // resolves the loop's wait while paused
let answer = null;
let session = 0; // a restart ends the previous session's loop

export function init() {
  startButton.addEventListener('click', () => (stream ? stopCamera() : start()));
  pauseButton.addEventListener('click', togglePause);
  new ResizeObserver(draw).observe(video);
}

async function start() {
  showError('camera', '');
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showError('camera', 'This browser gives no camera to this page: cameras need HTTPS, or http://localhost.');
    return setState('camera', 'error');
  }
  setState('camera', 'starting');
  startButton.disabled = true;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 1280 }, height: { ideal: 720 }, facingMode: 'environment' },
      audio: false,
    });
  } catch (e) {
    startButton.disabled = false;
    showError('camera', `No camera: ${e.message || e.name}`);
    return setState('camera', 'error');
  }
  video.srcObject = stream;
  stage.hidden = false;
  await video.play().catch(() => {});
  Object.assign(state, { sent: 0, received: 0, errors: 0, fps: 0 });
  rate.times = [];
  running = true;
  paused = false;
  startButton.disabled = false;
  startButton.textContent = 'Stop camera';
  pauseButton.disabled = false;
  pauseButton.textContent = 'Pause';
  setState('camera', 'running');
  loop(++session);
}

/** Stops the camera (also when the user leaves the Camera tab). */
export function stopCamera() {
  if (!stream) return;
  running = false;
  if (resume) resume();
  for (const track of stream.getTracks()) track.stop();
  stream = null;
  video.srcObject = null;
  answer = null;
  stage.hidden = true;
  startButton.textContent = 'Start camera';
  pauseButton.disabled = true;
  setState('camera', 'off');
}

function togglePause() {
  paused = !paused;
  pauseButton.textContent = paused ? 'Play' : 'Pause';
  if (paused) {
    video.pause();
    setState('camera', 'paused');
  } else {
    video.play().catch(() => {});
    setState('camera', 'running');
    if (resume) resume();
  }
}

/** Grab, send, draw; the next frame leaves only when this answer is back. */
async function loop(mine) {
  while (running && mine === session) {
    if (paused) {
      await new Promise((r) => { resume = r; });
      resume = null;
      continue;
    }
    const frame = await grab();
    if (!frame) { await sleep(100); continue; }
    state.sent += 1;
    const r = await postImage(route(), frame);
    if (!running || mine !== session) break;
    if (r.ok) {
      answer = r.body;
      state.received += 1;
      rate.tick();
      state.fps = rate.fps;
      showError('camera', '');
      $('#camera-fps').textContent = `${rate.fps.toFixed(1)} fps`;
      const source = r.cached ? 'Answered from the server\'s cache (this picture was sent before)' : timingText(answer);
      $('#camera-info').textContent = `${source}; ${state.received} frames answered.`;
      $('#camera-results').replaceChildren(resultsTable(answer));
      if (!paused) draw();
    } else {
      state.errors += 1;
      showError('camera', `Frame not analysed: ${errorText(r.error, r.status)}`);
      // Overloaded or rate limited: wait as told; else a short pause.
      await sleep(r.retryAfter ? r.retryAfter * 1000 : 500);
    }
  }
}

/**
 * The camera's next picture: a frame already sent is not sent again (the
 * server could keep up faster than the camera films).
 */
function nextFrame() {
  if (!video.requestVideoFrameCallback) return sleep(0);
  return Promise.race([new Promise((r) => video.requestVideoFrameCallback(r)), sleep(250)]);
}

/** The current picture as a JPEG, shrunk to the longest side of the settings. */
async function grab() {
  await nextFrame();
  const w = video.videoWidth;
  const h = video.videoHeight;
  if (!w || !h) return null;
  const scale = Math.min(1, maxSide() / Math.max(w, h));
  grabber.width = Math.round(w * scale);
  grabber.height = Math.round(h * scale);
  grabber.getContext('2d').drawImage(video, 0, 0, grabber.width, grabber.height);
  return new Promise((resolve) => grabber.toBlob(resolve, 'image/jpeg', 0.8));
}

export function draw() {
  if (stage.hidden || !video.videoWidth) return;
  const width = video.clientWidth;
  const height = video.clientHeight;
  const g = fitOverlay(overlay, width, height);
  Object.assign(state, drawAnswer(g, answer, width, height, { labels: labelsShown() }));
  state.draws += 1;
}
