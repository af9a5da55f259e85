// The Mantle web host client: a single page on hostd's REST API.
// The browser session is the HttpOnly `hostd_session` cookie; every change
// carries the session's CSRF token in X-CSRF-Token. All data reaches the page
// through textContent, never as HTML.
import './style.css';
import { el } from './dom.js';
import { openConsole, closeConsole } from './console.js';
import { HostChart, VmChart } from './charts.js';
import { DatastoreBrowser } from './datastore.js';

const app = document.getElementById('app');
let csrf = null;
let timer = null;

class ApiError extends Error {
  constructor(status, body) {
    super(body && body.message ? body.message : `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && csrf) headers['X-CSRF-Token'] = csrf;
  const r = await fetch(path, {
    method,
    headers,
    credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  const data = text ? JSON.parse(text) : null;
  if (r.status === 401 && path !== '/api/session') {
    showLogin('Your session ended; log in again.');
    throw new ApiError(r.status, data);
  }
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}

function showLogin(message) {
  closeConsole();
  if (timer) clearInterval(timer);
  timer = null;
  csrf = null;
  const err = el('p', { id: 'login-error', class: 'error', text: message || '' });
  const form = el(
    'form',
    { id: 'login-form', class: 'card login' },
    el('h1', { text: 'Mantle Host Client' }),
    el('label', { text: 'User name' }, el('input', { id: 'username', name: 'username', autocomplete: 'username', required: '' })),
    el('label', { text: 'Password' }, el('input', { id: 'password', name: 'password', type: 'password', autocomplete: 'current-password', required: '' })),
    el('button', { id: 'login', type: 'submit', text: 'Log in' }),
    err,
  );
  form.onsubmit = async (ev) => {
    ev.preventDefault();
    err.textContent = '';
    try {
      const s = await api('POST', '/api/session', {
        username: form.username.value,
        password: form.password.value,
      });
      csrf = s.csrf_token;
      showHost(s);
    } catch (e) {
      err.textContent = e.message;
    }
  };
  app.replaceChildren(form);
}

function fmtUptime(s) {
  if (s == null) return '?';
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  return `${d}d ${h}h ${m}m`;
}

function showHost(session) {
  const status = el('p', { id: 'status', class: 'status' });
  const summary = el('dl', { id: 'host-summary', class: 'summary' });
  const vms = el('tbody', { id: 'vm-rows' });
  const tasks = el('ul', { id: 'tasks', class: 'log' });
  const events = el('ul', { id: 'events', class: 'log' });
  const datastore = el('select', { id: 'new-datastore', name: 'datastore' });
  const network = el('select', { id: 'new-network', name: 'network' });
  const consoleTitle = el('h2', { text: 'Console' });
  const consoleBox = el('div', { id: 'console', class: 'console' });
  const consoleClose = el('button', { id: 'console-close', text: 'Close console' });
  consoleClose.onclick = () => {
    closeConsole();
    consoleSection.hidden = true;
  };
  const consoleSection = el('section', { id: 'console-section', class: 'card' }, consoleTitle, consoleBox, consoleClose);
  consoleSection.hidden = true;
  const hostChartBox = el('div', { id: 'host-chart', class: 'chart', 'data-samples': '0' });
  const vmChartBox = el('div', { id: 'vm-chart', class: 'chart', 'data-samples': '0' });
  const vmChartTitle = el('h3', { id: 'vm-chart-title', text: 'VM: choose one with "Monitor"' });
  const vmNet = el('p', { id: 'vm-net' });
  const vmDisk = el('p', { id: 'vm-disk' });
  const perf = el('section', { id: 'performance', class: 'card' }, el('h2', { text: 'Performance' }), el('h3', { text: 'Host' }), hostChartBox, vmChartTitle, vmChartBox, vmNet, vmDisk);
  const dsSection = el('section', { id: 'datastore-browser', class: 'card' });
  const cloneSource = el('select', { id: 'clone-source' });
  const cloneForm = el(
    'form',
    { id: 'clone-vm', class: 'card' },
    el('h2', { text: 'Clone a powered-off VM' }),
    el('label', { text: 'Source' }, cloneSource),
    el('label', { text: 'New name' }, el('input', { id: 'clone-name', name: 'name', required: '' })),
    el('label', { class: 'check', text: 'Linked (qcow2 disks)' }, el('input', { id: 'clone-linked', name: 'linked', type: 'checkbox' })),
    el('button', { id: 'clone', type: 'submit', text: 'Clone' }),
  );
  let monitored = null;
  const isAdmin = session.role === 'Administrator';
  const userRows = el('tbody', { id: 'user-rows' });
  const userForm = el(
    'form',
    { id: 'new-user', class: 'inline' },
    el('label', { text: 'User name' }, el('input', { id: 'new-user-name', name: 'name', required: '' })),
    el('label', { text: 'Password' }, el('input', { id: 'new-user-password', name: 'password', type: 'password', autocomplete: 'new-password', required: '' })),
    el('label', { text: 'Role' }, el('select', { id: 'new-user-role', name: 'role' }, ...['ReadOnly', 'Operator', 'Administrator'].map((r) => el('option', { value: r, text: r })))),
    el('button', { id: 'add-user', type: 'submit', text: 'Add user' }),
  );
  const usersSection = el(
    'section',
    { id: 'users', class: 'card' },
    el('h2', { text: 'Users and roles' }),
    el('table', {}, el('thead', {}, el('tr', {}, ...['User', 'Role', 'Locked', ''].map((t) => el('th', { text: t })))), userRows),
    userForm,
  );
  usersSection.hidden = !isAdmin;
  userForm.onsubmit = async (ev) => {
    ev.preventDefault();
    try {
      await api('POST', '/api/users', { name: userForm.name.value, password: userForm.password.value, role: userForm.role.value });
      status.textContent = `user ${userForm.name.value} added`;
      userForm.reset();
      refreshUsers();
    } catch (e) {
      status.textContent = e.body && e.body.field ? `${e.body.field}: ${e.message}` : e.message;
    }
  };
  async function refreshUsers() {
    if (!isAdmin) return;
    try {
      const users = await api('GET', '/api/users');
      userRows.replaceChildren(
        ...users.map((u) => {
          const del = el('button', { class: 'delete-user', text: 'Remove' });
          del.onclick = async () => {
            try {
              await api('DELETE', `/api/users/${encodeURIComponent(u.name)}`);
              refreshUsers();
            } catch (e) {
              status.textContent = e.message;
            }
          };
          return el('tr', { 'data-user': u.name }, el('td', { text: u.name }), el('td', { text: u.role }), el('td', { text: u.locked_secs ? `${u.locked_secs} s` : '' }), el('td', {}, u.name === session.user ? '' : del));
        }),
      );
    } catch (e) {
      status.textContent = e.message;
    }
  }
  const create = el(
    'form',
    { id: 'create-vm', class: 'card' },
    el('h2', { text: 'New virtual machine' }),
    el('label', { text: 'Name' }, el('input', { id: 'new-name', name: 'name', required: '' })),
    el('label', { text: 'vCPUs' }, el('input', { id: 'new-vcpus', name: 'vcpus', type: 'number', min: '1', value: '1' })),
    el('label', { text: 'Memory (MiB)' }, el('input', { id: 'new-memory', name: 'memory_mib', type: 'number', min: '4', value: '64' })),
    el('label', { text: 'Kernel (path on the host)' }, el('input', { id: 'new-kernel', name: 'kernel', value: '/usr/lib/mantle/guests/hello.bin' })),
    el('label', { text: 'Command line' }, el('input', { id: 'new-cmdline', name: 'cmdline' })),
    el('label', { text: 'Datastore' }, datastore),
    el('label', { text: 'Initrd / module (path, optional)' }, el('input', { id: 'new-initrd', name: 'initrd' })),
    el('label', { text: 'New disk (MiB, 0: none)' }, el('input', { id: 'new-disk', name: 'disk_mib', type: 'number', min: '0', value: '0' })),
    el('label', { text: 'Network' }, network),
    el('label', { text: 'CPU shares' }, el('input', { id: 'new-shares', name: 'shares', type: 'number', min: '1', value: '1000' })),
    el('label', { text: 'CPU reservation (% of a CPU)' }, el('input', { id: 'new-reservation', name: 'reservation_pct', type: 'number', min: '0', value: '0' })),
    el('label', { text: 'CPU limit (%, empty: none)' }, el('input', { id: 'new-limit', name: 'limit_pct', type: 'number', min: '1' })),
    el('button', { id: 'create', type: 'submit', text: 'Create' }),
  );
  create.onsubmit = async (ev) => {
    ev.preventDefault();
    try {
      const diskMib = Number(create.disk_mib.value);
      await api('POST', '/api/vms', {
        name: create.name.value,
        vcpus: Number(create.vcpus.value),
        memory_mib: Number(create.memory_mib.value),
        kernel: create.kernel.value,
        cmdline: create.cmdline.value,
        datastore: datastore.value || undefined,
        disks: diskMib > 0 ? [{ file: `${create.name.value}.img`, size_mib: diskMib }] : [],
        modules: create.initrd.value ? [{ path: create.initrd.value, args: '' }] : [],
        shares: Number(create.shares.value),
        reservation_pct: Number(create.reservation_pct.value),
        limit_pct: create.limit_pct.value ? Number(create.limit_pct.value) : null,
        nics: network.value ? [{ network: network.value }] : [],
      });
      status.textContent = `VM ${create.name.value} created`;
      create.reset();
      refresh();
    } catch (e) {
      status.textContent = e.body && e.body.field ? `${e.body.field}: ${e.message}` : e.message;
    }
  };
  const logout = el('button', { id: 'logout', text: 'Log out' });
  logout.onclick = async () => {
    try {
      await api('DELETE', '/api/session');
    } finally {
      showLogin('Logged out.');
    }
  };
  app.replaceChildren(
    el('header', {}, el('h1', { text: 'Mantle' }), el('span', { id: 'whoami', text: `${session.user} (${session.role})` }), logout),
    status,
    el('section', { class: 'card' }, el('h2', { text: 'Host' }), summary),
    el(
      'section',
      { class: 'card' },
      el('h2', { text: 'Virtual machines' }),
      el('table', { id: 'vms' }, el('thead', {}, el('tr', {}, ...['Name', 'State', 'vCPUs', 'Memory', 'Datastore', ''].map((t) => el('th', { text: t })))), vms),
    ),
    consoleSection,
    create,
    cloneForm,
    perf,
    dsSection,
    usersSection,
    el('section', { class: 'card' }, el('h2', { text: 'Recent tasks' }), tasks),
    el('section', { class: 'card' }, el('h2', { text: 'Events' }), events),
  );

  const hostChart = new HostChart(hostChartBox);
  const vmChart = new VmChart(vmChartBox);
  const browser = new DatastoreBrowser(dsSection, { api, csrf: () => csrf, status });
  cloneForm.onsubmit = async (ev) => {
    ev.preventDefault();
    try {
      const t = await api('POST', `/api/vms/${encodeURIComponent(cloneSource.value)}/clone`, {
        name: cloneForm.name.value,
        linked: cloneForm.linked.checked,
      });
      status.textContent = `${t.kind} of ${cloneSource.value}: task ${t.id} started`;
      cloneForm.reset();
      refresh();
    } catch (e) {
      status.textContent = e.body && e.body.field ? `${e.body.field}: ${e.message}` : e.message;
    }
  };

  async function power(name, action) {
    try {
      const t = await api('POST', `/api/vms/${encodeURIComponent(name)}/power`, { action });
      status.textContent = `${t.kind} of ${name}: task ${t.id} started`;
      refresh();
    } catch (e) {
      status.textContent = e.message;
    }
  }

  async function refresh() {
    try {
      const [host, list, taskList, eventList, hostStats] = await Promise.all([
        api('GET', '/api/host'),
        api('GET', '/api/vms'),
        api('GET', '/api/tasks'),
        api('GET', '/api/events?limit=1000'),
        api('GET', '/api/host/stats'),
      ]);
      hostChart.update(hostStats);
      const mv = monitored && list.find((v) => v.name === monitored);
      if (mv && (mv.power_state === 'poweredOn' || mv.power_state === 'paused')) {
        const vmStats = await api('GET', `/api/vms/${encodeURIComponent(monitored)}/stats`);
        vmChart.update(vmStats);
        // Each NIC's traffic on the virtual switch, as the guest sees it.
        vmNet.textContent = (vmStats.nics || [])
          .map((n) => `${n.nic} (${n.port_group}): received ${n.rx_frames} frames / ${n.rx_bytes} B, sent ${n.tx_frames} frames / ${n.tx_bytes} B, dropped ${n.dropped}`)
          .join(' · ');
        // Each disk's I/O as the VMkernel's device model counted it.
        vmDisk.textContent = (vmStats.disks || [])
          .map((d) => `${d.disk} (${d.file}): ${d.reads} reads / ${d.read_bytes} B, ${d.writes} writes / ${d.written_bytes} B, ${d.flushes} flushes, ${d.errors} errors`)
          .join(' · ');
      }
      const chosenNet = network.value;
      network.replaceChildren(el('option', { value: '', text: '(no NIC)' }), ...host.port_groups.map((p) => el('option', { value: p, text: p })));
      if (chosenNet) network.value = chosenNet;
      const chosenSrc = cloneSource.value;
      cloneSource.replaceChildren(...list.map((v) => el('option', { value: v.name, text: v.name })));
      if (chosenSrc) cloneSource.value = chosenSrc;
      browser.setDatastores(host.datastores.map((d) => d.name));
      const rows = [
        ['Version', `${host.product} ${host.version}`],
        ['Host name', host.hostname],
        ['CPUs', String(host.cpus)],
        ['Memory', `${host.memory_mib} MiB`],
        ['Uptime', fmtUptime(host.uptime_secs)],
        ['VMkernel API', host.vmkernel_api_version == null ? 'unavailable' : String(host.vmkernel_api_version)],
        ...host.datastores.map((d) => [
          `Datastore ${d.name}`,
          d.capacity_bytes ? `${((d.capacity_bytes - d.free_bytes) / (1 << 30)).toFixed(1)} of ${(d.capacity_bytes / (1 << 30)).toFixed(1)} GiB used` : d.path,
        ]),
        ['Port groups', host.port_groups.join(', ')],
        ['Config store', host.config_store.persistent ? host.config_store.path : `${host.config_store.path} (in memory: attach a datastore to keep accounts and inventory across reboots)`],
      ];
      summary.replaceChildren(...rows.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', { text: v })]));
      const chosen = datastore.value;
      datastore.replaceChildren(...host.datastores.map((d) => el('option', { value: d.name, text: d.name })));
      if (chosen) datastore.value = chosen;
      vms.replaceChildren(
        ...list.map((vm) => {
          const c = vm.config || {};
          const on = el('button', { class: 'power-on', text: 'Power on' });
          on.onclick = () => power(vm.name, 'on');
          const off = el('button', { class: 'power-off', text: 'Power off' });
          off.onclick = () => power(vm.name, 'off');
          const shut = el('button', { class: 'shutdown', text: 'Shut down' });
          shut.onclick = () => power(vm.name, 'shutdown');
          const con = el('button', { class: 'console-open', text: 'Console' });
          con.onclick = () => {
            consoleSection.hidden = false;
            openConsole(consoleBox, consoleTitle, vm.name);
          };
          const mon = el('button', { class: 'monitor', text: 'Monitor' });
          mon.onclick = () => {
            monitored = vm.name;
            vmChartTitle.textContent = `VM: ${vm.name}`;
            vmChart.clear();
            refresh();
          };
          return el(
            'tr',
            { 'data-vm': vm.name },
            el('td', { text: vm.name }),
            el('td', { class: 'state', text: vm.power_state }),
            el('td', { text: String(c.vcpus ?? '?') }),
            el('td', { text: c.memory_mib != null ? `${c.memory_mib} MiB` : '?' }),
            el('td', { text: vm.datastore || '' }),
            el('td', {}, on, off, shut, con, mon),
          );
        }),
      );
      tasks.replaceChildren(
        ...taskList.slice(0, 10).map((t) => el('li', { text: `#${t.id} ${t.kind} ${t.target} by ${t.user}: ${t.state} ${t.progress}%${t.error ? ' — ' + t.error : ''}` })),
      );
      events.replaceChildren(
        ...eventList.slice(-15).reverse().map((e) => el('li', { text: `${new Date(e.time * 1000).toISOString()} ${e.message}` })),
      );
    } catch (e) {
      if (e.status !== 401) status.textContent = e.message;
    }
  }

  refresh();
  refreshUsers();
  timer = setInterval(refresh, 2000);
}

// A reload keeps the cookie session: ask for it (and its CSRF token).
(async () => {
  try {
    const s = await api('GET', '/api/session');
    csrf = s.csrf_token;
    showHost(s);
  } catch {
    showLogin();
  }
})();
