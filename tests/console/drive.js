// Drives the ainode console in headless Debian Chromium (playwright-core) and prints JSON results.
// usage: node drive.js ARGS_JSON   (base, admin/viewer user+password, ct/dx study, shots, profile)
// Every step records what the page showed; the pytest side asserts on it.
'use strict';
const path = require('path');
const args = JSON.parse(process.argv[2]);
const { base, admin, viewer, ctStudy, dxStudy, shots, profile } = args;
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
    const login = async (who, password) => {
      await page.fill('#user', who);
      await page.fill('#password', password);
      await Promise.all([page.waitForLoadState(), page.click('#login')]);
    };

    // not logged in: sent to the login page; a wrong password is refused, then the right one
    await page.goto(`${base}/console/studies`);
    out.redirected_to = new URL(page.url()).pathname;
    await login(admin.user, 'wrong password');
    out.wrong_password = await page.textContent('#login-error');
    await shot('console-login.png');
    await Promise.all([page.waitForURL('**/console/studies'), login(admin.user, admin.password)]);
    out.whoami = (await page.textContent('#whoami')).trim();
    out.studies = await page.$$eval('#studies td.mono a', (as) => as.map((a) => a.textContent.trim()));
    await shot('console-studies.png');

    // the dashboard: per-hour charts, queue, failures
    await page.goto(`${base}/console/dashboard`);
    out.charts = await page.$$eval('#charts .chart-card', (cs) => cs.map((c) => [c.id, c.dataset.total]));
    await shot('console-dashboard.png');

    // the study page explains the routing and shows the result previews
    await page.goto(`${base}/console/studies`);
    await page.click(`a[href="/console/studies/${ctStudy}"]`);
    await page.waitForSelector('#routing');
    out.verdicts = await page.$$eval('#routing tr.verdict', (rows) => rows.map((r) =>
      Array.from(r.querySelectorAll('td')).map((td) => td.textContent.trim())));
    out.routing_text = (await page.textContent('#routing')).replace(/\s+/g, ' ').trim();
    await page.waitForFunction(() => Array.from(document.querySelectorAll('#previews img'))
      .every((i) => i.complete && i.naturalWidth > 0));
    out.previews = await page.$$eval('#previews figure', (fs) => fs.map((f) => [
      f.className, f.querySelector('img').naturalWidth]));
    await page.locator('#previews').scrollIntoViewIfNeeded();
    await shot('console-study.png');

    // a failed model's step on the lifecycle line: state, reason and its retry button
    const failed = page.locator('#lifecycle li[data-model="no-such-model"]');
    out.failed_line = (await failed.textContent()).replace(/\s+/g, ' ').trim();
    out.failed_reason_link = await failed.locator('a').getAttribute('href');
    await Promise.all([page.waitForURL('**#jobs'), failed.locator('button.retry').click()]);
    out.failed_after_url = new URL(page.url()).pathname;

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

    // replay the saved text on the stored studies of the last day: the DX forward moved
    await page.fill('#since', '1d');
    // what the progress indicator showed when the form left (kept across the navigation)
    await page.evaluate(() => document.addEventListener('submit', () => {
      const busy = document.getElementById('busy');
      sessionStorage.setItem('busy', busy.hidden ? 'hidden' : document.getElementById('busy-text').textContent);
    }));
    await Promise.all([page.waitForLoadState(), page.click('#replay')]);
    out.replay_progress = await page.evaluate(() => sessionStorage.getItem('busy'));
    out.busy_after = await page.evaluate(() => document.getElementById('busy').hidden);
    out.replay_message = (await page.textContent('#message')).trim();
    out.replay_days = await page.$$eval('#replay-days tr', (rows) => rows.length - 2);
    out.replay_studies = (await page.textContent('#replay-studies')).replace(/\s+/g, ' ').trim();
    await page.locator('#replay-result').scrollIntoViewIfNeeded();
    await shot('console-rules-replay.png');

    // retry the dead delivery of the DX study
    await page.goto(`${base}/console/studies/${dxStudy}`);
    const row = page.locator('tr.delivery').first();
    out.delivery_before = (await row.locator('td').nth(3).textContent()).trim();
    await Promise.all([page.waitForLoadState(), row.locator('button.retry').click()]);
    out.delivery_after = (await page.locator('tr.delivery').first().locator('td').nth(3).textContent()).trim();
    out.after_url = new URL(page.url()).pathname;
    await shot('console-delivery-retry.png');

    await page.goto(`${base}/console/deliveries`);
    out.deliveries = await page.$$eval('#delivery-table tr.delivery', (rows) => rows.length);
    await shot('console-deliveries.png');

    await page.goto(`${base}/console/models`);
    out.models = await page.$$eval('.model h2', (hs) => hs.map((h) => h.textContent.replace(/\s+/g, ' ').trim()));
    await shot('console-models.png');

    // a viewer reads, but saving rules is refused with a 403 page
    await Promise.all([page.waitForURL('**/console/login'), page.click('header form button')]);
    await Promise.all([page.waitForURL('**/console/studies'), login(viewer.user, viewer.password)]);
    out.viewer_whoami = (await page.textContent('#whoami')).trim();
    await page.goto(`${base}/console/studies/${dxStudy}`);
    out.viewer_retry_buttons = await page.locator('button.retry').count();
    await page.goto(`${base}/console/rules`);
    out.viewer_save_note = (await page.textContent('#save-note')).trim();
    const [response] = await Promise.all([
      page.waitForResponse((r) => r.url().endsWith('/console/rules') && r.request().method() === 'POST'),
      page.click('#save'),
    ]);
    await page.waitForSelector('#forbidden');
    out.viewer_save_status = response.status();
    out.viewer_save_message = (await page.textContent('#forbidden-message')).replace(/\s+/g, ' ').trim();
    await shot('console-forbidden.png');
  } finally {
    await context.close();
  }
  process.stdout.write(JSON.stringify(out) + '\n');
})().catch((e) => { console.error(e && e.stack || String(e)); process.exit(1); });
