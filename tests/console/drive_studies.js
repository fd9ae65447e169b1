// Drives the console's studies list in headless Debian Chromium (playwright-core): log in, read the
// first page, go to the next page, search by Patient ID with the form, sort by study date.
// usage: node drive_studies.js ARGS_JSON   (base, user, password, shots, profile); prints JSON.
'use strict';
const path = require('path');
const args = JSON.parse(process.argv[2]);
const { base, user, password, shots, profile } = args;
const { chromium } = require('playwright-core');

(async () => {
  const out = {};
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1600, height: 900 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--disable-dev-shm-usage'],
  });
  const uids = (page) => page.$$eval('#studies td.mono a', (as) => as.map((a) => a.textContent.trim()));
  try {
    const page = await context.newPage();
    await page.goto(`${base}/console/login`);
    await page.fill('#user', user);
    await page.fill('#password', password);
    await Promise.all([page.waitForURL('**/console/studies'), page.click('#login')]);
    out.first_page = await uids(page);
    out.total = (await page.textContent('#total')).trim();
    await Promise.all([page.waitForLoadState(), page.click('#older')]);
    await page.waitForSelector('#newer');
    out.second_page = await uids(page);

    await page.fill('input[name="patient_id"]', 'PID-2');
    await Promise.all([page.waitForURL('**/console/studies?**'), page.click('#search-button')]);
    const url = new URL(page.url());
    out.search_url = url.pathname + url.search;
    out.searched = await uids(page);
    out.searched_ids = await page.$$eval('#studies td.patient-id', (tds) => tds.map((td) => td.textContent.trim()));
    await page.screenshot({ path: path.join(shots, 'console-studies-search.png'), fullPage: true });

    await Promise.all([page.waitForLoadState(), page.click('th a.sort:has-text("Study date")')]);
    await page.waitForURL('**sort=study_date**');
    // the first click sorts descending; a second one ascending
    await Promise.all([page.waitForLoadState(), page.click('th a.sort:has-text("Study date")')]);
    await page.waitForURL('**order=asc**');
    out.sorted_dates = await page.$$eval('#studies td.study-date', (tds) => tds.map((td) => td.textContent.trim()));
    process.stdout.write(JSON.stringify(out) + '\n');
  } finally {
    await context.close();
  }
})().catch((err) => {
  process.stderr.write(String(err && err.stack || err) + '\n');
  process.exit(1);
});
