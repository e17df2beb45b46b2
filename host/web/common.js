// What the photo, video, camera and live views share: the settings bar, requests to
// the routes, error text, and `window.osprey`, the state the browser tests read
// (counters of what was sent, received and drawn).

export const $ = (selector) => document.querySelector(selector);

/** Observable state, one object per view; the views keep it current. */
export const osprey = {
  photo: { state: 'idle', requests: 0, boxes: 0, labels: 0, draws: 0 },
  video: { state: 'idle', uploadPercent: 0, frames: 0, received: 0, fps: 0, boxes: 0, labels: 0, draws: 0, drawnIndex: -1, savePercent: 0 },
  camera: { state: 'off', sent: 0, received: 0, errors: 0, fps: 0, boxes: 0, labels: 0, draws: 0 },
  live: { state: 'off', id: null, events: 0, newestIndex: -1, stats: null, fpsIn: 0, fpsOut: 0, boxes: 0, labels: 0, draws: 0, drawnIndex: -1, exact: false, shown: null },
};
window.osprey = osprey;

/** Sets a view's state, mirrored on its section as `data-state` for CSS and tests. */
export function setState(view, state) {
  osprey[view].state = state;
  document.getElementById(view).dataset.state = state;
}

/** The route chosen in the settings bar. */
export const route = () => $('#route').value;
export const isDetection = (path) => path.startsWith('/v1/detect');
export const labelsShown = () => $('#labels').checked;

/** Longest side images are shrunk to before upload, kept within sane bounds. */
export function maxSide() {
  const n = Math.round(Number($('#max-side').value));
  return Number.isFinite(n) && n >= 32 ? Math.min(n, 8192) : 1280;
}

/** The route's query string (`?conf=0.4`), from the settings bar. */
export function query(path) {
  const conf = $('#conf').value.trim();
  return isDetection(path) && conf !== '' ? `?conf=${encodeURIComponent(conf)}` : '';
}

/**
 * POSTs an image to a route. Never throws: an HTTP or network failure comes
 * back as `{ ok: false, error }` with the server's message when it sent one.
 */
export async function postImage(path, blob) {
  let resp;
  try {
    resp = await fetch(path + query(path), {
      method: 'POST',
      headers: { 'content-type': blob.type || 'application/octet-stream' },
      body: blob,
    });
  } catch (e) {
    return { ok: false, status: 0, error: { code: 'network', message: `the server could not be reached (${e.message})` } };
  }
  const answer = readAnswer(resp.status, resp.headers.get('retry-after'), await resp.text());
  answer.cached = resp.headers.get('x-osprey-cache') === 'hit';
  return answer;
}

/** An answer's status and body as `{ ok, status, body | error, retryAfter }`. */
export function readAnswer(status, retryAfter, text) {
  let body = null;
  try { body = JSON.parse(text); } catch { /* not JSON: said below */ }
  const ok = status >= 200 && status < 300 && body !== null;
  if (ok) return { ok, status, body };
  const error = body && body.error
    ? body.error
    : { code: `http_${status}`, message: `the server answered HTTP ${status}${text ? `: ${text.slice(0, 200)}` : ''}` };
  return { ok, status, error, retryAfter: Number(retryAfter) || 0 };
}

/** One line for an error: the server's message, then status and code. */
export function errorText(error, status) {
  const where = status ? `HTTP ${status}, ${error.code}` : error.code;
  return `${error.message} (${where})`;
}

/** Shows an error line under a view's controls; an empty text hides it. */
export function showError(view, text) {
  const el = document.getElementById(`${view}-error`);
  el.textContent = text || '';
  el.hidden = !text;
}

/** Frames per second over the last `windowMs` of event times. */
export class Rate {
  constructor(windowMs = 2000) { this.windowMs = windowMs; this.times = []; }
  tick(now = performance.now()) {
    this.times.push(now);
    while (this.times.length > 2 && now - this.times[0] > this.windowMs) this.times.shift();
  }
  get fps() {
    const t = this.times;
    return t.length < 2 ? 0 : (t.length - 1) * 1000 / (t[t.length - 1] - t[0]);
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const formatBytes = (n) => (n < 1e6 ? `${(n / 1e3).toFixed(0)} kB` : `${(n / 1e6).toFixed(1)} MB`);
