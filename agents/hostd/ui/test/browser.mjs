// Drives the built host client in Debian's headless Chromium through
// playwright-core (no browser download), against hostd running with its
// in-memory fake VMkernel (--fake-vmkernel): log in, see the host, create a
// VM in the wizard, power it on, see its console and type into it, watch
// the performance charts grow, upload a file to the datastore, see it
// listed and download it again, power the VM off, clone it, reload (the
// cookie session stays), log out. Screenshots go to SCREENSHOT_DIR.
// Usage: node test/browser.mjs URL USER PASSWORD KERNEL_PATH SCREENSHOT_DIR
import { chromium } from 'playwright-core';
import { mkdirSync, readFileSync } from 'node:fs';

const STEPS = 15;

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
  await step('create a VM in the wizard', async () => {
    await page.fill('#new-name', 'ui01');
    await page.fill('#new-memory', '32');
    await page.fill('#new-kernel', kernel);
    await page.fill('#new-disk', '4');
    await page.selectOption('#new-network', 'VM Network');
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
  await step('power on', async () => {
    await page.click('tr[data-vm="ui01"] .power-on');
    await page.waitForFunction(() => document.querySelector('tr[data-vm="ui01"] .state')?.textContent === 'poweredOn');
  });
  await step('the console shows the guest and typing reaches it', async () => {
    await page.click('tr[data-vm="ui01"] .console-open');
    await page.waitForFunction(() => document.querySelector('#console .xterm-rows')?.textContent.includes('fake guest ui01: booted'));
    await page.click('#console .xterm');
    await page.keyboard.type('uname -a');
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => document.querySelector('#console .xterm-rows').textContent.includes('you typed: uname -a'));
    await page.screenshot({ path: `${shots}/console.png`, fullPage: true });
  });
  await step('the charts update', async () => {
    await page.click('tr[data-vm="ui01"] .monitor');
    const hostBefore = Number(await page.getAttribute('#host-chart', 'data-samples'));
    await page.waitForFunction((n) => Number(document.querySelector('#host-chart').dataset.samples) > n, hostBefore, { timeout: 20000 });
    await page.waitForFunction(() => Number(document.querySelector('#vm-chart').dataset.samples) >= 2, null, { timeout: 20000 });
    expect((await page.$$('#performance canvas')).length >= 2, 'two charts drawn');
    await page.waitForFunction(() => /nic0 \(VM Network\): received \d+ frames/.test(document.querySelector('#vm-net').textContent), null, { timeout: 20000 });
    await page.waitForFunction(() => /^disk0 \(ui01\.img\): \d+ reads \/ \d+ B, \d+ writes/.test(document.querySelector('#vm-disk').textContent), null, { timeout: 20000 });
    await page.locator('#performance').screenshot({ path: `${shots}/charts.png` });
  });
  await step('upload a file to the datastore and see it listed', async () => {
    await page.setInputFiles('#ds-upload-file', { name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('hello datastore\n') });
    await page.click('#ds-upload');
    await page.waitForSelector('tr[data-file="notes.txt"]');
    expect((await page.textContent('tr[data-file="notes.txt"]')).includes('16 B'), 'size shown');
    expect((await page.$('tr[data-dir="ui01"]')) !== null, 'the VM directory is listed');
    await page.locator('#datastore-browser').screenshot({ path: `${shots}/datastore.png` });
  });
  await step('download it again', async () => {
    const [dl] = await Promise.all([page.waitForEvent('download'), page.click('tr[data-file="notes.txt"] a.download')]);
    const text = readFileSync(await dl.path(), 'utf8');
    expect(text === 'hello datastore\n', `downloaded ${JSON.stringify(text)}`);
  });
  await step('power off ends the console', async () => {
    await page.click('tr[data-vm="ui01"] .power-off');
    await page.waitForFunction(() => document.querySelector('tr[data-vm="ui01"] .state')?.textContent === 'poweredOff');
    await page.waitForFunction(() => document.querySelector('#console .xterm-rows').textContent.includes('console closed'));
    await page.screenshot({ path: `${shots}/vms.png`, fullPage: true });
  });
  await step('clone the VM', async () => {
    await page.selectOption('#clone-source', 'ui01');
    await page.fill('#clone-name', 'ui01-copy');
    await page.click('#clone');
    await page.waitForSelector('tr[data-vm="ui01-copy"]', { timeout: 20000 });
  });
  await step('an administrator adds a user', async () => {
    await page.fill('#new-user-name', 'viewer');
    await page.fill('#new-user-password', 'viewer-pass-1');
    await page.selectOption('#new-user-role', 'ReadOnly');
    await page.click('#add-user');
    await page.waitForSelector('tr[data-user="viewer"]');
    expect((await page.textContent('tr[data-user="viewer"]')).includes('ReadOnly'), 'role shown');
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
process.exit(failed === 0 && passed === STEPS ? 0 : 1);
