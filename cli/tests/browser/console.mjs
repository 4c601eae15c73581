// One scenario in headless Chromium against a running `eventpipe dev` (started by
// cli/tests/console.rs, which passes where everything is in the environment): load
// the console, send webhooks and see the counts move without a reload, find a
// correlation id's path, redrive a dead letter and see the DLQ depth drop.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const env = (k) => {
  if (!process.env[k]) throw new Error(`${k} is not set`);
  return process.env[k];
};
const WAIT = 15_000;

function send(issue) {
  const data = JSON.stringify({ action: 'created', issue: { number: issue }, comment: { id: issue }, repository: { full_name: 'acme/browser' } });
  execFileSync(env('EVENTPIPE'), ['send', '--config', 'examples/github-analytics.yaml', '--event-type', 'issue_comment',
    '--to', env('WEBHOOK_URL'), '--secrets-dir', env('SECRETS_DIR'), '--data', data, 'github-ingest', 'github'],
  { cwd: env('EVENTPIPE_ROOT'), stdio: 'pipe' });
}

const profile = mkdtempSync(join(tmpdir(), 'eventpipe-chromium-'));
// A fresh profile (--user-data-dir) each run, which Playwright passes itself.
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: env('CHROMIUM'),
  headless: true,
  viewport: { width: 1280, height: 760 },
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  let loads = 0;
  page.on('load', () => { loads += 1; });
  await page.goto(env('CONSOLE_URL'));
  const card = page.locator('section.card[data-pipeline="github-ingest"]');
  const figure = (name) => card.locator(`[data-field="${name}"] .v`);
  await figure('accepted').waitFor({ timeout: WAIT });
  await page.locator('#live', { hasText: 'live' }).waitFor({ timeout: WAIT });
  const number = async (name) => Number(await figure(name).textContent());
  await page.waitForFunction(() => document.querySelector('[data-pipeline="github-ingest"] [data-field="accepted"] .v').textContent !== '–', null, { timeout: WAIT });
  const before = await number('accepted');

  // Webhooks in: the counts move without a reload.
  for (const issue of [701, 702, 703]) send(issue);
  await page.waitForFunction(([want]) => {
    const v = (f) => Number(document.querySelector(`[data-pipeline="github-ingest"] [data-field="${f}"] .v`).textContent);
    return v('accepted') >= want && v('finished') >= want;
  }, [before + 3], { timeout: WAIT });
  if (loads !== 1) throw new Error(`the page was loaded ${loads} times`);
  await card.locator('tbody.recent td', { hasText: '702' }).first().waitFor({ timeout: WAIT });
  // Trace ids link to Jaeger.
  const trace = await card.locator('tbody.recent td a').first().getAttribute('href');
  if (!trace.startsWith(`${env('JAEGER_URL')}/trace/`)) throw new Error(`trace link: ${trace}`);

  // A correlation id's path: the webhook, then the worker.
  await page.fill('#correlation', '702');
  await page.click('#search button');
  const steps = page.locator('#path-steps li');
  await steps.nth(1).waitFor({ timeout: WAIT });
  const path = await steps.allTextContents();
  if (!/ingress/.test(path[0]) || !/worker/.test(path[1])) throw new Error(`path: ${path.join(' | ')}`);
  // The stream's aggregator comes last, once it has counted the event.
  await page.waitForFunction(() => {
    const count = document.querySelector('[data-pipeline="github-aggregate"] [data-field="finished"] .v');
    return Number(count.textContent) >= 3;
  }, null, { timeout: WAIT });
  await page.click('#search button');
  await page.locator('#path-steps li[data-pipeline="github-aggregate"]').waitFor({ timeout: WAIT });

  // A dead letter: listed, selected, redriven; the DLQ depth drops to zero.
  await page.waitForFunction(() => document.querySelector('[data-pipeline="github-ingest"] [data-field="dlq"] .v').textContent === '1', null, { timeout: WAIT });
  await card.locator('button.dead-letters').click();
  const row = page.locator('#dl-rows tr[data-event="dead-1"]');
  await row.waitFor({ timeout: WAIT });
  if (!/processor down/.test(await row.textContent())) throw new Error(`row: ${await row.textContent()}`);
  await row.locator('input[type=checkbox]').check();
  await page.click('#dl-redrive-selected');
  await page.locator('#dl-status', { hasText: 'redrove 1' }).waitFor({ timeout: WAIT });
  await page.waitForFunction(() => document.querySelector('[data-pipeline="github-ingest"] [data-field="dlq"] .v').textContent === '0', null, { timeout: WAIT });

  if (process.env.SCREENSHOT) {
    await page.click('#dl-close');
    await page.screenshot({ path: process.env.SCREENSHOT });
  }
  if (errors.length) throw new Error(`page errors: ${errors.join('; ')}`);
  console.log('console: live counts, correlation path and redrive seen in Chromium');
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
