// The notes page (examples/notes/index.html) in headless Chromium against a running
// `eventpipe dev -f examples/notes.yaml --static examples/notes` (started by
// cli/tests/notes_page.rs, which passes its URL, token in the fragment, as PAGE_URL):
// a note is shown saved, a note without text failed and why, a wrong token 401, and a
// subscription the ingress refuses (a 202 whose subscribe token was altered) failed.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const env = (k) => {
  if (!process.env[k]) throw new Error(`${k} is not set`);
  return process.env[k];
};
const WAIT = 30_000;
const PAGE = env('PAGE_URL');
const origin = new URL(PAGE).origin;

const profile = mkdtempSync(join(tmpdir(), 'eventpipe-chromium-'));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: env('CHROMIUM'),
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  // Plain HTML and JS from dev: nothing is fetched from anywhere else.
  page.on('request', (r) => { if (!r.url().startsWith(origin)) errors.push(`fetched ${r.url()}`); });
  await page.goto(PAGE);

  const post = async (text) => {
    await page.fill('#text', text);
    await page.click('#post');
  };
  const status = (text) => page.locator('#notes li', { hasText: text }).locator('span');

  await post('buy milk');
  await page.locator('#notes li', { hasText: 'buy milk' }).locator('span.saved', { hasText: 'saved' }).waitFor({ timeout: WAIT });

  await post('');
  const failed = page.locator('#notes li', { hasText: '(no text)' }).locator('span.failed');
  await failed.waitFor({ timeout: WAIT });
  const why = await failed.textContent();
  if (!/^failed: .*no value at \/data\/text/.test(why)) throw new Error(`failed note shows: ${why}`);

  await page.fill('#token', 'not-the-token');
  await post('with a wrong token');
  const refused = status('with a wrong token');
  await page.locator('#notes li', { hasText: 'with a wrong token' }).locator('span.refused').waitFor({ timeout: WAIT });
  const said = await refused.textContent();
  if (!/^refused: 401/.test(said)) throw new Error(`wrong token shows: ${said}`);

  // The real 202, its subscribe token altered on the way: the ingress refuses the
  // subscription and the page says so.
  await page.fill('#token', new URL(PAGE).hash.replace('#token=', ''));
  await page.route('**/notes', async (route) => {
    const response = await route.fetch();
    const body = await response.json();
    await route.fulfill({ response, json: { ...body, subscribeToken: `${body.subscribeToken}x` } });
  });
  await post('with an altered subscribe token');
  const lost = page.locator('#notes li', { hasText: 'with an altered subscribe token' }).locator('span.failed');
  await lost.waitFor({ timeout: WAIT });
  const lostSays = await lost.textContent();
  if (lostSays !== 'failed: the subscription was refused') throw new Error(`refused subscription shows: ${lostSays}`);
  await page.unroute('**/notes');

  if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT });
  if (errors.length) throw new Error(`page errors: ${errors.join('; ')}`);
  console.log('notes page: saved, failed (no text) and 401 (wrong token) seen in Chromium');
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
