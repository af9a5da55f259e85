// A VM's serial console in the page: xterm.js on hostd's console WebSocket
// (/api/vms/{name}/console). The browser sends the session cookie with the
// handshake; hostd checks the Origin. Output arrives as binary messages;
// what is typed goes to the guest as it is typed.
import { Terminal } from '@xterm/xterm';
import '@xterm/xterm/css/xterm.css';

let current = null;

export function closeConsole() {
  if (!current) return;
  current.ws.close();
  current.term.dispose();
  current = null;
}

export function openConsole(container, title, name) {
  closeConsole();
  container.replaceChildren();
  title.textContent = `Console: ${name}`;
  const term = new Terminal({ rows: 20, cols: 90, cursorBlink: true, fontSize: 13, scrollback: 2000 });
  term.open(container);
  const ws = new WebSocket(`wss://${location.host}/api/vms/${encodeURIComponent(name)}/console`);
  ws.binaryType = 'arraybuffer';
  ws.onmessage = (ev) => term.write(typeof ev.data === 'string' ? ev.data : new Uint8Array(ev.data));
  ws.onclose = (ev) => term.write(`\r\n[console closed${ev.reason ? ': ' + ev.reason : ''}]\r\n`);
  term.onData((d) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(d);
  });
  term.focus();
  current = { term, ws };
}
