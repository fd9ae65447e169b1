// Drives the ainode console in headless Debian Chromium (playwright-core) and prints JSON results.
// usage: node drive.js BASE_URL TOKEN CT_STUDY DX_STUDY SHOTS_DIR
// Every step records what the page showed; the pytest side asserts on it.
'use strict';
const path = require('path');
const [base, token, ctStudy, dxStudy, shots, profile] = process.argv.slice(2);
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
    const shot = (name) => page.screenshot({ path: path.join(shots, name), fullPage: true });

    // not logged in: sent to the login page; a wrong token is refused
    await page.goto(`${base}/console/studies`);
    out.redirected_to = new URL(page.url()).pathname;
    await page.fill('#token', 'wrong');
    await Promise.all([page.waitForLoadState(), page.click('#login')]);
    out.wrong_token = await page.textContent('#login-error');
    await page.fill('#token', token);
    await Promise.all([page.waitForURL('**/console/studies'), page.click('#login')]);
    out.studies = await page.$$eval('#studies td.mono a', (as) => as.map((a) => a.textContent.trim()));
    await shot('console-studies.png');

    // the study page explains the routing
    await page.click(`a[href="/console/studies/${ctStudy}"]`);
    await page.waitForSelector('#routing');
    out.verdicts = await page.$$eval('#routing tr.verdict', (rows) => rows.map((r) =>
      Array.from(r.querySelectorAll('td')).map((td) => td.textContent.trim())));
    out.routing_text = (await page.textContent('#routing')).replace(/\s+/g, ' ').trim();
    await shot('console-study.png');

    // rules: an error shows inline with its line number; dry run; save
    await page.goto(`${base}/console/rules`);
    const good = await page.inputValue('#rules-text');
    const broken = good.replace('when: {Modality: DX}', 'wehn: {Modality: DX}');
    await page.fill('#rules-text', broken);
    await Promise.all([page.waitForLoadState(), page.click('#validate')]);
    out.inline_errors = await page.$$eval('#errors td.msg', (tds) => tds.map((t) => t.textContent.trim()));
    out.bad_line = await page.$$eval('#errors tr.bad td:not(.n):not(.msg)', (tds) => tds.map((t) => t.textContent));
    await shot('console-rules-error.png');

    const dxToArchive = good.replace('then: {send_to: silent}', 'then: {send_to: archive}');
    await page.fill('#rules-text', dxToArchive);
    await page.selectOption('#study', dxStudy);
    await Promise.all([page.waitForLoadState(), page.click('#dry-run')]);
    out.dry_run = (await page.textContent('#dry-run-result')).replace(/\s+/g, ' ').trim();
    await Promise.all([page.waitForLoadState(), page.click('#save')]);
    out.saved_message = await page.textContent('#message');
    out.diff = await page.textContent('#diff');
    out.changes = await page.$$eval('#changes tr', (rows) => rows.length - 1);
    await shot('console-rules-saved.png');

    // retry the dead delivery of the DX study
    await page.goto(`${base}/console/studies/${dxStudy}`);
    const row = page.locator('tr.delivery').first();
    out.delivery_before = (await row.locator('td').nth(3).textContent()).trim();
    await Promise.all([page.waitForLoadState(), row.locator('button.retry').click()]);
    out.delivery_after = (await page.locator('tr.delivery').first().locator('td').nth(3).textContent()).trim();
    out.after_url = new URL(page.url()).pathname;
    await shot('console-delivery-retry.png');

    await page.goto(`${base}/console/models`);
    out.models = await page.$$eval('.model h2', (hs) => hs.map((h) => h.textContent.replace(/\s+/g, ' ').trim()));
    await shot('console-models.png');
  } finally {
    await context.close();
  }
  process.stdout.write(JSON.stringify(out) + '\n');
})().catch((e) => { console.error(e && e.stack || String(e)); process.exit(1); });
