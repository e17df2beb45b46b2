// The live view: a stream pushed to osprey (POST /v1/streams with the admin
// token) or one already running, played with hls.js (compiled into the
// binary, loaded at first use). The stream's events carry each frame's
// result by frame index; the boxes of the frame on screen are drawn over
// the video from them, and the counters (fps in and out, skip rate, drops,
// lag, state) from its `stats` events.
//
// In step: segment n of the HLS output holds frames n*fps to (n+1)*fps - 1
// and starts with a keyframe, so a picture shown at media time t, in the
// fragment of sequence number sn that hls.js placed at `start`, is frame
// sn*fps + (t - start)*fps.

import { $, osprey, setState, route, isDetection, labelsShown, readAnswer, errorText, showError } from './common.js';
import { fitOverlay, drawAnswer } from './draw.js';

const video = $('#live-el');
const overlay = $('#live-overlay');
const stage = $('#live-stage');
const playButton = $('#live-play');
const stopButton = $('#live-stop');
const state = osprey.live;

const TOKEN_KEY = 'osprey.admin-token';
// What 2 cores keep up with at the full rate (decode, gate, route, x264);
// OBS or ffmpeg may send any size: osprey scales and pads to this.
const SHAPE = { width: 640, height: 360, fps: 25 };
// Results kept for frames not shown yet: the player runs a few segments
// behind the events, and further after a pause.
const KEEP_SECONDS = 60;

let current = null; // the stream on screen
let session = 0; // opening another stream ends the previous one's callbacks
let hlsLoading = null;

export function init() {
  const token = $('#live-token');
  token.value = sessionStorage.getItem(TOKEN_KEY) || '';
  token.addEventListener('input', () => sessionStorage.setItem(TOKEN_KEY, token.value.trim()));
  $('#live-start').addEventListener('click', start);
  $('#live-open').addEventListener('click', openTyped);
  $('#live-url').addEventListener('keydown', (e) => { if (e.key === 'Enter') openTyped(); });
  $('#live-copy').addEventListener('click', () => navigator.clipboard?.writeText($('#live-publish-url').textContent));
  playButton.addEventListener('click', togglePause);
  stopButton.addEventListener('click', stop);
  video.addEventListener('pause', () => draw());
  video.addEventListener('seeked', () => draw());
  new ResizeObserver(() => draw()).observe(video);
}

const token = () => $('#live-token').value.trim();
const authorised = (headers = {}) => ({ ...headers, authorization: `Bearer ${token()}` });

/** Creates a pushed stream through the chosen route and plays it. */
async function start() {
  showError('live', '');
  if (!token()) return showError('live', 'Starting a stream needs the admin token (the server\'s [admin] token or OSPREY_ADMIN_TOKEN).');
  // No stream for a page that could not play it.
  try {
    await loadHls();
  } catch (e) {
    return showError('live', e.message);
  }
  close();
  setState('live', 'starting');
  const body = { source: 'push', route: route(), ...SHAPE };
  const conf = $('#conf').value.trim();
  if (isDetection(route()) && conf !== '') body.params = { conf: Number(conf) };
  let r;
  try {
    const resp = await fetch('/v1/streams', { method: 'POST', headers: authorised({ 'content-type': 'application/json' }), body: JSON.stringify(body) });
    r = readAnswer(resp.status, resp.headers.get('retry-after'), await resp.text());
  } catch (e) {
    r = { ok: false, status: 0, error: { code: 'network', message: `the server could not be reached (${e.message})` } };
  }
  if (!r.ok) {
    showError('live', `No stream: ${errorText(r.error, r.status)}`);
    return setState('live', 'off');
  }
  showPublish(r.body.publish);
  $('#live-url').value = r.body.hls;
  await play({ id: r.body.id, playlist: r.body.hls, events: r.body.events, fps: r.body.fps });
}

/** Opens the stream whose HLS URL (or ID) is in the field. */
function openTyped() {
  showError('live', '');
  const typed = $('#live-url').value.trim();
  let url;
  try {
    url = new URL(/^[0-9a-f]+$/i.test(typed) ? `/v1/streams/${typed}/index.m3u8` : typed, window.location.href);
  } catch {
    url = new URL('/', window.location.href);
  }
  const id = (url.pathname.match(/^\/v1\/streams\/([0-9a-f]+)(\/|$)/i) || [])[1];
  if (!id) return showError('live', `"${typed}" is no stream: give its HLS URL (/v1/streams/ID/index.m3u8) or its ID.`);
  if (!url.pathname.endsWith('/index.m3u8')) url.pathname = `/v1/streams/${id}/index.m3u8`;
  close();
  $('#live-publish').hidden = true;
  // The stream's rate comes with its first stats event.
  play({ id, playlist: url.href, events: new URL(`/v1/streams/${id}/events`, url).href, fps: 0 });
}

function showPublish(publish) {
  $('#live-publish').hidden = !publish;
  if (!publish) return;
  $('#live-publish-url').textContent = publish;
  $('#live-ffmpeg').textContent = `ffmpeg -re -i INPUT -c:v libx264 -preset veryfast -tune zerolatency -g 25 -an -f flv ${publish}`;
}

/** The player, once: the script is 389 KB that only this view needs. */
function loadHls() {
  hlsLoading ||= new Promise((resolve, reject) => {
    const script = document.createElement('script');
    script.src = '/hls.js';
    script.onload = () => {
      if (window.OSPREY_HLS_MISSING) reject(new Error(window.OSPREY_HLS_MISSING));
      else if (window.Hls) resolve(window.Hls);
      else reject(new Error('/hls.js did not define Hls'));
    };
    script.onerror = () => reject(new Error('the server has no /hls.js'));
    document.head.append(script);
  });
  return hlsLoading;
}

/** Follows a stream's events and plays its HLS once it has a segment. */
async function play(stream) {
  const mine = ++session;
  let Hls;
  try {
    Hls = await loadHls();
  } catch (e) {
    showError('live', e.message);
    return setState('live', 'error');
  }
  if (!Hls.isSupported()) {
    showError('live', 'This browser has no Media Source Extensions: hls.js cannot play the stream here.');
    return setState('live', 'error');
  }
  if (mine !== session) return;
  current = { ...stream, results: new Map(), order: [], frags: new Map(), previous: null, player: null, source: null };
  Object.assign(state, { id: stream.id, events: 0, stats: null, fpsIn: 0, fpsOut: 0, boxes: 0, labels: 0, drawnIndex: -1, exact: false, newestIndex: -1, shown: null });
  setState('live', 'waiting');
  stopButton.disabled = false;
  follow(current);
  // Before its first segment a stream's playlist is empty, which hls.js
  // takes for an error: wait for one (a publisher may take minutes to come).
  let playlist;
  while (mine === session && (playlist = await segments(stream.playlist)) === 'none') await new Promise((r) => setTimeout(r, 1000));
  if (mine !== session) return;
  if (playlist !== 'some') {
    close();
    return showError('live', `The playlist ${stream.playlist} answers ${playlist} (a stream that ended, or a watermarked one opened without its ?viewer= token).`);
  }
  attach(Hls, current, mine);
}

/** Whether a playlist lists a segment yet: 'some', 'none', or the refusal ('HTTP 404'). */
async function segments(playlist) {
  try {
    const resp = await fetch(playlist, { cache: 'no-store' });
    if (resp.status >= 400 && resp.status < 500) return `HTTP ${resp.status}`;
    return resp.ok && /\.ts(\?|$)/m.test(await resp.text()) ? 'some' : 'none';
  } catch {
    return 'none';
  }
}

function attach(Hls, cur, mine) {
  const hls = new Hls({ liveDurationInfinity: true });
  cur.player = hls;
  hls.on(Hls.Events.FRAG_BUFFERED, (_, data) => {
    // Where hls.js put each segment on the video's timeline (set from the
    // segment's own timestamps once parsed): the key from time to frame.
    if (data.frag.type !== 'main' || typeof data.frag.sn !== 'number') return;
    cur.frags.set(data.frag.sn, data.frag.start);
    for (const sn of cur.frags.keys()) if (sn < data.frag.sn - KEEP_SECONDS) cur.frags.delete(sn);
  });
  hls.on(Hls.Events.ERROR, (_, data) => {
    if (!data.fatal) return;
    // A live edge that moved on, or a decode hiccup: hls.js recovers from both.
    if (data.type === Hls.ErrorTypes.MEDIA_ERROR) hls.recoverMediaError();
    else setTimeout(() => { if (mine === session) hls.startLoad(); }, 1000);
    $('#live-info').textContent = `The player recovers from: ${data.details}`;
  });
  hls.loadSource(cur.playlist);
  hls.attachMedia(video);
  stage.hidden = false;
  video.play().catch(() => {});
  playButton.disabled = false;
  playButton.textContent = 'Pause';
  setState('live', 'playing');
  const onFrame = (now, meta) => {
    if (mine !== session) return;
    draw(meta.mediaTime);
    video.requestVideoFrameCallback(onFrame);
  };
  if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(onFrame);
  else video.addEventListener('timeupdate', () => { if (mine === session) draw(); });
}

/** The stream's events: results by frame index, counters, its state. */
function follow(cur) {
  const source = new EventSource(cur.events);
  cur.source = source;
  source.addEventListener('frame', (e) => {
    const f = JSON.parse(e.data);
    cur.results.set(f.index, f.result);
    cur.order.push(f.index);
    const oldest = f.index - KEEP_SECONDS * (cur.fps || SHAPE.fps);
    while (cur.order.length && cur.order[0] < oldest) cur.results.delete(cur.order.shift());
    state.events += 1;
    state.newestIndex = f.index;
  });
  source.addEventListener('stats', (e) => showStats(cur, JSON.parse(e.data)));
  source.addEventListener('state', (e) => {
    const s = JSON.parse(e.data).state;
    $('#live-state').textContent = s;
    if (s === 'ended') {
      close();
      $('#live-info').textContent = 'The stream ended.';
    }
  });
  source.onerror = () => {
    // EventSource reconnects by itself; it gives up only on an HTTP error (the stream is gone).
    if (source.readyState === EventSource.CLOSED) $('#live-info').textContent = 'The stream\'s events stopped: the stream is gone.';
  };
}

function showStats(cur, s) {
  cur.fps = s.fps || cur.fps;
  const now = performance.now();
  const p = cur.previous;
  if (p) {
    const seconds = (now - p.at) / 1000;
    state.fpsIn = (s.frames.in - p.in) / seconds;
    state.fpsOut = (s.frames.out - p.out) / seconds;
    $('#live-fps-in').textContent = `${state.fpsIn.toFixed(1)} fps`;
    $('#live-fps-out').textContent = `${state.fpsOut.toFixed(1)} fps`;
  }
  cur.previous = { at: now, in: s.frames.in, out: s.frames.out };
  state.stats = s;
  $('#live-state').textContent = s.state;
  $('#live-skip').textContent = `${Math.round(s.skip_rate * 100)}%`;
  $('#live-dropped').textContent = String(s.frames.dropped);
  $('#live-lag').textContent = `${Math.round(s.lag_ms)} ms`;
}

/** The frame shown at media time `t`, or -1 before its segment is placed. */
function frameAt(cur, t) {
  const fps = cur.fps || SHAPE.fps;
  let best = null;
  for (const [sn, start] of cur.frags) {
    if (start <= t + 0.5 / fps && (!best || start > best.start)) best = { sn, start };
  }
  // A hundredth of a frame of slack: media times are not exact in binary.
  return best ? best.sn * fps + Math.max(0, Math.floor((t - best.start) * fps + 0.01)) : -1;
}

/**
 * The result of frame `n`: its own, or the newest before it within a
 * second (frames repeated while a publisher stalls have no event; frames
 * sent before this page followed the events have none either).
 */
function resultOf(cur, n) {
  if (cur.results.has(n)) return { result: cur.results.get(n), exact: true };
  const order = cur.order;
  let lo = 0;
  let hi = order.length - 1;
  let found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (order[mid] <= n) { found = order[mid]; lo = mid + 1; } else hi = mid - 1;
  }
  const fps = cur.fps || SHAPE.fps;
  return found >= 0 && n - found <= fps ? { result: cur.results.get(found), exact: false } : { result: null, exact: false };
}

/** Draws the boxes of the frame at media time `t` (default: the video's time). */
export function draw(t = video.currentTime) {
  const cur = current;
  if (!cur || stage.hidden || !video.videoWidth) return;
  const width = video.clientWidth;
  const height = video.clientHeight;
  const g = fitOverlay(overlay, width, height);
  const n = frameAt(cur, t);
  const { result, exact } = n >= 0 ? resultOf(cur, n) : { result: null, exact: false };
  Object.assign(state, drawAnswer(g, result, width, height, { labels: labelsShown() }));
  state.draws += 1;
  state.drawnIndex = result ? n : -1;
  state.exact = exact;
  state.shown = result && Array.isArray(result.detections) && result.detections.length
    ? { box: result.detections[0].box, width: result.image ? result.image.width : SHAPE.width }
    : null;
  $('#live-frame').textContent = n >= 0 ? `frame ${n}${result ? '' : ' (no result yet)'}` : '';
}

function togglePause() {
  if (!current) return;
  if (video.paused) {
    video.play().catch(() => {});
    playButton.textContent = 'Pause';
    setState('live', 'playing');
  } else {
    video.pause();
    playButton.textContent = 'Play';
    setState('live', 'paused');
  }
}

/** Stops the stream on the server (DELETE, with the admin token). */
async function stop() {
  const cur = current;
  if (!cur) return;
  if (!token()) return showError('live', 'Stopping a stream needs the admin token.');
  // The player first: its next playlist request would find the stream gone.
  close();
  let r;
  try {
    const resp = await fetch(`/v1/streams/${cur.id}`, { method: 'DELETE', headers: authorised() });
    r = resp.status === 204 ? { ok: true } : readAnswer(resp.status, null, await resp.text());
  } catch (e) {
    r = { ok: false, status: 0, error: { code: 'network', message: e.message } };
  }
  if (!r.ok) showError('live', `The stream goes on: ${errorText(r.error, r.status)}`);
  else $('#live-info').textContent = `Stream ${cur.id} stopped.`;
  $('#live-publish').hidden = true;
}

/** Stops playing and following the stream on screen (the stream goes on). */
function close() {
  session += 1;
  const cur = current;
  current = null;
  if (cur) {
    cur.source?.close();
    cur.player?.destroy();
  }
  video.removeAttribute('src');
  video.load();
  stage.hidden = true;
  playButton.disabled = true;
  stopButton.disabled = true;
  $('#live-state').textContent = 'off';
  setState('live', 'off');
}
