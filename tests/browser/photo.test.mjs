// The photo view in chromium, against the real server and models: a photo
// is shrunk in the browser, sent once, and its boxes drawn where the photo
// shows them; labels toggle, the display resizes, classification and
// errors show on the page.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { URL_BASE, image, tempDir, launch, open, DESKTOP, PHONE, paintedPixels, paintedAtBoxEdge, screenshot } from './lib.mjs';

let browser;
let dir;
before(async () => {
  browser = await launch();
  dir = tempDir('photo');
});
after(async () => {
  await browser?.close();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

/** Chooses a file and waits until it is prepared for upload. */
async function choose(page, file) {
  await page.setInputFiles('#photo-file', file);
  await page.waitForFunction(() => osprey.photo.state === 'ready');
}

/** Clicks the button and waits for the answer (or the error). */
async function run(page) {
  await page.click('#photo-run');
  await page.waitForFunction(() => ['done', 'error'].includes(osprey.photo.state), null, { timeout: 30_000 });
  return page.evaluate(() => ({ ...osprey.photo }));
}

/** POSTs to the route that were made from this page. */
function countPosts(page, route) {
  const seen = [];
  page.on('request', (r) => {
    if (r.method() === 'POST' && new URL(r.url()).pathname === route) seen.push(r);
  });
  return seen;
}

test('a photo is shrunk, detected once, and its boxes drawn over it', async () => {
  const page = await open(browser, DESKTOP);
  const posts = countPosts(page, '/v1/detect');
  await page.fill('#max-side', '640');
  await page.dispatchEvent('#max-side', 'change');
  await choose(page, image('horses.jpg'));
  const prepared = await page.evaluate(() => ({ ...osprey.photo }));
  assert.equal(Math.max(prepared.imageWidth, prepared.imageHeight), 640, 'shrunk to the longest side asked for');
  assert.equal(await page.isEnabled('#photo-run'), true);

  const state = await run(page);
  assert.equal(state.state, 'done', `no answer: ${JSON.stringify(state.error)}`);
  assert.equal(posts.length, 1);
  assert.equal((await posts[0].allHeaders())['content-type'], 'image/jpeg', 'recompressed to JPEG');
  assert.ok(prepared.uploadBytes < fs.statSync(image('horses.jpg')).size, 'smaller than the file chosen');
  const answer = state.answer;
  assert.deepEqual(answer.image, { width: prepared.imageWidth, height: prepared.imageHeight }, 'the server saw the shrunk image');
  assert.ok(answer.detections.some((d) => d.label === 'horse'), `horses found: ${JSON.stringify(answer.detections)}`);
  assert.equal(state.boxes, answer.detections.length, 'every box drawn');
  assert.equal(state.labels, answer.detections.length, 'every label drawn');
  assert.ok(await paintedAtBoxEdge(page, '#photo-overlay', answer.detections[0].box, answer.image.width), 'the first box is drawn where the photo shows it');
  const rows = await page.locator('#photo-results tbody tr').count();
  assert.equal(rows, answer.detections.length, 'one result row per detection');
  assert.equal(await page.isDisabled('#photo-run'), true, 'the button is spent for this file');
  const full = await page.evaluate(() => osprey.photo.displayWidth);
  await page.fill('#size', '70'); // the whole view in the picture, and a smaller file
  await screenshot(page, 'photo-desktop');
  await page.fill('#size', '100');
  await page.waitForFunction((w) => osprey.photo.displayWidth === w, full);

  // Labels and scores off: boxes stay, label backgrounds go.
  const withLabels = await paintedPixels(page, '#photo-overlay');
  await page.uncheck('#labels');
  await page.waitForFunction(() => osprey.photo.labels === 0);
  const withoutLabels = await paintedPixels(page, '#photo-overlay');
  assert.equal(await page.evaluate(() => osprey.photo.boxes), answer.detections.length);
  assert.ok(withoutLabels > 0 && withoutLabels < withLabels, `labels off: ${withoutLabels} < ${withLabels} painted pixels`);
  await page.check('#labels');
  await page.waitForFunction((n) => osprey.photo.labels === n, answer.detections.length);
  assert.equal(await paintedPixels(page, '#photo-overlay'), withLabels, 'labels back on: the same drawing');

  // Half the size: the photo and its overlay shrink together, boxes still in place.
  await page.fill('#size', '50');
  await page.waitForFunction((w) => Math.abs(osprey.photo.displayWidth - w / 2) <= 2, full);
  const canvas = await page.locator('#photo-overlay').boundingBox();
  const img = await page.locator('#photo-img').boundingBox();
  assert.ok(Math.abs(canvas.width - img.width) < 1 && Math.abs(canvas.height - img.height) < 1, 'the overlay covers the photo');
  assert.ok(await paintedAtBoxEdge(page, '#photo-overlay', answer.detections[0].box, answer.image.width), 'the box follows the resize');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('the button cannot be fired twice for one file', async () => {
  const page = await open(browser, DESKTOP);
  const posts = countPosts(page, '/v1/detect');
  await choose(page, image('dog.jpg'));
  // Three clicks in one task: only the first may send.
  await page.evaluate(() => { const b = document.querySelector('#photo-run'); b.click(); b.click(); b.click(); });
  await page.waitForFunction(() => osprey.photo.state === 'done', null, { timeout: 30_000 });
  await page.click('#photo-run', { force: true, trial: false }).catch(() => {});
  await page.waitForTimeout(300);
  assert.equal(posts.length, 1, 'one request for one file');
  assert.equal(await page.evaluate(() => osprey.photo.requests), 1);
  // A new choice (even of the same file) arms it again.
  await choose(page, image('dog.jpg'));
  await run(page);
  assert.equal(posts.length, 2);
  await page.context().close();
});

test('classification shows the classes on the page', async () => {
  const page = await open(browser, DESKTOP);
  await page.selectOption('#route', '/v1/classify');
  assert.equal(await page.textContent('#photo-run'), 'Classify');
  await choose(page, image('chelsea.png'));
  const state = await run(page);
  assert.equal(state.state, 'done', `no answer: ${JSON.stringify(state.error)}`);
  const top = state.answer.top;
  assert.ok(top.length >= 1 && top[0].label);
  const text = await page.textContent('#photo-results');
  assert.ok(text.includes(top[0].label), `the top class is shown: ${text}`);
  assert.ok(/cat/i.test(top.slice(0, 3).map((c) => c.label).join(' ')), `a cat among ${JSON.stringify(top)}`);
  assert.equal(state.labels, Math.min(3, top.length), 'the top classes are drawn over the photo');
  assert.ok(await paintedPixels(page, '#photo-overlay') > 0);
  await page.context().close();
});

test('a server error is shown inline with its message', async () => {
  const fake = path.join(dir, 'notes.jpg');
  fs.writeFileSync(fake, 'these are notes, not a photo\n'.repeat(20));
  const page = await open(browser, DESKTOP);
  await choose(page, fake);
  const state = await run(page);
  assert.equal(state.state, 'error');
  // What the server says about these bytes, asked directly.
  const direct = await fetch(`${URL_BASE}/v1/detect`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: fs.readFileSync(fake) });
  const body = await direct.json();
  assert.ok(direct.status >= 400 && direct.status < 500, `status ${direct.status}`);
  const shown = await page.textContent('#photo-error');
  assert.equal(await page.isVisible('#photo-error'), true);
  assert.ok(shown.includes(body.error.message), `the server's message "${body.error.message}" in "${shown}"`);
  assert.ok(shown.includes(`HTTP ${direct.status}`), shown);
  assert.equal(await page.isVisible('h1'), true, 'the page is still there');
  await page.context().close();
});

test('on a phone-sized screen the page fits and the boxes are drawn', async () => {
  const page = await open(browser, PHONE);
  await choose(page, image('dog.jpg'));
  const state = await run(page);
  assert.equal(state.state, 'done');
  assert.ok(state.boxes > 0);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no sideways scrolling (${overflow} px too wide)`);
  assert.ok(state.displayWidth <= 390);
  assert.ok(await paintedAtBoxEdge(page, '#photo-overlay', state.answer.detections[0].box, state.answer.image.width), 'box in place at 2x density');
  await screenshot(page, 'photo-phone');
  await page.context().close();
});
