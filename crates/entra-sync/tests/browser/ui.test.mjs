// The admin UI end to end in Debian's headless Chromium, driven by playwright-core. Started by
// the Rust test `browser` (tests/it/browser.rs), which runs `entra-sync serve` against an
// emulated tenant and passes BASE_URL, TOKEN, EMULATOR_URL, the tenant's TENANT_ID, CLIENT_ID and
// CLIENT_SECRET (typed into the Set up form), SCREENSHOTS and CHROMIUM.
// Every page is checked at 1280 and 390 px (no sideways scrolling, a label on every input) and
// screenshotted; any browser console error fails the run.

import { mkdirSync } from 'node:fs';
import { chromium } from 'playwright-core';

const base = process.env.BASE_URL;
const token = process.env.TOKEN;
const emulator = process.env.EMULATOR_URL;
const screenshots = process.env.SCREENSHOTS;
const secret = process.env.CLIENT_SECRET;
mkdirSync(screenshots, { recursive: true });

const problems = [];
function fail(message) {
  throw new Error(message);
}

/** A call to the emulator's control API, which plays the tenant's admin. */
async function control(method, path, body) {
  const response = await fetch(`${emulator}/_emulator/${path}`, {
    method,
    headers: body ? { 'content-type': 'application/json' } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  if (!response.ok) fail(`${method} ${path}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** A status the next page is meant to answer with: Chromium logs any 4xx document as a console
 * error, and a refused form answers 422 on purpose. */
let expectedStatus = null;

function watch(page) {
  page.on('console', (message) => {
    if (expectedStatus && message.text().includes(`status of ${expectedStatus} `)) {
      expectedStatus = null;
      return;
    }
    if (message.type() === 'error') problems.push(`console error on ${page.url()}: ${message.text()}`);
  });
  page.on('pageerror', (error) => problems.push(`page error on ${page.url()}: ${error.message}`));
}

/** Screenshots the page at both widths and checks its layout and labels at each. */
async function check(page, name) {
  for (const width of [1280, 390]) {
    await page.setViewportSize({ width, height: 900 });
    await page.screenshot({ path: `${screenshots}/${name}-${width}.png`, fullPage: true });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    if (overflow > 1) fail(`${name} at ${width} px scrolls sideways by ${overflow} px`);
    const unlabelled = await page.evaluate(() =>
      [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
        .filter((input) => !(input.id && document.querySelector(`label[for="${input.id}"]`))
          && !input.getAttribute('aria-label') && !input.closest('label'))
        .map((input) => input.outerHTML));
    if (unlabelled.length) fail(`${name}: inputs without a label: ${unlabelled.join(', ')}`);
  }
  await page.setViewportSize({ width: 1280, height: 900 });
}

async function text(page, selector) {
  return (await page.locator(selector).first().textContent()).replace(/\s+/g, ' ').trim();
}

/** Sends a settings form with the button named `button`; the service must accept it (303) and
 * send the browser to `url`, else the test fails with the form's errors. Waits on the POST's
 * answer, not on the page, which still shows the errors of an earlier refusal until it goes. */
async function save(page, button, url) {
  const posted = page.waitForResponse((response) => response.request().method() === 'POST');
  await page.getByRole('button', { name: button }).click();
  const response = await posted;
  if (response.status() !== 303) {
    await page.waitForLoadState();
    fail(`the form was refused (${response.status()}): ${await text(page, 'main')}`);
  }
  await page.waitForURL(url);
}

/** Sync Now through its confirmation; waits for the live progress, then for the run's result. */
async function syncNow(page, name) {
  await page.goto(`${base}/ui/connections`);
  await page.getByRole('link', { name: 'Sync now' }).first().click();
  await page.waitForURL('**/ui/connections/contoso/sync');
  await check(page, `${name}-confirm`);
  await page.getByRole('button', { name: 'Start the sync' }).click();
  await page.waitForURL('**/ui/connections/contoso');
  await page.waitForSelector('#progress[data-state="running"] [data-test="pages-read"]', { timeout: 15_000 });
  await page.screenshot({ path: `${screenshots}/${name}-progress-1280.png`, fullPage: true });
  // Only htmx's polling can bring the result: the page is not reloaded.
  await page.waitForSelector('#progress[data-state="idle"] [data-test="last-status"]', { timeout: 60_000 });
  await check(page, `${name}-done`);
  return text(page, '#progress');
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-quic', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
const page = await context.newPage();
watch(page);
try {

  // Sign in with the API token.
  await page.goto(`${base}/ui/connections`);
  await page.waitForURL('**/ui/sign-in');
  await check(page, '01-sign-in');
  await page.getByLabel('API token or admin password').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL('**/ui/connections');
  await check(page, '02-connections');

  // Set up a connection to the emulated tenant through the form.
  const members = (await control('GET', 'users')).filter((user) => user.state === 'active').map((user) => user.id);
  const testers = await control('POST', 'groups', { displayName: 'Browser Testers', memberIds: members });
  await page.getByRole('link', { name: 'Set up a connection' }).click();
  await page.waitForURL('**/ui/new-connection');
  await check(page, '03-set-up');
  await page.getByLabel('Name', { exact: true }).fill('contoso');
  await page.getByLabel('Tenant ID').fill(process.env.TENANT_ID);
  await page.getByLabel('Client ID').fill(process.env.CLIENT_ID);
  await page.getByLabel('Client secret').fill(secret);
  await page.getByText('Endpoints (national clouds, test tenants)').click();
  await page.locator('#authority_url').fill(emulator);
  await page.locator('#graph_url').fill(emulator);
  // A daily run twelve hours away: after the first run, which a new connection gets at once,
  // every run during the test is a Sync Now.
  const later = new Date(Date.now() + 12 * 3600 * 1000);
  await page.getByLabel('Interval', { exact: true }).fill('1d');
  await page.locator('#start_at').fill(later.toISOString().slice(11, 16));
  await save(page, 'Set up the connection', '**/ui/connections/contoso');
  if ((await page.content()).includes(secret)) fail('the connection page shows the client secret');
  await check(page, '04-connection-set-up');
  // The scheduler starts the first run at once; its counts show on the page when it is over.
  for (let tries = 0; !(await page.locator('#progress[data-state="idle"] [data-test="last-status"]').count()); tries++) {
    if (tries === 60) fail('the first run of the new connection did not finish');
    await page.waitForTimeout(1_000);
    await page.reload();
  }
  const first = await text(page, '#progress');
  if (!first.includes('succeeded') || !/created [1-9]/.test(first)) fail(`the first run: ${first}`);
  await check(page, '04-first-run');

  // A hire in Entra, in the group the scope is narrowed to on the Edit form, with an option set.
  const ada = await control('POST', 'users', {
    displayName: 'Ada Browser', givenName: 'Ada', surname: 'Browser', jobTitle: 'Tester',
    department: 'Browser Testing', userPrincipalName: 'ada.browser@contoso.example', mail: 'ada.browser@contoso.example',
  });
  await control('POST', `groups/${testers.id}/members`, { id: ada.id });
  await page.goto(`${base}/ui/connections/contoso`);
  await page.getByRole('link', { name: 'Edit' }).click();
  await page.waitForURL('**/ui/connections/contoso/edit');
  if (await page.getByLabel('Client secret').inputValue() !== '') fail('the edit form shows the secret');
  await page.getByLabel('Search the groups').fill('browser');
  if (await page.locator('fieldset:has(#scope_groups_search) [data-picker-value]:visible').count() !== 1) fail('the group search does not narrow the choices');
  await page.getByRole('checkbox', { name: /^Browser Testers/ }).check();
  await page.locator('#on_out_of_scope').selectOption('disable');
  await check(page, '05-edit');
  // A schedule the service refuses: the form comes back with the message and what was chosen.
  await page.getByLabel('By a cron expression').check();
  await page.getByLabel('Cron expression (UTC)').fill('not a cron');
  expectedStatus = 422;
  const refused = page.waitForResponse((response) => response.request().method() === 'POST');
  await page.getByRole('button', { name: 'Save the connection' }).click();
  if ((await refused).status() !== 422) fail('the refused edit did not answer 422');
  await page.waitForLoadState();
  await page.waitForSelector('[data-test="form-errors"]');
  const refusal = await text(page, '[data-test="form-errors"]');
  if (!refusal.includes('nor a valid cron expression')) fail(`the refused edit: ${refusal}`);
  if (!(await page.getByRole('checkbox', { name: /^Browser Testers/ }).isChecked())) fail('the refused edit lost the group');
  await check(page, '05-edit-refused');
  await page.getByLabel('At an interval').check();
  await save(page, 'Save the connection', '**/ui/connections/contoso');
  const scopeSettings = await text(page, 'section.card:has(h2:text-is("Scope"))');
  if (!scopeSettings.includes('Browser Testers')) fail(`the saved scope: ${scopeSettings}`);
  const second = await syncNow(page, '05-sync-scoped');
  if (!second.includes('succeeded') || !second.includes('created 1')) fail(`Sync Now after the edit: ${second}`);

  // Her page says why she is in scope.
  await page.goto(`${base}/ui/users`);
  await page.getByLabel('Search by name, email or UPN').fill('Ada Browser');
  await page.getByRole('button', { name: 'Search' }).click();
  await page.waitForURL('**/ui/users?**');
  await check(page, '06-users');
  await page.getByRole('link', { name: 'Ada Browser' }).click();
  await page.waitForURL('**/ui/users/*');
  const adaPage = page.url();
  await check(page, '06-user');
  const scope = await text(page, '[data-test="scope"]');
  if (!scope.startsWith('In scope')) fail(`Ada's scope: ${scope}`);

  // Sync this user: info only, its run linked.
  await page.getByLabel('Info: read it from Microsoft Entra and apply it').check();
  await page.getByRole('button', { name: 'Sync this user' }).click();
  await page.waitForSelector('[data-test="one-sync-result"]');
  const one = await text(page, '[data-test="one-sync-result"]');
  if (!one.includes('Sync (info) succeeded')) fail(`Sync this user: ${one}`);
  if (await page.locator('[data-test="one-sync-result"] a[href^="/ui/runs/"]').count() !== 1) fail('no link to the run');
  await check(page, '06-user-synced');

  // Disabled in Entra: after a sync her badge says so.
  await control('POST', `users/${ada.id}/disable`);
  const disabled = await syncNow(page, '06-sync-disable');
  if (!disabled.includes('disabled 1')) fail(`Sync Now after the disable: ${disabled}`);
  await page.goto(adaPage);
  const badge = await text(page, '[data-test="user-status"]');
  if (badge !== 'Disabled in Microsoft') fail(`Ada's badge: ${badge}`);
  await check(page, '07-user-disabled');

  // A quarter of the tenant soft-deleted in Entra trips the deprovision guard; approve its plan.
  const active = (await control('GET', 'users')).filter((user) => user.state === 'active' && user.id !== ada.id);
  for (const user of active.slice(0, Math.ceil(active.length / 4))) {
    await control('POST', `users/${user.id}/soft-delete`);
  }
  const third = await syncNow(page, '08-sync-guard');
  if (!third.includes('blocked')) fail(`Sync Now after the soft-deletes: ${third}`);
  await page.locator('#progress a[href^="/ui/runs/"]').first().click();
  await page.waitForURL('**/ui/runs/*');
  const plan = await text(page, '[data-test="plan"]');
  if (!plan.includes('awaiting approval')) fail(`the blocked run's plan: ${plan}`);
  await check(page, '09-run-blocked');
  await page.getByRole('button', { name: 'Approve and apply' }).click();
  await page.waitForSelector('[data-test="run-status"]:text-is("approved")');
  await check(page, '10-run-approved');

  // The rest of the pages.
  await page.goto(`${base}/ui/runs`);
  if (await page.locator('svg.chart rect').count() === 0) fail('the history chart has no bars');
  await check(page, '11-history');
  await page.getByLabel('Status').selectOption('approved');
  await page.getByRole('button', { name: 'Filter' }).click();
  await page.waitForURL('**/ui/runs?**');
  if (await page.locator('tbody tr').count() !== 1) fail('the approved filter does not show one run');
  await check(page, '12-history-approved');
  await page.goto(`${base}/ui/groups`);
  await check(page, '13-groups');
  await page.locator('tbody a').first().click();
  await page.waitForURL('**/ui/groups/*');
  await check(page, '14-group');
  await page.goto(`${base}/ui/departments`);
  await check(page, '15-departments');
  await page.getByRole('link', { name: 'Browser Testing' }).click();
  await page.waitForURL('**/ui/departments/*');
  await check(page, '16-department');
  await page.goto(`${base}/ui/connections/contoso`);
  await page.getByText('Values in Microsoft Entra, as the last applied sync read them').click();
  if (!(await text(page, '[data-test="tenant-values"]')).includes('Browser Testing')) fail('the tenant values lack a department');
  await check(page, '17-connection');
  await page.getByRole('button', { name: 'Test connection' }).click();
  await page.waitForSelector('.notice.ok');
  await check(page, '18-connection-tested');
  await page.goto(`${base}/ui/connections`);
  const health = await text(page, '[data-test="health"]');
  if (!health.startsWith('Token and permissions OK')) fail(`the connection's health: ${health}`);
  await check(page, '18-connections-health');

  // Disable and Enable, each confirmed; Delete asks first too.
  await page.goto(`${base}/ui/connections/contoso`);
  await page.getByRole('link', { name: 'Disable' }).click();
  await page.waitForURL('**/ui/connections/contoso/change?to=disable');
  await check(page, '20-disable-confirm');
  await page.getByRole('button', { name: 'Disable the connection' }).click();
  await page.waitForURL('**/ui/connections/contoso');
  if (!(await text(page, '[data-test="connection-status"]')).startsWith('Disabled')) fail('the connection is not disabled');
  await page.getByRole('link', { name: 'Enable' }).click();
  await page.getByRole('button', { name: 'Enable the connection' }).click();
  await page.waitForURL('**/ui/connections/contoso');
  if (await text(page, '[data-test="connection-status"]') !== 'Enabled') fail('the connection is not enabled again');
  await page.getByRole('link', { name: 'Delete' }).click();
  await page.waitForURL('**/ui/connections/contoso/change?to=delete');
  await check(page, '21-delete-confirm');
  await page.getByRole('link', { name: 'Cancel' }).click();
  await page.waitForURL('**/ui/connections/contoso');

  // Without JavaScript every page but the live progress works the same.
  const plain = await browser.newContext({ javaScriptEnabled: false, viewport: { width: 1280, height: 900 } });
  const noScript = await plain.newPage();
  watch(noScript);
  await noScript.goto(`${base}/ui/sign-in`);
  await noScript.getByLabel('API token or admin password').fill(token);
  await noScript.getByRole('button', { name: 'Sign in' }).click();
  await noScript.waitForURL('**/ui/connections');
  for (const path of ['/ui/connections', '/ui/connections/contoso', '/ui/connections/contoso/sync',
    '/ui/new-connection', '/ui/connections/contoso/edit', '/ui/connections/contoso/change?to=delete', '/ui/runs',
    '/ui/runs/1', '/ui/users', '/ui/groups', '/ui/departments']) {
    const response = await noScript.goto(`${base}${path}`);
    if (response.status() !== 200 || !(await text(noScript, 'main h1')).length) fail(`${path} without JavaScript`);
  }
  await noScript.goto(adaPage);
  if (!(await text(noScript, '[data-test="scope"]')).length) fail('the user page without JavaScript');
  await check(noScript, '19-user-without-javascript');
  // The Edit form saves without JavaScript too.
  await noScript.goto(`${base}/ui/connections/contoso/edit`);
  await save(noScript, 'Save the connection', '**/ui/connections/contoso');
  if (!(await noScript.content()).includes('Browser Testers')) fail('a save without JavaScript lost the scope');
  await noScript.getByRole('button', { name: 'Sign out' }).click();
  await noScript.waitForURL('**/ui/sign-in');

  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.waitForURL('**/ui/sign-in');
} catch (error) {
  // Where the browser was says more than a timeout does.
  const main = await page.locator('main').first().textContent({ timeout: 1_000 }).catch(() => '(no page)');
  console.error(`failed at ${page.url()}: ${main.replace(/\s+/g, ' ').trim().slice(0, 2_000)}`);
  await page.screenshot({ path: `${screenshots}/failure.png`, fullPage: true }).catch(() => {});
  if (problems.length) console.error(problems.join('\n'));
  throw error;
} finally {
  await browser.close();
}
if (problems.length) fail(problems.join('\n'));
console.log(`admin UI checked in Chromium; screenshots in ${screenshots}`);
