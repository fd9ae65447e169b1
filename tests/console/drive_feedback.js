// Drives the study page's feedback form in headless Debian Chromium (playwright-core).
// usage: node drive_feedback.js ARGS_JSON   (base, reviewer user+password, study, shots, profile)
// Logs in, modifies the first finding with a comment, accepts the first result; prints JSON.
'use strict';
const path = require('path');
const args = JSON.parse(process.argv[2]);
const { base, reviewer, study, shots, profile } = args;
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
    await page.fill('#user', reviewer.user);
    await page.fill('#password', reviewer.password);
    await Promise.all([page.waitForURL('**/console/studies'), page.click('#login')]);
    out.whoami = (await page.textContent('#whoami')).trim();

    await page.goto(`${base}/console/studies/${study}`);
    out.result_forms = await page.locator('#results form.feedback-form').count();
    out.finding_forms = await page.locator('#findings form.feedback-form').count();

    // modify the first finding, with a comment and what was changed
    const finding = page.locator('#findings tr.finding').first();
    out.finding = (await finding.locator('td').first().textContent()).trim();
    await finding.locator('select[name=verdict]').selectOption('modify');
    await finding.locator('input[name=comment]').fill('boundary drawn too wide');
    await finding.locator('input[name=modified]').fill('diameter 6 mm');
    await Promise.all([page.waitForLoadState(), finding.locator('button.send-feedback').click()]);
    out.after_finding_url = new URL(page.url()).pathname + new URL(page.url()).hash;
    out.finding_given = (await page.locator('#findings tr.finding').first()
      .locator('.feedback-given').first().textContent()).replace(/\s+/g, ' ').trim();

    // the verdict must be chosen: sending without one does not leave the page
    const result = page.locator('#results tr.result').first();
    out.result_sop = (await result.locator('td').nth(1).textContent()).trim();
    await result.locator('button.send-feedback').click();
    out.unchosen_valid = await result.locator('select[name=verdict]').evaluate((s) => s.checkValidity());
    out.unchosen_given = await result.locator('.feedback-given').count();
    // accept the first result object
    await result.locator('select[name=verdict]').selectOption('accept');
    await Promise.all([page.waitForLoadState(), result.locator('button.send-feedback').click()]);
    out.result_given = (await page.locator('#results tr.result').first()
      .locator('.feedback-given').first().textContent()).replace(/\s+/g, ' ').trim();
    await page.locator('#results').scrollIntoViewIfNeeded();
    await page.screenshot({ path: path.join(shots, 'console-feedback.png'), fullPage: true });
  } finally {
    await context.close();
  }
  process.stdout.write(JSON.stringify(out) + '\n');
})().catch((e) => { console.error(e && e.stack || String(e)); process.exit(1); });
