// Drives the study page's retract form in headless Debian Chromium (playwright-core).
// usage: node drive_retract.js ARGS_JSON   (base, operator user+password, study, job, shots, profile)
// Logs in, tries to retract without a reason (the browser refuses), retracts ``job``; prints JSON.
'use strict';
const path = require('path');
const args = JSON.parse(process.argv[2]);
const { base, operator, study, job, shots, profile } = args;
const { chromium } = require('playwright-core');

(async () => {
  const out = {};
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--disable-dev-shm-usage'],
  });
  try {
    const page = await context.newPage();
    await page.goto(`${base}/console/login`);
    await page.fill('#user', operator.user);
    await page.fill('#password', operator.password);
    await Promise.all([page.waitForURL('**/console/studies'), page.click('#login')]);
    await page.goto(`${base}/console/studies/${study}`);
    const form = page.locator('form.retract-form');
    out.forms = await form.count();
    out.options = await form.locator('select[name=uid] option').allTextContents();
    await form.locator('select[name=uid]').selectOption(job);
    // no reason: the required field keeps the browser on the page
    await form.locator('button.retract').click();
    out.empty_valid = await form.locator('input[name=reason]').evaluate((i) => i.checkValidity());
    out.rows_before = await page.locator('tr.rejection').count();
    await form.locator('input[name=reason]').fill('model ran on the scout series');
    await Promise.all([page.waitForURL('**#rejections'), form.locator('button.retract').click()]);
    out.after_url = new URL(page.url()).pathname + new URL(page.url()).hash;
    out.rows_after = await page.locator('tr.rejection').count();
    out.row = (await page.locator('tr.rejection').first().textContent()).replace(/\s+/g, ' ').trim();
    await page.locator('#rejections').scrollIntoViewIfNeeded();
    await page.screenshot({ path: path.join(shots, 'console-retract.png'), fullPage: true });
  } finally {
    await context.close();
  }
  process.stdout.write(JSON.stringify(out) + '\n');
})().catch((e) => { console.error(e && e.stack || String(e)); process.exit(1); });
