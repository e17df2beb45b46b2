// Shared by the browser tests: Debian's chromium driven by playwright-core
// (no browser download), the server under test (OSPREY_URL, started by
// main.rs), test media made with ffmpeg, canvas pixel counts and screenshots.

import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export const URL_BASE = process.env.OSPREY_URL || 'http://127.0.0.1:8080';
export const CACHE = process.env.OSPREY_CACHE || path.join(os.homedir(), '.cache', 'osprey');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

/** A test image fetched by `make setup`. */
export function image(name) {
  const file = path.join(CACHE, 'images', name);
  if (!fs.existsSync(file)) throw new Error(`${file} is missing (run \`make setup\` first)`);
  return file;
}

/** A fresh temporary folder for one test file. */
export function tempDir(prefix) {
  return fs.mkdtempSync(path.join(os.tmpdir(), `osprey-browser-${prefix}-`));
}

export function ffmpeg(...args) {
  execFileSync('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-y', ...args], { stdio: ['ignore', 'inherit', 'inherit'] });
}

/** ffprobe's view of a file's first video stream (frames counted by decoding). */
export function probe(file) {
  const out = execFileSync('ffprobe', ['-v', 'error', '-count_frames', '-select_streams', 'v:0',
    '-show_entries', 'stream=codec_name,width,height,nb_read_frames', '-of', 'json', file]);
  return JSON.parse(out).streams[0];
}

/** Chromium, headless; `extra` adds switches (the fake camera). */
export async function launch(extra = []) {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--autoplay-policy=no-user-gesture-required', ...extra],
  });
}

export const DESKTOP = { viewport: { width: 1280, height: 900 }, deviceScaleFactor: 1 };
export const PHONE = { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true };

/** A page on the server, with its console errors collected into `page.errors`. */
export async function open(browser, options = DESKTOP, hash = '') {
  const context = await browser.newContext({ ...options, acceptDownloads: true });
  const page = await context.newPage();
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') page.errors.push(m.text()); });
  await page.goto(`${URL_BASE}/${hash}`);
  await page.waitForFunction(() => window.osprey && window.osprey.ready);
  return page;
}

/** Counts the overlay canvas's painted (non-transparent) pixels. */
export async function paintedPixels(page, selector) {
  return page.evaluate((sel) => {
    const c = document.querySelector(sel);
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n += 1;
    return n;
  }, selector);
}

/**
 * Whether the overlay is painted on the left edge of a box given in source
 * pixels (`box`, of an image `srcWidth` wide): the box drawn where the photo
 * shows it, at the displayed size and the screen's density.
 */
export async function paintedAtBoxEdge(page, selector, box, srcWidth) {
  return page.evaluate(({ sel, box, srcWidth }) => {
    const c = document.querySelector(sel);
    const k = c.width / srcWidth; // canvas pixels per source pixel
    const x = Math.round(box[0] * k);
    const y = Math.round(((box[1] + box[3]) / 2) * k);
    const d = c.getContext('2d').getImageData(Math.max(0, x - 2), y, 5, 1).data;
    return [3, 7, 11, 15, 19].some((i) => d[i] > 0);
  }, { sel: selector, box, srcWidth });
}

/**
 * Saves a screenshot as an 8-bit palette PNG (small enough to commit) under
 * $OSPREY_SCREENSHOTS when set (`tests/browser/screenshots` for the README),
 * else in a temporary folder; returns the file and its size.
 */
export async function screenshot(page, name, options = {}) {
  const dir = process.env.OSPREY_SCREENSHOTS || path.join(os.tmpdir(), 'osprey-screenshots');
  fs.mkdirSync(dir, { recursive: true });
  const raw = path.join(os.tmpdir(), `osprey-shot-${process.pid}-${name}.png`);
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: raw, scale: 'css', fullPage: true, ...options });
  const file = path.join(dir, `${name}.png`);
  ffmpeg('-i', raw, '-vf', 'split[a][b];[a]palettegen=max_colors=160[p];[b][p]paletteuse=dither=bayer:bayer_scale=3', '-frames:v', '1', file);
  fs.rmSync(raw);
  return { file, bytes: fs.statSync(file).size };
}
