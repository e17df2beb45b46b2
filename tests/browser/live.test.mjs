// The live view in chromium, against the real server: the page creates a
// pushed stream with the admin token, ffmpeg publishes a photo to the URL
// the page shows (25 fps, H.264 over RTMP, as OBS would), and the page plays
// the HLS output with hls.js (from the binary) while drawing the boxes of
// the frame on screen from the stream's events; its counters show; pause
// holds the picture; Stop deletes the stream. The photo jumps sideways every
// second, so boxes of another second would be in the wrong place: on
// pauses, the picture on screen is sent to the route and its boxes compared
// with the ones drawn.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { image, launch, open, DESKTOP, URL_BASE, paintedPixels, paintedAtBoxEdge, screenshot } from './lib.mjs';

const TOKEN = process.env.OSPREY_ADMIN_TOKEN;
let browser;
let publisher;
let created; // a stream left behind by a failed run is deleted in `after`
before(async () => { browser = await launch(); });
after(async () => {
  publisher?.stop();
  if (created) await fetch(`${URL_BASE}/v1/streams/${created}`, { method: 'DELETE', headers: { authorization: `Bearer ${TOKEN}` } }).catch(() => {});
  await browser?.close();
});

/**
 * ffmpeg sending `photo` to `url` in real time for `seconds`, still for a second
 * at a time, then 80 px further along (three places, in turn).
 * Each jump is a changed frame that the gate lets through. osprey starts
 * its RTMP listener just after answering, so a first try may find nothing
 * listening yet: a publisher refused is started again, as OBS would retry.
 */
function publish(photo, url, seconds) {
  const args = ['-hide_banner', '-loglevel', 'fatal', '-re', '-loop', '1', '-framerate', '25', '-i', photo,
    '-t', String(seconds), '-vf', "scale=800:-2,crop=640:360:'80*mod(floor(t),3)':'(ih-360)/2',format=yuv420p",
    '-c:v', 'libx264', '-preset', 'ultrafast', '-tune', 'zerolatency', '-g', '25', '-r', '25', '-f', 'flv', url];
  const publisher = { child: null, stopped: false, tries: 0 };
  const run = () => {
    publisher.tries += 1;
    const started = Date.now();
    publisher.child = spawn('ffmpeg', args, { stdio: 'ignore' });
    publisher.child.on('exit', (code) => {
      if (!publisher.stopped && code !== 0 && Date.now() - started < 5000 && publisher.tries < 20) setTimeout(run, 250);
    });
  };
  run();
  publisher.stop = () => { publisher.stopped = true; publisher.child?.kill('SIGKILL'); };
  return publisher;
}

/**
 * The picture on screen through the stream's route, from the page: the best
 * overlap (IoU) of its detections with the first box drawn.
 */
async function inStep(page) {
  return page.evaluate(async () => {
    const v = document.querySelector('#live-el');
    const c = document.createElement('canvas');
    c.width = v.videoWidth;
    c.height = v.videoHeight;
    c.getContext('2d').drawImage(v, 0, 0);
    const blob = await new Promise((r) => c.toBlob(r, 'image/jpeg', 0.95));
    const answer = await (await fetch('/v1/detect/fast', { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: blob })).json();
    const drawn = osprey.live.shown && osprey.live.shown.box;
    if (!drawn) return { iou: 0, frame: osprey.live.drawnIndex, drawn: null };
    const iou = (a, b) => {
      const w = Math.max(0, Math.min(a[2], b[2]) - Math.max(a[0], b[0]));
      const h = Math.max(0, Math.min(a[3], b[3]) - Math.max(a[1], b[1]));
      const area = (r) => (r[2] - r[0]) * (r[3] - r[1]);
      return (w * h) / (area(a) + area(b) - w * h);
    };
    const best = Math.max(0, ...answer.detections.map((d) => iou(d.box, drawn)));
    return { iou: Math.round(best * 100) / 100, frame: osprey.live.drawnIndex, drawn: drawn.map(Math.round) };
  });
}

const live = (page) => page.evaluate(() => ({ ...osprey.live, time: document.querySelector('#live-el').currentTime }));

test('a pushed stream plays with its boxes drawn in step, and Stop ends it', { skip: !TOKEN && 'OSPREY_ADMIN_TOKEN is not set (main.rs sets it)' }, async () => {
  const page = await open(browser, DESKTOP, '#live');
  await page.selectOption('#route', '/v1/detect/fast');
  // A token that is not the server's: a refusal said on the page, no stream.
  await page.fill('#live-token', 'not-the-token');
  await page.click('#live-start');
  await page.waitForFunction(() => !document.querySelector('#live-error').hidden);
  assert.match(await page.textContent('#live-error'), /HTTP 401/);
  assert.equal((await live(page)).state, 'off');

  await page.fill('#live-token', TOKEN);
  await page.click('#live-start');
  await page.waitForFunction(() => osprey.live.state === 'waiting', null, { timeout: 20_000 });
  const url = await page.textContent('#live-publish-url');
  assert.match(url, /^rtmp:\/\/127\.0\.0\.1:\d+\/live\/[0-9a-f]{32}$/);
  assert.equal(await page.evaluate(() => sessionStorage.getItem('osprey.admin-token')), TOKEN, 'the token is kept for this tab');
  created = (await live(page)).id;
  publisher = publish(image('horses.jpg'), url, 90);

  // Playing: the video's clock moves and the boxes of the frame shown are drawn.
  await page.waitForFunction(() => osprey.live.state === 'playing' && osprey.live.boxes > 0 && osprey.live.exact,
    null, { timeout: 60_000 });
  const t0 = (await live(page)).time;
  await page.waitForFunction((t) => document.querySelector('#live-el').currentTime > t + 1, t0, { timeout: 15_000 });
  const s = await live(page);
  assert.ok(s.boxes > 0, 'boxes drawn over the stream');
  assert.ok(await paintedPixels(page, '#live-overlay') > 0);
  assert.ok(s.shown, 'a detection of the frame shown');
  assert.ok(await paintedAtBoxEdge(page, '#live-overlay', s.shown.box, s.shown.width), 'a box drawn where the frame has it');
  // In step: the frame drawn is one the events told of, behind the newest
  // by the player's few segments of delay, not ahead of it.
  assert.ok(s.drawnIndex >= 0 && s.drawnIndex <= s.newestIndex, `frame drawn ${s.drawnIndex}, newest event ${s.newestIndex}`);
  assert.ok(s.newestIndex - s.drawnIndex < 25 * 10, `the picture is ${(s.newestIndex - s.drawnIndex) / 25} s behind the events`);

  // The counters: frames in and out at about the stream's rate, the gate skipping the still photo.
  await page.waitForFunction(() => osprey.live.fpsIn > 0 && osprey.live.stats && osprey.live.stats.state === 'live', null, { timeout: 10_000 });
  const counted = await live(page);
  assert.ok(counted.fpsIn > 10 && counted.fpsIn < 40, `fps in ${counted.fpsIn}`);
  assert.ok(counted.fpsOut > 10 && counted.fpsOut < 40, `fps out ${counted.fpsOut}`);
  assert.ok(counted.stats.skip_rate > 0.5, `a still photo is mostly skipped: ${counted.stats.skip_rate}`);
  assert.match(await page.textContent('#live-fps-in'), /^\d+\.\d fps$/);
  assert.match(await page.textContent('#live-skip'), /^\d+%$/);
  assert.match(await page.textContent('#live-lag'), /^\d+ ms$/);
  assert.equal(await page.textContent('#live-state'), 'live');
  await page.fill('#size', '70'); // the whole view in the picture, and a smaller file
  await screenshot(page, 'live-desktop');
  await page.fill('#size', '100');

  // Pause holds the picture (and its boxes); Play moves on.
  await page.click('#live-play');
  await page.waitForFunction(() => osprey.live.state === 'paused');
  const held = (await live(page)).time;
  await page.waitForTimeout(800);
  assert.equal((await live(page)).time, held, 'paused');
  assert.equal(await page.textContent('#live-play'), 'Play');
  assert.ok(await paintedPixels(page, '#live-overlay') > 0, 'the boxes stay while paused');
  await page.click('#live-play');
  await page.waitForFunction((t) => document.querySelector('#live-el').currentTime > t + 0.5, held, { timeout: 15_000 });

  // In step: paused three times, the boxes drawn are those of the picture
  // shown. A pause on the very frame of a jump may be one frame out (media
  // times are rounded): two of three must match.
  let matched = 0;
  const seen = [];
  for (let i = 0; i < 3; i += 1) {
    await page.click('#live-play');
    await page.waitForFunction(() => osprey.live.state === 'paused');
    const check = await inStep(page);
    seen.push(check);
    if (check.iou > 0.8) matched += 1;
    await page.click('#live-play');
    await page.waitForTimeout(900 + i * 400);
  }
  console.log(`live figures: boxes drawn against the picture shown (IoU, frame): ${seen.map((c) => `${c.iou} @ ${c.frame}`).join(', ')}`);
  assert.ok(matched >= 2, `boxes drawn against the picture shown: ${JSON.stringify(seen)}`);

  // Stop: the stream is deleted on the server.
  const id = s.id;
  await page.click('#live-stop');
  await page.waitForFunction(() => /stopped/.test(document.querySelector('#live-info').textContent));
  assert.equal((await live(page)).state, 'off');
  const gone = await fetch(`${URL_BASE}/v1/streams/${id}`, { headers: { authorization: `Bearer ${TOKEN}` } });
  assert.equal(gone.status, 404, 'the stream is gone');
  created = null;
  assert.deepEqual(page.errors.filter((e) => !/401/.test(e)), [], 'no errors but the refused token\'s');
  await page.context().close();
});
