// Opens the gateway's API page (/api/v1/docs) in headless Chromium, waits for Swagger UI to
// render the OpenAPI document, runs GET /api/v1/whoami from the page ("Try it out", "Execute"),
// and prints what it saw as one JSON line for the Rust test to check.
// Usage: node docs-page.mjs http://127.0.0.1:PORT
import { chromium } from 'playwright-core';

const api = process.argv[2];
const browser = await chromium.launch({
  executablePath: process.env.WHARF_CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox'],
});
const errors = [];
try {
  const page = await browser.newPage();
  page.on('pageerror', (e) => errors.push(String(e)));
  // Failed loads are reported by URL below; the browser's own favicon probe is not the page's.
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) errors.push(m.text());
  });
  page.on('response', (r) => {
    if (r.status() >= 400 && !r.url().endsWith('/favicon.ico')) errors.push(`${r.status()} ${r.url()}`);
  });
  const requested = [];
  page.on('request', (r) => requested.push(r.url()));
  await page.goto(`${api}/api/v1/docs`);
  await page.waitForSelector('.opblock', { timeout: 30000 });
  const title = (await page.textContent('.info .title')).trim();
  const operations = await page.$$eval('.opblock', (els) => els.map((e) => {
    const method = e.querySelector('.opblock-summary-method')?.textContent.trim();
    const path = e.querySelector('.opblock-summary-path')?.getAttribute('data-path');
    return `${method} ${path}`;
  }));
  // Run one operation from the page, as a user would.
  const whoami = page.locator('.opblock', { has: page.locator('[data-path="/api/v1/whoami"]') });
  await whoami.locator('.opblock-summary').click();
  await whoami.locator('button.try-out__btn').click();
  await whoami.locator('button.execute').click();
  const status = (await whoami.locator('.live-responses-table tbody .response-col_status').first().textContent({ timeout: 30000 })).trim();
  const body = (await whoami.locator('.live-responses-table .microlight').first().textContent()).trim();
  const offsite = requested.filter((u) => !u.startsWith(api));
  console.log(JSON.stringify({ title, operations, status, body, errors, offsite }));
} finally {
  await browser.close();
}
