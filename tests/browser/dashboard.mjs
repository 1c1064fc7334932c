// Drives headless Chromium against a running selfdeploy for tests/dashboard.rs.
//
//   node tests/browser/dashboard.mjs <base-url> <screenshot-dir>
//
// Talks to the Rust test over stdout/stdin, one line each way per step:
//   -> READY <top-row-id>   the page is loaded and its event stream has delivered the resync
//   <- (Rust creates a deployment and publishes it)
//   -> SEEN queued <id>     a new row appeared at the top, queued, without a reload
//   -> SEEN running <id>    ...
//   -> SEEN deployed <id>   the row and the serving panel show it deployed
//   -> DONE                 assertions passed, screenshots saved
// Any failure prints "FAIL <reason>" on stderr and exits 1. Every wait has a deadline.

import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';
import { join } from 'node:path';

const [base, shotDir] = process.argv.slice(2);
if (!base || !shotDir) {
  console.error('usage: dashboard.mjs <base-url> <screenshot-dir>');
  process.exit(2);
}
const STEP_MS = 20_000;
const chromiumPath = process.env.SELFDEPLOY_CHROMIUM || '/usr/bin/chromium';

function fail(reason) {
  console.error(`FAIL ${reason}`);
  process.exit(1);
}

const stdin = createInterface({ input: process.stdin });
const stdinLines = stdin[Symbol.asyncIterator]();
async function expectLine(prefix) {
  const timer = setTimeout(() => fail(`no "${prefix}" from the test within ${STEP_MS} ms`), STEP_MS);
  const { value, done } = await stdinLines.next();
  clearTimeout(timer);
  if (done || !value.startsWith(prefix)) fail(`expected "${prefix}" from the test, got ${JSON.stringify(value)}`);
  return value.slice(prefix.length).trim();
}
const say = (line) => process.stdout.write(line + '\n');

const browser = await chromium.launch({
  executablePath: chromiumPath,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const problems = [];
try {
  const context = await browser.newContext({ viewport: { width: 1180, height: 820 } });
  const page = await context.newPage();
  const dialogs = [];
  page.on('dialog', async (d) => { dialogs.push(d.message()); await d.dismiss(); });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console error: ${m.text()}`); });
  // Count the SSE messages htmx has applied (test instrumentation, not part of the page).
  await page.addInitScript(() => {
    window.__sseMessages = 0;
    document.addEventListener('htmx:sse:after:message', () => { window.__sseMessages += 1; });
  });

  await page.goto(base + '/', { waitUntil: 'load' });
  await page.waitForFunction(() => window.__sseMessages >= 1, null, { timeout: STEP_MS });
  // A reload would lose this marker: updates must arrive in the same document.
  const topBefore = await page.evaluate(() => {
    window.__marker = 'same-document';
    return document.querySelector('#deploys-body tr')?.id ?? '';
  });
  say(`READY ${topBefore}`);

  const id = await expectLine('CREATED');
  const row = `#deploy-${id}`;
  for (const status of ['queued', 'running', 'deployed']) {
    if (status !== 'queued') await expectLine(status.toUpperCase());
    await page.waitForSelector(`${row}.st-${status}`, { timeout: STEP_MS })
      .catch(() => fail(`row ${row} never showed ${status}`));
    say(`SEEN ${status} ${id}`);
  }

  const check = await page.evaluate((rowSel) => {
    const r = document.querySelector(rowSel);
    return {
      top: document.querySelector('#deploys-body tr')?.id,
      rows: document.querySelectorAll(rowSel).length,
      tbodies: document.querySelectorAll('#deploys-body').length,
      leftoverOob: document.querySelectorAll('[hx-swap-oob]').length,
      word: r?.querySelector('.c-status')?.textContent.trim(),
      title: r?.querySelector('.c-msg')?.textContent.trim(),
      scriptsInRow: r?.querySelectorAll('script').length,
      serving: document.querySelector('#serving')?.textContent.replace(/\s+/g, ' ').trim(),
      sha: r?.querySelector('.c-sha')?.textContent.trim(),
      marker: window.__marker,
    };
  }, row);
  if (check.top !== `deploy-${id}`) fail(`the new row is not at the top (top is ${check.top})`);
  if (check.rows !== 1 || check.tbodies !== 1) fail(`expected one row and one tbody, got ${check.rows} and ${check.tbodies}`);
  if (check.leftoverOob !== 0) fail(`${check.leftoverOob} hx-swap-oob attributes left in the page`);
  if (check.word !== 'deployed') fail(`status word is ${JSON.stringify(check.word)}`);
  if (check.title !== '<script>alert(1)</script>') fail(`commit title shows as ${JSON.stringify(check.title)}`);
  if (check.scriptsInRow !== 0) fail('a <script> element was created from the commit message');
  if (!check.serving.includes(check.sha) || !check.serving.includes('<script>alert(1)</script>')) {
    fail(`the serving panel does not show the new deployment: ${check.serving}`);
  }
  if (check.marker !== 'same-document') fail('the page was reloaded; updates must come without one');
  const visible = await page.getByText('<script>alert(1)</script>', { exact: true }).first().isVisible();
  if (!visible) fail('the commit message is not visible as text');
  if (dialogs.length) fail(`a dialog opened: ${dialogs.join(', ')}`);

  await page.screenshot({ path: join(shotDir, 'dashboard.png'), fullPage: true });

  // The same page on a phone, and the deployment's own page, for people to look at.
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true });
  const phonePage = await phone.newPage();
  await phonePage.goto(base + '/', { waitUntil: 'load' });
  await phonePage.waitForSelector(`${row}.st-deployed`, { timeout: STEP_MS });
  await phonePage.screenshot({ path: join(shotDir, 'dashboard-phone.png'), fullPage: true });
  await page.goto(`${base}/deployments/${id}`, { waitUntil: 'load' });
  await page.waitForSelector('#log .ln', { timeout: STEP_MS });
  await page.screenshot({ path: join(shotDir, 'deployment.png'), fullPage: true });

  if (dialogs.length) fail(`a dialog opened: ${dialogs.join(', ')}`);
  if (problems.length) fail(problems.join('; '));
  say('DONE');
} catch (e) {
  fail(e?.stack || String(e));
} finally {
  await browser.close().catch(() => {});
}
process.exit(0);
