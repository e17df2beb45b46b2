// Drawing a route's answer over an image: boxes (in source-image pixels,
// scaled to the drawn size), their labels and scores, or the top classes of
// a classifier. Used for the on-screen overlays and for the saved video.

/** A stable, distinct colour per class (hues 137.5 degrees apart). */
export function colour(classId) {
  return `hsl(${hue(classId)} 85% 50%)`;
}

const hue = (classId) => (classId * 137.5) % 360;

/** Black text on light hues, white on the dark blues and purples. */
const ink = (classId) => (hue(classId) > 210 && hue(classId) < 300 ? '#fff' : '#000');

/**
 * Sizes an overlay canvas to `width` x `height` CSS pixels at the screen's
 * density and clears it; returns its context, drawing in CSS pixels.
 */
export function fitOverlay(canvas, width, height) {
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(1, Math.round(width * dpr));
  const h = Math.max(1, Math.round(height * dpr));
  if (canvas.width !== w || canvas.height !== h) {
    canvas.width = w;
    canvas.height = h;
  }
  const g = canvas.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, width, height);
  return g;
}

const percent = (score) => `${Math.round(score * 100)}%`;

/**
 * Draws `answer` (a route's JSON) on `g`, whose drawing area is `width` x
 * `height`; boxes are scaled from the answer's image size. Returns what was
 * drawn: `{ boxes, labels }`.
 */
export function drawAnswer(g, answer, width, height, { labels = true } = {}) {
  if (!answer) return { boxes: 0, labels: 0 };
  if (answer.error) return drawNote(g, width, `error: ${answer.error.message}`, '#b42318');
  if (Array.isArray(answer.detections)) return drawBoxes(g, answer, width, height, labels);
  if (Array.isArray(answer.top)) return labels ? drawClasses(g, answer.top, width) : { boxes: 0, labels: 0 };
  return { boxes: 0, labels: 0 };
}

function drawBoxes(g, answer, width, height, showLabels) {
  const src = answer.image || { width, height };
  const sx = width / src.width;
  const sy = height / src.height;
  const font = Math.round(Math.min(18, Math.max(11, width / 45)));
  const line = Math.max(2, Math.round(width / 320));
  const boxes = answer.detections.map((d) => {
    const [x1, y1, x2, y2] = d.box;
    return { d, x: x1 * sx, y: y1 * sy, w: (x2 - x1) * sx, h: (y2 - y1) * sy };
  });
  g.lineWidth = line;
  g.lineJoin = 'round';
  for (const b of boxes) {
    g.strokeStyle = colour(b.d.class_id);
    g.strokeRect(b.x, b.y, b.w, b.h);
  }
  if (!showLabels) return { boxes: boxes.length, labels: 0 };
  // Labels after every box, so no line crosses one; best scores placed first.
  g.font = `600 ${font}px system-ui, sans-serif`;
  g.textBaseline = 'top';
  const placed = [];
  for (const b of [...boxes].sort((p, q) => q.d.score - p.d.score)) {
    const text = `${b.d.label} ${percent(b.d.score)}`;
    const rect = placeLabel(b, g.measureText(text).width + 8, font + 6, width, height, line, placed);
    placed.push(rect);
    g.fillStyle = colour(b.d.class_id);
    g.fillRect(rect.x, rect.y, rect.w, rect.h);
    g.fillStyle = ink(b.d.class_id);
    g.fillText(text, rect.x + 4, rect.y + 3);
  }
  return { boxes: boxes.length, labels: placed.length };
}

/**
 * Where a box's label goes: above the box, else inside its top, else below
 * it; the first of these that overlaps no label already placed (or the
 * first that fits, when all overlap).
 */
function placeLabel(b, w, h, width, height, line, placed) {
  const x = Math.min(Math.max(0, b.x - line / 2), Math.max(0, width - w));
  const candidates = [b.y - h, b.y, b.y + b.h]
    .filter((y) => y >= 0 && y + h <= height)
    .map((y) => ({ x, y, w, h }));
  if (!candidates.length) candidates.push({ x, y: Math.max(0, Math.min(b.y, height - h)), w, h });
  const overlaps = (r) => placed.some((p) => r.x < p.x + p.w && p.x < r.x + r.w && r.y < p.y + p.h && p.y < r.y + r.h);
  return candidates.find((r) => !overlaps(r)) || candidates[0];
}

/** The top classes, as a list in the top-left corner. */
function drawClasses(g, top, width) {
  const font = Math.round(Math.min(20, Math.max(12, width / 36)));
  g.font = `600 ${font}px system-ui, sans-serif`;
  g.textBaseline = 'top';
  const shown = top.slice(0, 3);
  let y = 6;
  for (const c of shown) {
    const text = `${c.label} ${percent(c.score)}`;
    const tw = g.measureText(text).width + 10;
    g.fillStyle = 'rgba(0, 0, 0, 0.65)';
    g.fillRect(6, y, tw, font + 8);
    g.fillStyle = '#fff';
    g.fillText(text, 11, y + 4);
    y += font + 12;
  }
  return { boxes: 0, labels: shown.length };
}

function drawNote(g, width, text, colourText) {
  const font = Math.round(Math.min(16, Math.max(11, width / 50)));
  g.font = `600 ${font}px system-ui, sans-serif`;
  g.textBaseline = 'top';
  const tw = Math.min(width - 12, g.measureText(text).width + 10);
  g.fillStyle = 'rgba(255, 255, 255, 0.85)';
  g.fillRect(6, 6, tw, font + 8);
  g.fillStyle = colourText;
  g.fillText(text, 11, 10, tw - 10);
  return { boxes: 0, labels: 0 };
}

/** Results as a table under the image (detections or classes). */
export function resultsTable(answer) {
  const table = document.createElement('table');
  const rows = Array.isArray(answer.detections) ? answer.detections : answer.top || [];
  const head = table.createTHead().insertRow();
  for (const name of [answer.detections ? 'object' : 'class', 'score']) {
    const th = document.createElement('th');
    th.textContent = name;
    head.append(th);
  }
  const body = table.createTBody();
  for (const r of rows) {
    const tr = body.insertRow();
    const name = tr.insertCell();
    if (answer.detections) {
      const swatch = document.createElement('span');
      swatch.className = 'swatch';
      swatch.style.background = colour(r.class_id);
      name.append(swatch);
    }
    name.append(r.label);
    const score = tr.insertCell();
    score.className = 'score';
    const meter = document.createElement('meter');
    meter.min = 0; meter.max = 1; meter.value = r.score;
    score.append(meter, ` ${percent(r.score)}`);
  }
  return table;
}

/** "yolov5s v1, 98 ms (inference 84 ms)". */
export function timingText(answer) {
  const t = answer.timing_ms || {};
  const version = answer.model_version ? ` v${answer.model_version}` : '';
  const inference = t.inference !== undefined ? ` (inference ${Math.round(t.inference)} ms)` : '';
  const total = t.total !== undefined ? `, ${Math.round(t.total)} ms${inference}` : '';
  return `${answer.model || 'model'}${version}${total}`;
}
