//! Terminals: the console tty. Input arrives byte by byte from the UART
//! interrupt (`Tty::input`), output leaves through a `TtySink`. Reads never
//! block: EAGAIN means "wait for `poll` readiness (and, in non-canonical
//! mode with VTIME, for `read_timeout`) and retry".

mod ldisc;
pub mod termios;

use alloc::sync::Arc;
use alloc::vec::Vec;
use spin::Mutex;

use self::ldisc::{Ldisc, opost};
use self::termios::*;
use super::types::{PollEvents, UserMemory};
use super::{Errno, Result};

pub use self::ldisc::{SIGINT, SIGQUIT, SIGTSTP};

/// Where terminal output goes (the UART driver).
pub trait TtySink: Send + Sync {
    fn write(&self, bytes: &[u8]);
}

/// A signal the caller must send to a process group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TtySignal {
    pub signal: u32,
    /// The foreground process group; None when none was set.
    pub pgrp: Option<u32>,
}

pub struct Tty {
    sink: Arc<dyn TtySink>,
    state: Mutex<State>,
}

struct State {
    ldisc: Ldisc,
    winsize: Winsize,
    pgrp: u32,
    session: u32,
}

impl Tty {
    pub fn new(sink: Arc<dyn TtySink>) -> Arc<Tty> {
        Arc::new(Tty {
            sink,
            state: Mutex::new(State {
                ldisc: Ldisc::default(),
                winsize: Winsize::default(),
                pgrp: 0,
                session: 0,
            }),
        })
    }

    /// One byte from the keyboard/UART. Echo is written here; a returned
    /// signal is for the caller to deliver.
    pub fn input(&self, byte: u8) -> Option<TtySignal> {
        let mut echo = Vec::new();
        let (sig, out) = {
            let mut s = self.state.lock();
            let sig = s.ldisc.input(byte, &mut echo);
            let mut out = Vec::with_capacity(echo.len());
            opost(&s.ldisc.termios, &echo, &mut out);
            (sig.map(|signal| TtySignal { signal, pgrp: (s.pgrp != 0).then_some(s.pgrp) }), out)
        };
        if !out.is_empty() {
            self.sink.write(&out);
        }
        sig
    }

    /// Canonical: at most one line, Ok(0) at ^D on an empty line.
    /// Non-canonical: by VMIN/VTIME. EAGAIN when the read must wait.
    pub fn read(&self, buf: &mut [u8]) -> Result<usize> {
        let mut s = self.state.lock();
        let l = &mut s.ldisc;
        if buf.is_empty() {
            return Ok(0);
        }
        if l.termios.canonical() {
            let Some(front) = l.lines.front_mut() else { return Err(Errno::EAGAIN) };
            if front.is_empty() {
                l.lines.pop_front();
                return Ok(0);
            }
            let n = buf.len().min(front.len());
            for (d, s) in buf.iter_mut().zip(front.drain(..n)) {
                *d = s;
            }
            if front.is_empty() {
                l.lines.pop_front();
            }
            return Ok(n);
        }
        let (vmin, vtime) = (l.termios.cc[VMIN] as usize, l.termios.cc[VTIME]);
        let need = vmin.min(buf.len());
        if l.raw.len() >= need.max(1) || (vmin == 0 && vtime == 0) {
            return Ok(take_raw(l, buf));
        }
        Err(Errno::EAGAIN)
    }

    /// Non-canonical reads with VTIME set: how long (in tenths of a second)
    /// the caller waits before `read_expired`. With VMIN > 0 the timer runs
    /// only once a byte has arrived and restarts with each byte.
    pub fn read_timeout(&self) -> Option<u8> {
        let s = self.state.lock();
        let t = &s.ldisc.termios;
        let (vmin, vtime) = (t.cc[VMIN], t.cc[VTIME]);
        (!t.canonical() && vtime > 0 && (vmin == 0 || !s.ldisc.raw.is_empty())).then_some(vtime)
    }

    /// The VTIME timer ran out: whatever is there, possibly nothing.
    pub fn read_expired(&self, buf: &mut [u8]) -> usize {
        take_raw(&mut self.state.lock().ldisc, buf)
    }

    /// Output, with OPOST processing. Never blocks.
    pub fn write(&self, data: &[u8]) -> usize {
        let mut out = Vec::with_capacity(data.len() + 8);
        opost(&self.state.lock().ldisc.termios, data, &mut out);
        self.sink.write(&out);
        data.len()
    }

    pub fn poll(&self) -> PollEvents {
        let s = self.state.lock();
        let l = &s.ldisc;
        let t = &l.termios;
        let readable = if t.canonical() {
            !l.lines.is_empty()
        } else {
            let (vmin, vtime) = (t.cc[VMIN] as usize, t.cc[VTIME]);
            let amt = if vtime == 0 && vmin > 0 { vmin } else { 1 };
            l.raw.len() >= amt
        };
        if readable { PollEvents::IN | PollEvents::OUT } else { PollEvents::OUT }
    }

    pub fn termios(&self) -> Termios {
        self.state.lock().ldisc.termios
    }

    pub fn set_termios(&self, t: Termios) {
        self.state.lock().ldisc.set_termios(t);
    }

    pub fn foreground_pgrp(&self) -> u32 {
        self.state.lock().pgrp
    }

    pub fn set_foreground_pgrp(&self, pgrp: u32) {
        self.state.lock().pgrp = pgrp;
    }

    /// The session this terminal controls (0: none).
    pub fn session(&self) -> u32 {
        self.state.lock().session
    }

    /// The session this terminal controls (TIOCGSID); set by the kernel.
    pub fn set_session(&self, sid: u32) {
        self.state.lock().session = sid;
    }

    pub fn winsize(&self) -> Winsize {
        self.state.lock().winsize
    }

    /// Stores the window size; returns the SIGWINCH to send if it changed.
    pub fn set_winsize(&self, w: Winsize) -> Option<TtySignal> {
        let mut s = self.state.lock();
        let changed = s.winsize != w;
        s.winsize = w;
        (changed && s.pgrp != 0).then_some(TtySignal { signal: 28, pgrp: Some(s.pgrp) })
    }

    /// The terminal ioctls BusyBox ash and Rust std use. Permission and
    /// session checks on TIOCSPGRP are the caller's.
    pub fn ioctl(&self, cmd: u32, arg: u64, mem: &mut dyn UserMemory) -> Result<i64> {
        match cmd {
            TCGETS => mem.write(arg, &self.termios().to_bytes())?,
            TCSETS | TCSETSW | TCSETSF => {
                let mut b = [0u8; TERMIOS_SIZE];
                mem.read(arg, &mut b)?;
                let mut s = self.state.lock();
                if cmd == TCSETSF {
                    s.ldisc.flush_input();
                }
                s.ldisc.set_termios(Termios::from_bytes(&b));
            }
            TIOCGPGRP => mem.write(arg, &self.foreground_pgrp().to_le_bytes())?,
            TIOCSPGRP => {
                let mut b = [0u8; 4];
                mem.read(arg, &mut b)?;
                let pgrp = i32::from_le_bytes(b);
                if pgrp < 0 {
                    return Err(Errno::EINVAL);
                }
                self.set_foreground_pgrp(pgrp as u32);
            }
            TIOCGWINSZ => mem.write(arg, &self.winsize().to_bytes())?,
            TIOCSWINSZ => {
                let mut b = [0u8; WINSIZE_SIZE];
                mem.read(arg, &mut b)?;
                self.set_winsize(Winsize::from_bytes(&b));
            }
            FIONREAD => {
                let n = self.state.lock().ldisc.available() as i32;
                mem.write(arg, &n.to_le_bytes())?;
            }
            TIOCOUTQ => mem.write(arg, &0i32.to_le_bytes())?,
            TCFLSH => {
                if arg > 2 {
                    return Err(Errno::EINVAL);
                }
                if arg != 1 {
                    self.state.lock().ldisc.flush_input();
                }
            }
            TIOCGSID => {
                let sid = self.state.lock().session;
                if sid == 0 {
                    return Err(Errno::ENOTTY);
                }
                mem.write(arg, &sid.to_le_bytes())?;
            }
            // Output is never queued, so draining and flow control are no-ops.
            TCSBRK | TCXONC | TIOCSCTTY | TIOCNOTTY => {}
            _ => return Err(Errno::ENOTTY),
        }
        Ok(0)
    }
}

fn take_raw(l: &mut Ldisc, buf: &mut [u8]) -> usize {
    let n = buf.len().min(l.raw.len());
    for (d, s) in buf.iter_mut().zip(l.raw.drain(..n)) {
        *d = s;
    }
    n
}

#[cfg(test)]
mod tests;
