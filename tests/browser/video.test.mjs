// The video view in chromium, against the real server: an mp4 made with
// ffmpeg goes up with a progress bar, per-frame answers stream back, the
// video plays with its boxes in step, pauses and plays, and the annotated
// video saved by the page is a video ffprobe can read.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { image, tempDir, ffmpeg, probe, launch, open, DESKTOP, PHONE, paintedPixels, screenshot } from './lib.mjs';

let browser;
let dir;
let clip;
before(async () => {
  dir = tempDir('video');
  clip = path.join(dir, 'horses.mp4');
  // 3 s at 10 fps of a slow pan over the horses: H.264, as phones record.
  ffmpeg('-loop', '1', '-i', image('horses.jpg'), '-t', '3', '-r', '10',
    '-vf', "scale=720:-2,crop=640:420:'t*20':0", '-c:v', 'libx264', '-pix_fmt', 'yuv420p', clip);
  browser = await launch();
});
after(async () => {
  await browser?.close();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

/** Records, in the page, every state the view goes through with the Save button's state. */
async function watchSaveButton(page) {
  await page.evaluate(() => {
    window.samples = [];
    const look = () => {
      window.samples.push({ state: osprey.video.state, received: osprey.video.received, disabled: document.querySelector('#video-save').disabled });
      if (!['done', 'failed'].includes(osprey.video.state)) requestAnimationFrame(look);
    };
    look();
  });
}

/** One frame of a video as RGB bytes. */
function frameRgb(file, at, width, height) {
  const out = path.join(dir, 'frame.rgb');
  ffmpeg('-i', file, '-ss', String(at), '-frames:v', '1', '-f', 'rawvideo', '-pix_fmt', 'rgb24', '-s', `${width}x${height}`, out);
  return fs.readFileSync(out);
}

/** The hue of the page's colour of a class (draw.js: hsl(id * 137.5, 85%, 50%)). */
const classHue = (classId) => (classId * 137.5) % 360;

/** Hue (degrees) and saturation (0-1, HSV) of a pixel. */
function hueSat(r, g, b) {
  const max = Math.max(r, g, b), min = Math.min(r, g, b), d = max - min;
  if (d === 0) return [0, 0];
  const h = max === r ? ((g - b) / d) % 6 : max === g ? (b - r) / d + 2 : (r - g) / d + 4;
  return [(h * 60 + 360) % 360, d / max];
}

/**
 * Whether a pixel near the middle of the box's left edge has the box's hue,
 * well saturated (the encoder's 4:2:0 chroma pales a thin line; the pan moves
 * 2 px a frame).
 */
function boxEdgeSeen(rgb, width, [x1, y1, , y2], hue) {
  const ym = Math.round((y1 + y2) / 2);
  for (let y = ym - 8; y <= ym + 8; y++) {
    for (let x = Math.round(x1) - 8; x <= Math.round(x1) + 8; x++) {
      if (x < 0 || x >= width) continue;
      const i = (y * width + x) * 3;
      const [h, s] = hueSat(rgb[i], rgb[i + 1], rgb[i + 2]);
      const off = Math.min(Math.abs(h - hue), 360 - Math.abs(h - hue));
      if (s > 0.35 && off < 20) return true;
    }
  }
  return false;
}

const currentTime = (page) => page.evaluate(() => document.querySelector('#video-el').currentTime);

test('a video goes up, its frames come back, it plays in step and saves as a video', async () => {
  const page = await open(browser, DESKTOP, '#video');
  await page.selectOption('#route', '/v1/detect/fast');
  await page.setInputFiles('#video-file', clip);
  await page.waitForFunction(() => osprey.video.state === 'chosen');
  assert.equal(await page.isDisabled('#video-save'), true, 'nothing to save yet');
  await watchSaveButton(page);
  await page.click('#video-run');
  await page.waitForFunction(() => ['done', 'failed'].includes(osprey.video.state), null, { timeout: 120_000 });
  const state = await page.evaluate(() => ({ ...osprey.video }));
  assert.equal(state.state, 'done', `the job failed: ${JSON.stringify(state.error)}`);

  assert.equal(state.uploadPercent, 100);
  assert.equal(await page.evaluate(() => document.querySelector('#video-upload').value), 100, 'the upload bar is full');
  assert.ok(state.frames >= 28 && state.frames <= 32, `about 30 frames: ${state.frames}`);
  assert.equal(state.received, state.frames, 'an answer for every frame');
  assert.equal(state.errors, 0);
  assert.equal(await page.textContent('#video-progress-text'), `${state.frames} / ${state.frames}`);
  assert.ok(state.fps > 0, 'processing fps known');
  assert.match(await page.textContent('#video-fps'), /^\d+\.\d fps$/);

  // Save stayed disabled while frames were still coming.
  const samples = await page.evaluate(() => window.samples);
  const processing = samples.filter((s) => s.state === 'processing' || s.state === 'uploading');
  assert.ok(processing.length > 0, 'the page was seen processing');
  assert.ok(processing.every((s) => s.disabled), 'Save disabled until every frame is done');
  assert.equal(await page.isEnabled('#video-save'), true, 'Save enabled once done');

  // Play: frames advance with their boxes drawn.
  await page.click('#video-play');
  await page.waitForFunction(() => osprey.video.drawnIndex >= 5, null, { timeout: 15_000 });
  const playing = await page.evaluate(() => ({ ...osprey.video }));
  assert.ok(playing.boxes > 0, 'boxes drawn over the playing video');
  assert.ok(await paintedPixels(page, '#video-overlay') > 0);
  await page.fill('#size', '70'); // the whole view in the picture, and a smaller file
  await screenshot(page, 'video-desktop');
  await page.fill('#size', '100');

  // Pause holds the frame; Play moves on.
  await page.click('#video-play');
  const paused = await currentTime(page);
  await page.waitForTimeout(400);
  assert.equal(await currentTime(page), paused, 'paused');
  assert.equal(await page.textContent('#video-play'), 'Play');
  await page.click('#video-play');
  await page.waitForFunction((t) => document.querySelector('#video-el').currentTime > t + 0.1, paused);
  await page.click('#video-play');

  // Save: the page replays the video onto a canvas and records it.
  const download = page.waitForEvent('download', { timeout: 60_000 });
  await page.click('#video-save');
  await page.waitForFunction(() => osprey.video.state === 'saving');
  assert.equal(await page.isVisible('#video-save-progress'), true, 'a progress bar while saving');
  await page.waitForFunction(() => osprey.video.savePercent > 10 && osprey.video.savePercent < 100, null, { timeout: 10_000, polling: 20 });
  const file = path.join(dir, (await download).suggestedFilename());
  await (await download).saveAs(file);
  await page.waitForFunction(() => osprey.video.state === 'saved');
  assert.match(path.basename(file), /^horses-osprey\.webm$/);
  const saved = probe(file);
  assert.ok(['vp8', 'vp9', 'h264'].includes(saved.codec_name), `codec ${saved.codec_name}`);
  assert.equal(saved.width, 640);
  assert.ok(Math.abs(saved.height - 420) <= 2, `height ${saved.height}`); // VP9 in chromium may pad a row
  assert.ok(Number(saved.nb_read_frames) >= 15, `frames in the saved video: ${saved.nb_read_frames}`);
  // The boxes are in the saved pixels: at 1.5 s (frame 15) a box's colour is
  // at its left edge, where the source video has no such colour.
  const answer = await page.evaluate(() => osprey.video.answers[15]);
  const saved15 = frameRgb(file, 1.5, 640, 420);
  const source15 = frameRgb(clip, 1.5, 640, 420);
  const telling = answer.detections.filter((d) => !boxEdgeSeen(source15, 640, d.box, classHue(d.class_id)));
  assert.ok(telling.length > 0, `frame 15 has a box to look for: ${JSON.stringify(answer.detections)}`);
  for (const d of telling) {
    assert.ok(boxEdgeSeen(saved15, 640, d.box, classHue(d.class_id)), `the box's colour at its edge: ${JSON.stringify(d)}`);
  }
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('a file that is no video is refused inline', async () => {
  const fake = path.join(dir, 'notes.mp4');
  fs.writeFileSync(fake, 'not a video\n'.repeat(100));
  const page = await open(browser, DESKTOP, '#video');
  await page.setInputFiles('#video-file', fake);
  await page.click('#video-run');
  await page.waitForFunction(() => osprey.video.state === 'failed', null, { timeout: 30_000 });
  const shown = await page.textContent('#video-error');
  assert.match(shown, /HTTP 4\d\d/, shown);
  assert.equal(await page.isDisabled('#video-save'), true);
  await page.context().close();
});

test('on a phone-sized screen the video view fits', async () => {
  const page = await open(browser, PHONE, '#video');
  await page.setInputFiles('#video-file', clip);
  await page.click('#video-run');
  await page.waitForFunction(() => osprey.video.state === 'done', null, { timeout: 120_000 });
  await page.click('#video-play');
  await page.waitForFunction(() => osprey.video.drawnIndex >= 3 && osprey.video.boxes > 0, null, { timeout: 15_000 });
  await page.click('#video-play');
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no sideways scrolling (${overflow} px too wide)`);
  await screenshot(page, 'video-phone');
  await page.context().close();
});
