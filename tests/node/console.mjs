// Drives the web console in headless Chromium as a user would, one scenario per run, and prints
// what it saw as one JSON line for the Rust test (tests/it/console.rs) to check against the API.
// Usage: node console.mjs <scenario> <gateway URL> [JSON parameters]
import { createRequire } from 'node:module';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [scenario, api, raw] = process.argv.slice(2);
const params = raw ? JSON.parse(raw) : {};
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };
const NARROW = { width: 360, height: 740 };
const WAIT = { timeout: 30000 };

const pages = [];
const browser = await chromium.launch({
  executablePath: process.env.WHARF_CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox'],
});

/** A page in a fresh context (cold cache, empty storage) that records script errors, CSP
 * violations and failed API answers other than those a scenario expects. */
// A scenario runs at desktop size unless its parameters say `"viewport": "phone"`.
async function open(viewport = params.viewport === 'phone' ? PHONE : DESKTOP, options = {}) {
  const context = await browser.newContext({ viewport, ...options });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) errors.push(m.text());
  });
  page.on('dialog', (d) => d.accept());
  pages.push(page);
  return { context, page, errors };
}

async function signIn(page, key) {
  await page.goto(`${api}/`);
  await page.fill('#credential', key);
  await page.click('button[type=submit]');
  await page.waitForSelector('header.top', WAIT);
}

const pointerId = (pointer) => `#f${pointer.replace(/[^A-Za-z0-9_-]/g, (c) => `_${c.charCodeAt(0)}`)}`;

const scenarios = {
  // Submit demo.sleep from the generated form and watch it to its result.
  async submit() {
    const { page, errors } = await open();
    await page.goto(`${api}/submit`);
    await page.selectOption('#tool', params.tool);
    for (const [pointer, value] of Object.entries(params.fields)) await page.fill(pointerId(pointer), String(value));
    await page.click('form.submit button[type=submit]');
    await page.waitForURL(/\/tasks\/[0-9a-f-]{36}$/, WAIT);
    const id = page.url().split('/').pop();
    // The progress bar moves while it runs, then the task ends.
    const seen = new Set();
    const deadline = Date.now() + 30000;
    while (Date.now() < deadline) {
      const value = await page.getAttribute('#progress', 'value').catch(() => null);
      if (value !== null) seen.add(Number(value));
      if (await page.$('.task-head .badge.status-succeeded')) break;
      await page.waitForTimeout(50);
    }
    const status = (await page.textContent('.task-head .badge')).trim();
    const result = (await page.textContent('section.card:has(h2:text("Result")) pre')).trim();
    const events = await page.$$eval('.timeline li', (els) => els.map((e) => e.dataset.type));
    const trace = (await page.textContent('.trace-id')).trim();
    // "Edit and run" opens the form filled with the task's arguments.
    await page.click('button:text("Edit and run")');
    const first = pointerId(Object.keys(params.fields)[0]);
    await page.waitForFunction((sel) => document.querySelector(sel)?.value, first, WAIT);
    const edited = { tool: await page.inputValue('#tool'), [Object.keys(params.fields)[0]]: await page.inputValue(first) };
    return { id, status, result, progress: [...seen].sort((a, b) => a - b), events, trace, edited, errors };
  },

  // A bad argument: the server's field error shows next to the field; the page stays.
  async bad() {
    const { page, errors } = await open();
    await page.goto(`${api}/submit`);
    await page.selectOption('#tool', params.tool);
    for (const [pointer, value] of Object.entries(params.fields)) await page.fill(pointerId(pointer), String(value));
    await page.click('form.submit button[type=submit]');
    const error = await page.waitForSelector(`${pointerId(params.expect)}-error`, WAIT);
    const invalid = await page.getAttribute(pointerId(params.expect), 'aria-invalid');
    return { error: (await error.textContent()).trim(), invalid, url: page.url(), errors };
  },

  // Cancel a running task from its page.
  async cancel() {
    const { page, errors } = await open();
    await page.goto(`${api}/tasks/${params.id}`);
    await page.waitForSelector('.task-head .badge.status-running', WAIT);
    await page.click('.task-head button:text("Cancel")');
    await page.waitForSelector('.task-head .badge.status-cancelled', WAIT);
    const events = await page.$$eval('.timeline li', (els) => els.map((e) => e.dataset.type));
    return { events, errors };
  },

  // Filter by status, select every row, run them again.
  async retry() {
    const { page, errors } = await open();
    await page.goto(`${api}/tasks`);
    await page.selectOption('#f-status', 'failed');
    await page.waitForURL(/status=failed/, WAIT);
    await page.waitForFunction((n) => document.querySelectorAll('tr[data-task]').length === n, params.count, WAIT);
    const statuses = await page.$$eval('tr[data-task]', (rows) => rows.map((r) => r.dataset.status));
    await page.check('input[aria-label="Select every task shown"]');
    await page.click('button:text("Retry selected")');
    const notice = await page.waitForSelector('p.notice:text-matches("^Ran again")', WAIT);
    return { statuses, notice: (await notice.textContent()).trim(), errors };
  },

  // Replay the first dead letter from the list.
  async dlq() {
    const { page, errors } = await open();
    await page.goto(`${api}/dlq`);
    await page.waitForSelector('table.letters[data-loaded]', WAIT);
    const letters = await page.$$eval('tr[data-letter]', (rows) => rows.map((r) => r.dataset.letter));
    await page.check(`input[aria-label="Select dead letter ${letters[0]}"]`);
    await page.click('button:text("Replay selected")');
    const notice = await page.waitForSelector('p.notice:text-matches("^Replayed")', WAIT);
    return { letters, notice: (await notice.textContent()).trim(), errors };
  },

  // Pause a queue, watch its backlog grow while tasks are submitted, resume, watch it drain.
  async pause() {
    const { page, errors } = await open();
    await page.goto(`${api}/queues`);
    const row = `tr[data-queue="${params.queue}"]`;
    await page.waitForSelector(row, WAIT);
    await page.click(`button[aria-label="Pause ${params.queue}"]`);
    await page.waitForSelector(`${row}[data-paused="true"]`, WAIT);
    // Submitted meanwhile (through the same public API): accepted, and they wait.
    const statuses = await page.evaluate(
      ({ n, body }) =>
        Promise.all(
          Array.from({ length: n }, () =>
            fetch('/api/v1/tasks', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }).then((r) => r.status),
          ),
        ),
      { n: params.count, body: params.task },
    );
    await page.waitForFunction(
      ({ row, n }) => document.querySelector(`${row} .waiting`)?.textContent === String(n),
      { row, n: params.count },
      WAIT,
    );
    const grown = Number(await page.textContent(`${row} .waiting`));
    await page.click(`button[aria-label="Resume ${params.queue}"]`);
    await page.waitForSelector(`${row}[data-paused="false"]`, WAIT);
    await page.waitForFunction((row) => document.querySelector(`${row} .waiting`)?.textContent === '0', row, WAIT);
    return { statuses, grown, errors };
  },

  // A long list: scroll until every task is loaded, then scroll through it all, frame by
  // frame, counting the rows in the document and timing the frames.
  async scroll() {
    const { page, errors } = await open();
    await page.goto(`${api}/tasks`);
    await page.waitForSelector('table.tasks[data-loaded]', WAIT);
    const counted = () => page.textContent('.bulk span');
    let maxRows = 0;
    const deadline = Date.now() + 120000;
    while (!(await counted()).startsWith(`${params.count} tasks`) && Date.now() < deadline) {
      await page.evaluate(() => window.scrollTo(0, document.documentElement.scrollHeight));
      maxRows = Math.max(maxRows, await page.$$eval('tr[data-task]', (r) => r.length));
      await page.waitForTimeout(20);
    }
    const loaded = (await counted()).trim();
    // From the top to the bottom, one step per animation frame.
    const frames = await page.evaluate(
      (step) =>
        new Promise((resolve) => {
          window.scrollTo(0, 0);
          const times = [];
          let rows = 0;
          let last = performance.now();
          const tick = (now) => {
            times.push(now - last);
            last = now;
            rows = Math.max(rows, document.querySelectorAll('tr[data-task]').length);
            const bottom = document.documentElement.scrollHeight - window.innerHeight;
            if (window.scrollY >= bottom) return resolve({ times: times.slice(1), rows });
            window.scrollBy(0, step);
            requestAnimationFrame(tick);
          };
          requestAnimationFrame(tick);
        }),
      params.step,
    );
    const sorted = [...frames.times].sort((a, b) => a - b);
    const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
    return {
      loaded,
      maxRows: Math.max(maxRows, frames.rows),
      frames: sorted.length,
      p50: at(0.5),
      p95: at(0.95),
      max: sorted.at(-1),
      long: sorted.filter((t) => t > 50).length,
      errors,
    };
  },

  // What a key's holder sees: the sign-in, then only what its permissions allow.
  async signin() {
    const { page, errors } = await open();
    await signIn(page, params.key);
    await page.click('nav a:text("Tasks")');
    await page.waitForSelector('table.tasks[data-loaded]', WAIT);
    const rows = async () => page.$$eval('tr[data-task]', (r) => r.map((x) => x.dataset.task));
    const seen = {
      nav: await page.$$eval('nav a', (a) => a.map((x) => x.textContent.trim())),
      buttons: await page.$$eval('main button', (b) => b.map((x) => x.textContent.trim())),
      rows: await rows(),
    };
    if (params.task) {
      await page.goto(`${api}/tasks/${params.task}`);
      await page.waitForSelector('.task-head, .alert', WAIT);
      seen.task = {
        alert: (await page.$('.alert')) ? (await page.textContent('.alert')).trim() : null,
        buttons: await page.$$eval('main button', (b) => b.map((x) => x.textContent.trim())),
      };
    }
    return { ...seen, errors };
  },

  // Every screen at a desktop and a phone size: no horizontal scrolling, a screenshot, and
  // axe-core's checks with no serious or critical violation. (axe is injected as a script, which
  // the console's CSP forbids: this context alone bypasses the CSP.)
  async screens() {
    const axe = createRequire(import.meta.url).resolve('axe-core/axe.min.js');
    mkdirSync(params.dir, { recursive: true });
    const report = [];
    const allErrors = [];
    // The narrowest phone the console is for (360 px) is checked too, without screenshots.
    for (const [size, viewport] of [['desktop', DESKTOP], ['phone', PHONE], ['narrow', NARROW]]) {
      const { page, errors } = await open(viewport, { bypassCSP: true });
      if (params.key) await signIn(page, params.key);
      for (const screen of params.screens) {
        await page.goto(`${api}${screen.path}`);
        await page.waitForSelector(screen.ready, WAIT);
        // The page, and any box in it that would scroll sideways.
        const overflow = await page.evaluate(() => {
          const sideways = [...document.querySelectorAll('*')].filter(
            (e) => e.scrollWidth > e.clientWidth + 1 && ['auto', 'scroll'].includes(getComputedStyle(e).overflowX),
          );
          const page = document.documentElement.scrollWidth - window.innerWidth;
          return [...(page > 0 ? [`the page, by ${page} px`] : []), ...sideways.map((e) => `${e.tagName.toLowerCase()}.${e.className}`)];
        });
        if (size !== 'narrow') await page.screenshot({ path: join(params.dir, `${screen.name}-${size}.png`), fullPage: true });
        await page.addScriptTag({ path: axe });
        const violations = await page.evaluate(async () => {
          const result = await window.axe.run(document, { resultTypes: ['violations'] });
          return result.violations
            .filter((v) => v.impact === 'serious' || v.impact === 'critical')
            .map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.map((n) => n.target.join(' ')).slice(0, 5) }));
        });
        report.push({ screen: screen.name, size, overflow, violations });
      }
      allErrors.push(...errors);
    }
    return { report, errors: allErrors };
  },

  // The installable app: manifest and service worker accepted by Chromium, a shell that starts
  // offline, no API answer ever cached; and the first load's time and JavaScript bytes.
  async pwa() {
    const profile = mkdtempSync(join(tmpdir(), 'wharf-console-profile-'));
    // A persistent profile: Chromium does not offer installation in incognito contexts.
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: process.env.WHARF_CHROMIUM || '/usr/bin/chromium',
      headless: true,
      args: ['--no-sandbox'],
      viewport: DESKTOP,
    });
    const errors = [];
    try {
      const page = context.pages()[0] ?? (await context.newPage());
      page.on('pageerror', (e) => errors.push(String(e)));
      pages.push(page);
      await page.goto(`${api}/`);
      await page.waitForSelector(params.ready, WAIT);
      const loadMs = await page.evaluate(() => performance.now());
      const javascript = await page.evaluate(() =>
        performance
          .getEntriesByType('resource')
          .filter((e) => new URL(e.name).pathname.endsWith('.js'))
          .reduce((n, e) => n + e.encodedBodySize, 0),
      );
      await page.evaluate(() => navigator.serviceWorker.ready);
      // Visit the screens that call the API, so that there would be answers to cache.
      for (const path of params.visit) {
        await page.goto(`${api}${path}`);
        await page.waitForLoadState('networkidle');
      }
      const cdp = await context.newCDPSession(page);
      const { installabilityErrors } = await cdp.send('Page.getInstallabilityErrors');
      const manifest = await cdp.send('Page.getAppManifest');
      const cached = await page.evaluate(async () => {
        const urls = [];
        for (const key of await caches.keys()) {
          const cache = await caches.open(key);
          for (const request of await cache.keys()) urls.push(new URL(request.url).pathname);
        }
        return urls;
      });
      // Offline, the shell still starts (and says the server cannot be reached).
      await context.setOffline(true);
      await page.goto(`${api}/tasks`);
      const offline = (await page.waitForSelector('#root .alert, #root header', WAIT).then((e) => e.textContent())).trim();
      await context.setOffline(false);
      return {
        loadMs,
        javascript,
        installabilityErrors: installabilityErrors.map((e) => e.errorId),
        manifestErrors: manifest.errors,
        cached,
        offline,
        errors,
      };
    } finally {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    }
  },
};

try {
  const run = scenarios[scenario];
  if (!run) throw new Error(`no scenario ${scenario}`);
  console.log(JSON.stringify(await run()));
} catch (e) {
  // What the page showed when it went wrong, for the one reading the failure.
  const page = pages.at(-1);
  if (page) {
    const shot = `${process.env.TMPDIR || '/tmp'}/wharf-console-${scenario}-failure.png`;
    await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
    console.error(`screenshot: ${shot}\nurl: ${page.url()}\ntext: ${(await page.textContent('body').catch(() => '')).slice(0, 2000)}`);
  }
  throw e;
} finally {
  await browser.close();
}
