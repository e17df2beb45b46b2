// The camera view in chromium, against the real server: chromium's fake
// capture device plays a y4m made from a photo; frames go up one at a time,
// answers come back and are drawn live, with FPS, pause, play and stop.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { image, tempDir, ffmpeg, launch, open, DESKTOP, PHONE, paintedPixels, screenshot } from './lib.mjs';

let browser;
let dir;
before(async () => {
  dir = tempDir('camera');
  // A pan over the photo: every frame differs, so none is answered from the cache.
  const feed = path.join(dir, 'horses.y4m');
  ffmpeg('-loop', '1', '-i', image('horses.jpg'), '-t', '2', '-r', '10',
    '-vf', "scale=720:-2,crop=640:420:'t*40':0", '-pix_fmt', 'yuv420p', feed);
  browser = await launch([
    '--use-fake-ui-for-media-stream',
    '--use-fake-device-for-media-stream',
    `--use-file-for-fake-video-capture=${feed}`,
  ]);
});
after(async () => {
  await browser?.close();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

const camera = (page) => page.evaluate(() => ({ ...osprey.camera }));

test('camera frames go up one at a time and their boxes are drawn live', async () => {
  const page = await open(browser, DESKTOP, '#camera');
  await page.selectOption('#route', '/v1/detect/fast');
  let inFlight = 0;
  let mostInFlight = 0;
  page.on('request', (r) => { if (r.url().endsWith('/v1/detect/fast')) mostInFlight = Math.max(mostInFlight, ++inFlight); });
  page.on('requestfinished', (r) => { if (r.url().endsWith('/v1/detect/fast')) inFlight -= 1; });
  await page.click('#camera-start');
  await page.waitForFunction(() => osprey.camera.received >= 5, null, { timeout: 60_000 });
  const live = await camera(page);
  assert.equal(live.state, 'running');
  assert.equal(live.errors, 0, await page.textContent('#camera-error'));
  assert.ok(live.boxes > 0, 'boxes drawn over the camera picture');
  assert.ok(await paintedPixels(page, '#camera-overlay') > 0);
  assert.ok(live.fps > 0);
  assert.match(await page.textContent('#camera-fps'), /^\d+\.\d fps$/);
  assert.equal(mostInFlight, 1, 'the next frame leaves only when the answer is back');
  assert.ok(live.sent - live.received <= 1);
  await page.fill('#size', '70'); // the whole view in the picture, and a smaller file
  await screenshot(page, 'camera-desktop');
  await page.fill('#size', '100');

  // Pause: nothing more is sent; Play: it goes on.
  await page.click('#camera-pause');
  await page.waitForFunction(() => osprey.camera.state === 'paused');
  await page.waitForTimeout(500); // the frame in flight, if any, lands
  const held = (await camera(page)).sent;
  await page.waitForTimeout(1000);
  assert.equal((await camera(page)).sent, held, 'no frames sent while paused');
  assert.equal(await page.textContent('#camera-pause'), 'Play');
  await page.click('#camera-pause');
  await page.waitForFunction((n) => osprey.camera.received > n + 2, held, { timeout: 30_000 });

  // Stop: the camera is released.
  await page.click('#camera-start');
  await page.waitForFunction(() => osprey.camera.state === 'off');
  assert.equal(await page.evaluate(() => document.querySelector('#camera-el').srcObject), null);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('leaving the camera tab stops the camera', async () => {
  const page = await open(browser, PHONE, '#camera');
  await page.click('#camera-start');
  await page.waitForFunction(() => osprey.camera.received >= 2 && osprey.camera.boxes > 0, null, { timeout: 60_000 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no sideways scrolling (${overflow} px too wide)`);
  await screenshot(page, 'camera-phone');
  await page.click('#tab-photo');
  await page.waitForFunction(() => osprey.camera.state === 'off');
  await page.context().close();
});
