// Drives the built host client in Debian's headless Chromium through
// playwright-core (no browser download): log in, see the host, create a VM
// in the form, try to power it on, reload (the cookie session stays), log out.
// Usage: node test/browser.mjs URL USER PASSWORD KERNEL_PATH SCREENSHOT_DIR
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';

const [url, user, password, kernel, shots] = process.argv.slice(2);
if (!shots) {
  console.error('usage: browser.mjs URL USER PASSWORD KERNEL_PATH SCREENSHOT_DIR');
  process.exit(2);
}
mkdirSync(shots, { recursive: true });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync'],
});
let passed = 0;
let failed = 0;
async function step(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`test ${name} ... ok`);
  } catch (e) {
    failed++;
    console.log(`test ${name} ... FAIL ${e.message}`);
    throw e;
  }
}
function expect(cond, what) {
  if (!cond) throw new Error(what);
}
try {
  // The test host's certificate is hostd's own self-signed one.
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  await step('login page', async () => {
    await page.goto(url);
    await page.waitForSelector('#login-form');
  });
  await step('wrong password is refused', async () => {
    await page.fill('#username', user);
    await page.fill('#password', 'not-the-password');
    await page.click('#login');
    await page.waitForFunction(() => document.querySelector('#login-error').textContent.includes('wrong'));
  });
  await step('login shows the host', async () => {
    await page.fill('#password', password);
    await page.click('#login');
    await page.waitForFunction(() => document.querySelector('#host-summary')?.textContent.includes('Mantle'));
    expect((await page.textContent('#whoami')).includes('Administrator'), 'role shown');
    await page.screenshot({ path: `${shots}/host.png`, fullPage: true });
  });
  await step('create a VM in the form', async () => {
    await page.fill('#new-name', 'ui01');
    await page.fill('#new-memory', '32');
    await page.fill('#new-kernel', kernel);
    await page.click('#create');
    await page.waitForSelector('tr[data-vm="ui01"]');
    expect((await page.textContent('tr[data-vm="ui01"]')).includes('32 MiB'), 'memory shown');
  });
  await step('invalid VM names the field', async () => {
    await page.fill('#new-name', 'ui02');
    await page.fill('#new-memory', '99999999');
    await page.fill('#new-kernel', kernel);
    await page.click('#create');
    await page.waitForFunction(() => document.querySelector('#status').textContent.startsWith('memory_mib'));
    expect((await page.$('tr[data-vm="ui02"]')) === null, 'nothing created');
  });
  await step('power on reaches hostd', async () => {
    await page.click('tr[data-vm="ui01"] .power-on');
    // On a Linux test host there is no VMkernel: hostd says so.
    await page.waitForFunction(() => /VMkernel|task/.test(document.querySelector('#status').textContent));
    await page.screenshot({ path: `${shots}/vms.png`, fullPage: true });
  });
  await step('reload keeps the session', async () => {
    await page.reload();
    await page.waitForSelector('tr[data-vm="ui01"]');
  });
  await step('logout ends the session', async () => {
    await page.click('#logout');
    await page.waitForSelector('#login-form');
    const r = await page.request.get(`${url}api/vms`);
    expect(r.status() === 401, `after logout GET /api/vms is ${r.status()}`);
    await page.screenshot({ path: `${shots}/logged-out.png` });
  });
} catch (e) {
  console.error(e);
} finally {
  await browser.close();
}
console.log(`browser: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed === 8 ? 0 : 1);
