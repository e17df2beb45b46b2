// The video view: the file goes up with XMLHttpRequest (for its upload
// progress) to `POST /v1/videos`, the per-frame answers come back as
// Server-Sent Events, and the local copy plays with each frame's boxes drawn
// over it (frame i is at time i / fps). Playback waits for answers it does not
// have yet. Once every frame is done, "Save as video" replays the video onto
// a canvas with the boxes and records that canvas (MediaRecorder, WebM).

import { $, osprey, setState, route, labelsShown, query, readAnswer, errorText, showError, Rate, formatBytes } from './common.js';
import { fitOverlay, drawAnswer } from './draw.js';

const input = $('#video-file');
const run = $('#video-run');
const video = $('#video-el');
const overlay = $('#video-overlay');
const stage = $('#video-stage');
const playButton = $('#video-play');
const saveButton = $('#video-save');
const state = osprey.video;

let file = null;
let job = null; // the 202 answer: { id, events, width, height, fps, frames }
let answers = []; // answers[i]: frame i's answer
let request = null; // the upload in progress
let events = null; // the EventSource following the job
let ended = null; // 'done' or 'failed' once the job has ended
let started = 0; // when processing began (performance.now())
let wantPlay = false; // the user pressed Play (playback may still wait for answers)
let saving = false;
let lastKey = ''; // what the overlay shows now, to redraw only on change
const rate = new Rate(3000);

export function init() {
  input.addEventListener('change', () => {
    if (input.files.length) choose(input.files[0]);
    input.value = '';
  });
  run.addEventListener('click', upload);
  playButton.addEventListener('click', togglePlay);
  saveButton.addEventListener('click', save);
  video.addEventListener('loadedmetadata', () => { lastKey = ''; });
  video.addEventListener('ended', () => { if (!saving) setPlaying(false); });
  requestAnimationFrame(tick);
}

/** A new file: the previous job (if still running) is cancelled by closing its stream. */
function choose(chosen) {
  stop();
  file = chosen;
  $('#video-name').textContent = `${file.name} (${formatBytes(file.size)})`;
  if (video.src) URL.revokeObjectURL(video.src);
  video.src = URL.createObjectURL(file);
  stage.hidden = false;
  run.disabled = false;
  playButton.disabled = false;
  setState('video', 'chosen');
}

/** Forgets the job: closes its event stream, clears answers and meters. */
function stop() {
  if (request) request.abort();
  request = null;
  if (events) events.close();
  events = null;
  job = null;
  answers = [];
  state.answers = answers;
  ended = null;
  rate.times = [];
  setPlaying(false);
  Object.assign(state, { uploadPercent: 0, frames: 0, received: 0, errors: 0, fps: 0, savePercent: 0, drawnIndex: -1 });
  meter('#video-upload', 0, 100, '0%');
  meter('#video-progress', 0, 1, '0 / 0');
  $('#video-fps').textContent = '– fps';
  $('#video-info').textContent = '';
  saveButton.disabled = true;
  $('#video-download').hidden = true;
  showError('video', '');
  lastKey = '';
}

function meter(selector, value, max, text) {
  const bar = $(selector);
  bar.max = max;
  bar.value = value;
  bar.nextElementSibling.textContent = text;
}

/** Sends the file; its upload progress fills the first bar. */
function upload() {
  if (!file) return;
  stop();
  run.disabled = true;
  setState('video', 'uploading');
  const path = route();
  const params = new URLSearchParams(query(path).slice(1));
  params.set('route', path);
  const xhr = new XMLHttpRequest();
  request = xhr;
  xhr.open('POST', `/v1/videos?${params}`);
  xhr.setRequestHeader('content-type', file.type || 'video/mp4');
  xhr.upload.onprogress = (e) => {
    if (!e.lengthComputable) return;
    state.uploadPercent = Math.round((e.loaded / e.total) * 100);
    meter('#video-upload', state.uploadPercent, 100, `${state.uploadPercent}%`);
  };
  xhr.upload.onload = () => {
    state.uploadPercent = 100;
    meter('#video-upload', 100, 100, '100% (checking the video…)');
  };
  xhr.onload = () => {
    request = null;
    const r = readAnswer(xhr.status, xhr.getResponseHeader('retry-after'), xhr.responseText);
    if (xhr.status !== 202 || !r.ok) return fail(r.error || { code: 'bad_answer', message: 'unexpected answer' }, xhr.status);
    meter('#video-upload', 100, 100, '100%');
    follow(r.body);
  };
  xhr.onerror = () => {
    request = null;
    fail({ code: 'network', message: 'the upload failed: the server could not be reached' }, 0);
  };
  xhr.send(file);
}

function fail(error, status) {
  showError('video', `Not analysed: ${errorText(error, status)}`);
  state.error = error;
  run.disabled = false;
  setState('video', 'failed');
}

/** Follows the job's events; closing the stream before `done` cancels the job. */
function follow(accepted) {
  job = accepted;
  Object.assign(state, { id: job.id, frames: job.frames, videoFps: job.fps });
  started = performance.now();
  setState('video', 'processing');
  progress();
  events = new EventSource(job.events);
  events.addEventListener('frame', (e) => {
    const frame = JSON.parse(e.data);
    // A reconnect replays from the start: answers already held are skipped.
    if (answers[frame.index] !== undefined) return;
    answers[frame.index] = frame.result;
    state.received += 1;
    if (frame.result && frame.result.error) state.errors += 1;
    rate.tick();
    progress();
  });
  events.addEventListener('done', (e) => {
    const done = JSON.parse(e.data);
    finish('done');
    Object.assign(state, { frames: done.frames, fps: done.fps, elapsed: done.elapsed_s });
    progress();
    $('#video-fps').textContent = `${done.fps.toFixed(1)} fps`;
    $('#video-info').textContent = `All ${done.frames} frames done in ${done.elapsed_s.toFixed(1)} s` +
      (state.errors ? `; ${state.errors} frames failed (${firstError()}).` : '.');
    saveButton.disabled = false;
  });
  events.addEventListener('failed', (e) => {
    finish('failed');
    fail(JSON.parse(e.data), 0);
  });
  events.onerror = () => {
    if (ended) return;
    if (events.readyState === EventSource.CLOSED) {
      finish('failed');
      fail({ code: 'events_lost', message: 'the event stream of the job closed (was the server restarted?)' }, 0);
    } else {
      $('#video-info').textContent = 'Reconnecting to the event stream…';
    }
  };
}

function finish(how) {
  ended = how;
  events.close();
  lastKey = '';
  run.disabled = false;
  setState('video', how);
}

function firstError() {
  const bad = answers.find((a) => a && a.error);
  return bad ? bad.error.message : '';
}

function progress() {
  const total = Math.max(state.frames, state.received);
  meter('#video-progress', state.received, Math.max(total, 1), `${state.received} / ${total}`);
  if (ended) return;
  const seconds = (performance.now() - started) / 1000;
  state.fps = seconds > 0 ? state.received / seconds : 0;
  $('#video-fps').textContent = state.received ? `${state.fps.toFixed(1)} fps (now ${rate.fps.toFixed(1)})` : '– fps';
}

function setPlaying(on) {
  wantPlay = on;
  state.playing = on;
  playButton.textContent = on ? 'Pause' : 'Play';
  if (!on) video.pause();
}

function togglePlay() {
  if (saving) return;
  if (wantPlay) return setPlaying(false);
  if (video.ended) video.currentTime = 0;
  setPlaying(true);
}

/** The frame shown now: frame i covers [i / fps, (i + 1) / fps). */
function frameIndex() {
  if (!job) return -1;
  const i = Math.floor(video.currentTime * job.fps + 1e-3);
  return Math.min(i, Math.max(0, (state.frames || job.frames) - 1));
}

/**
 * Every animation frame: keeps playback in step with the answers (waits for
 * a frame's answer while the job runs) and redraws the overlay when the
 * frame, its answer, the settings or the size changed.
 */
function tick() {
  requestAnimationFrame(tick);
  if (stage.hidden) return;
  const index = frameIndex();
  const answer = index >= 0 ? answers[index] : undefined;
  if (!saving) keepInStep(index, answer);
  state.currentTime = video.currentTime;
  $('#video-time').textContent = `${video.currentTime.toFixed(1)} s` + (index >= 0 ? `, frame ${index}` : '');
  const width = video.clientWidth;
  const height = video.clientHeight;
  const key = `${index}|${answer !== undefined}|${labelsShown()}|${width}x${height}|${saving}`;
  if (key === lastKey) return;
  lastKey = key;
  const g = fitOverlay(overlay, width, height);
  const drawn = drawAnswer(g, answer, width, height, { labels: labelsShown() });
  Object.assign(state, drawn, { drawnIndex: answer !== undefined ? index : -1 });
  state.draws += 1;
}

function keepInStep(index, answer) {
  const waiting = job && !ended && index >= 0 && answer === undefined;
  state.waiting = Boolean(wantPlay && waiting);
  if (!wantPlay) return;
  if (waiting && !video.paused) {
    video.pause();
    $('#video-info').textContent = `Waiting for frame ${index}…`;
  } else if (!waiting && video.paused && !video.ended && !video.seeking) {
    video.play().catch(() => setPlaying(false));
  }
}

/** Replays the video from the start onto a canvas with the boxes, recording it. */
async function save() {
  if (ended !== 'done' || saving) return;
  saving = true;
  setPlaying(false);
  saveButton.disabled = playButton.disabled = run.disabled = input.disabled = true;
  $('#video-save-meter').hidden = false;
  setState('video', 'saving');
  try {
    const blob = await record();
    const link = $('#video-download');
    if (link.href) URL.revokeObjectURL(link.href);
    link.href = URL.createObjectURL(blob);
    link.download = `${file.name.replace(/\.[^.]*$/, '')}-osprey.webm`;
    link.textContent = `Download the annotated video (${formatBytes(blob.size)})`;
    link.hidden = false;
    Object.assign(state, { savedBytes: blob.size, savedType: blob.type });
    link.click();
    setState('video', 'saved');
  } catch (e) {
    showError('video', `Could not save the video: ${e.message}`);
    setState('video', 'done');
  } finally {
    saving = false;
    saveButton.disabled = playButton.disabled = run.disabled = input.disabled = false;
    $('#video-save-meter').hidden = true;
  }
}

async function record() {
  const type = ['video/webm;codecs=vp9', 'video/webm;codecs=vp8', 'video/webm', 'video/mp4']
    .find((t) => window.MediaRecorder && MediaRecorder.isTypeSupported(t));
  if (!type) throw new Error('this browser cannot record a canvas (no MediaRecorder)');
  const width = video.videoWidth;
  const height = video.videoHeight;
  const canvas = document.createElement('canvas');
  canvas.width = width;
  canvas.height = height;
  const g = canvas.getContext('2d');
  const recorder = new MediaRecorder(canvas.captureStream(), { mimeType: type, videoBitsPerSecond: 4_000_000 });
  const chunks = [];
  recorder.ondataavailable = (e) => { if (e.data.size) chunks.push(e.data); };
  const stopped = new Promise((resolve) => { recorder.onstop = resolve; });
  video.currentTime = 0;
  await new Promise((resolve) => video.addEventListener('seeked', resolve, { once: true }));
  const paint = () => {
    g.drawImage(video, 0, 0, width, height);
    drawAnswer(g, answers[frameIndex()], width, height, { labels: labelsShown() });
    state.savePercent = video.duration ? Math.min(100, (video.currentTime / video.duration) * 100) : 0;
    $('#video-save-progress').value = state.savePercent / 100;
  };
  const onFrame = video.requestVideoFrameCallback
    ? (f) => video.requestVideoFrameCallback(f)
    : (f) => requestAnimationFrame(f);
  const loop = () => { paint(); if (!video.ended) onFrame(loop); };
  paint();
  recorder.start(250);
  const finished = new Promise((resolve) => video.addEventListener('ended', resolve, { once: true }));
  onFrame(loop);
  await video.play();
  await finished;
  paint();
  state.savePercent = 100;
  $('#video-save-progress').value = 1;
  recorder.stop();
  await stopped;
  return new Blob(chunks, { type: type.split(';')[0] });
}
