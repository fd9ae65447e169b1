// Drives the console's studies list in headless Debian Chromium (playwright-core): log in, read the
// first page, go to the next page, search by Patient ID with the form, sort by study date; the
// viewer links and local times (the browser runs in Asia/Tokyo); search by accession; the page by
// keyboard only; a narrow (tablet) layout; then a viewer role, who sees no patient data.
// usage: node drive_studies.js ARGS_JSON   (base, user, password, viewer, accession, shots,
// profile); prints JSON.
'use strict';
const path = require('path');
const args = JSON.parse(process.argv[2]);
const { base, user, password, viewer, accession, shots, profile } = args;
const { chromium } = require('playwright-core');

(async () => {
  const out = {};
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1600, height: 900 },
    timezoneId: 'Asia/Tokyo',
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

    // the viewer link of each row, and times shown in the browser's timezone
    await page.goto(`${base}/console/studies`);
    out.viewer_link = await page.getAttribute('#studies tr.study a.viewer-link', 'href');
    out.time = await page.$eval('#studies tr.study time.ts', (t) => ({
      datetime: t.getAttribute('datetime'), text: t.textContent.trim(), title: t.title, zone: t.dataset.zone }));

    // search by accession number
    await page.fill('input[name="accession"]', accession);
    await Promise.all([page.waitForURL('**accession=**'), page.click('#search-button')]);
    out.by_accession = await uids(page);
    out.by_accession_cells = await page.$$eval('#studies td.accession', (tds) => tds.map((td) => td.textContent.trim()));

    // keyboard only: the first Tab reaches the skip link, Enter moves to the content, Tab reaches
    // the search form, Enter submits it; the focused element has a visible outline
    await page.goto(`${base}/console/studies`);
    await page.keyboard.press('Tab');
    out.first_tab = await page.evaluate(() => document.activeElement.textContent.trim());
    await page.keyboard.press('Enter');
    out.after_skip = await page.evaluate(() => document.activeElement.id);
    for (let i = 0; i < 40; i += 1) {
      await page.keyboard.press('Tab');
      if (await page.evaluate(() => document.activeElement.name === 'patient_id')) break;
    }
    out.keyboard_field = await page.evaluate(() => document.activeElement.name);
    out.keyboard_outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
    await page.keyboard.type('PID-1');
    await Promise.all([page.waitForURL('**patient_id=PID-1**'), page.keyboard.press('Enter')]);
    out.keyboard_search = await page.$$eval('#studies td.patient-id', (tds) => tds.map((td) => td.textContent.trim()));

    // a tablet in portrait: no horizontal scrolling of the page (wide tables scroll in place)
    await page.setViewportSize({ width: 768, height: 1024 });
    await page.goto(`${base}/console/studies`);
    out.narrow = await page.evaluate(() => ({
      page: document.documentElement.scrollWidth, view: window.innerWidth,
      search_visible: document.querySelector('#search-button').getBoundingClientRect().right <= window.innerWidth }));
    await page.screenshot({ path: path.join(shots, 'console-studies-narrow.png'), fullPage: false });
    await page.setViewportSize({ width: 1600, height: 900 });

    // a viewer: no patient data, no PHI search fields
    await Promise.all([page.waitForURL('**/console/login'), page.click('header form button')]);
    await page.fill('#user', viewer.user);
    await page.fill('#password', viewer.password);
    await Promise.all([page.waitForURL('**/console/studies'), page.click('#login')]);
    out.viewer_masked = (await page.textContent('#phi-masked')).trim();
    out.viewer_phi_inputs = await page.locator('input[name="patient_id"], input[name="accession"]').count();
    out.viewer_cells = await page.$$eval('#studies td.patient-id, #studies td.patient-name, #studies td.accession',
      (tds) => [...new Set(tds.map((td) => td.textContent.trim()))]);
    out.viewer_rows = (await uids(page)).length;
    process.stdout.write(JSON.stringify(out) + '\n');
  } finally {
    await context.close();
  }
})().catch((err) => {
  process.stderr.write(String(err && err.stack || err) + '\n');
  process.exit(1);
});
