// The datastore browser: list a directory, go into subdirectories, download
// a file (a plain link: the cookie session is enough for a GET), upload one
// (PUT with the CSRF token, progress from XMLHttpRequest), delete one.
import { el } from './dom.js';

function fileUrl(ds, path) {
  return `/api/datastores/${encodeURIComponent(ds)}/file?path=${encodeURIComponent(path)}`;
}

function fmtSize(n) {
  if (n >= 1 << 30) return `${(n / (1 << 30)).toFixed(1)} GiB`;
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(1)} KiB`;
  return `${n} B`;
}

export class DatastoreBrowser {
  constructor(root, { api, csrf, status }) {
    this.api = api;
    this.csrf = csrf;
    this.status = status;
    this.path = '';
    this.select = el('select', { id: 'ds-select' });
    this.select.onchange = () => {
      this.path = '';
      this.load();
    };
    this.where = el('span', { id: 'ds-path', class: 'path' });
    this.rows = el('tbody', { id: 'ds-files' });
    this.file = el('input', { id: 'ds-upload-file', type: 'file' });
    this.progress = el('progress', { id: 'ds-progress', max: '100', value: '0' });
    const upload = el('button', { id: 'ds-upload', text: 'Upload' });
    upload.onclick = () => this.upload();
    root.replaceChildren(
      el('h2', { text: 'Datastore browser' }),
      el('div', { class: 'toolbar' }, this.select, this.where),
      el('table', {}, el('thead', {}, el('tr', {}, ...['Name', 'Size', 'Modified', ''].map((t) => el('th', { text: t })))), this.rows),
      el('div', { class: 'toolbar' }, this.file, upload, this.progress),
    );
  }

  setDatastores(names) {
    const chosen = this.select.value;
    this.select.replaceChildren(...names.map((n) => el('option', { value: n, text: n })));
    if (chosen && names.includes(chosen)) this.select.value = chosen;
    else if (names.length) this.load();
  }

  async load() {
    const ds = this.select.value;
    if (!ds) return;
    try {
      const l = await this.api('GET', `/api/datastores/${encodeURIComponent(ds)}/browse?path=${encodeURIComponent(this.path)}`);
      this.where.textContent = `[${ds}] /${l.path}`;
      const rows = [];
      if (this.path) {
        const up = el('a', { href: '#', class: 'dir', text: '..' });
        up.onclick = (ev) => {
          ev.preventDefault();
          this.path = this.path.split('/').slice(0, -1).join('/');
          this.load();
        };
        rows.push(el('tr', { 'data-dir': '..' }, el('td', {}, up), el('td'), el('td'), el('td')));
      }
      for (const e of l.entries) {
        const full = l.path ? `${l.path}/${e.name}` : e.name;
        const when = e.modified ? new Date(e.modified * 1000).toISOString().slice(0, 19).replace('T', ' ') : '';
        if (e.kind === 'dir') {
          const a = el('a', { href: '#', class: 'dir', text: `${e.name}/` });
          a.onclick = (ev) => {
            ev.preventDefault();
            this.path = full;
            this.load();
          };
          rows.push(el('tr', { 'data-dir': e.name }, el('td', {}, a), el('td'), el('td', { text: when }), el('td')));
        } else {
          const dl = el('a', { class: 'download', href: fileUrl(ds, full), download: e.name, text: 'Download' });
          const del = el('button', { class: 'delete', text: 'Delete' });
          del.onclick = () => this.remove(full);
          rows.push(el('tr', { 'data-file': e.name }, el('td', { text: e.name }), el('td', { text: fmtSize(e.size_bytes) }), el('td', { text: when }), el('td', {}, dl, del)));
        }
      }
      this.rows.replaceChildren(...rows);
    } catch (e) {
      this.status.textContent = e.message;
    }
  }

  upload() {
    const f = this.file.files[0];
    const ds = this.select.value;
    if (!f || !ds) return;
    const path = this.path ? `${this.path}/${f.name}` : f.name;
    const x = new XMLHttpRequest();
    x.open('PUT', fileUrl(ds, path));
    x.setRequestHeader('X-CSRF-Token', this.csrf());
    x.setRequestHeader('Content-Type', 'application/octet-stream');
    x.upload.onprogress = (ev) => {
      if (ev.lengthComputable) this.progress.value = String(Math.floor((ev.loaded * 100) / ev.total));
    };
    x.onload = () => {
      let body = null;
      try {
        body = JSON.parse(x.responseText);
      } catch {}
      if (x.status >= 200 && x.status < 300) {
        this.progress.value = '100';
        this.status.textContent = `uploaded ${f.name} (${fmtSize(body.size_bytes)}) to ${ds}`;
        this.file.value = '';
        this.load();
      } else {
        this.status.textContent = body && body.message ? body.message : `upload failed: HTTP ${x.status}`;
      }
    };
    x.onerror = () => {
      this.status.textContent = 'upload failed: the connection broke';
    };
    x.send(f);
  }

  async remove(path) {
    try {
      await this.api('DELETE', fileUrl(this.select.value, path));
      this.status.textContent = `deleted ${path}`;
      this.load();
    } catch (e) {
      this.status.textContent = e.message;
    }
  }
}
