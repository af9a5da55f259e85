//! The N_TTY line discipline on plain data: input bytes in, echo bytes
//! and signals out; cooked lines or raw bytes queued for readers.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use super::termios::*;

/// Longest canonical line (Linux: N_TTY_BUF_SIZE - 1).
pub const MAX_LINE: usize = 4095;
/// Raw-mode input kept before bytes are dropped.
pub const MAX_RAW: usize = 4096;

pub const SIGINT: u32 = 2;
pub const SIGQUIT: u32 = 3;
pub const SIGTSTP: u32 = 20;

#[derive(Default)]
pub struct Ldisc {
    pub termios: Termios,
    /// The line being edited (canonical mode).
    pub line: Vec<u8>,
    /// Finished lines; an empty one is an end-of-file mark (^D at the start
    /// of a line).
    pub lines: VecDeque<Vec<u8>>,
    /// Input in non-canonical mode.
    pub raw: VecDeque<u8>,
    lnext: bool,
}

impl Ldisc {
    /// Processes one input byte. Echo goes to `echo` (before output
    /// processing); a signal for the foreground process group is returned.
    pub fn input(&mut self, byte: u8, echo: &mut Vec<u8>) -> Option<u32> {
        let t = self.termios;
        let mut c = byte;
        if t.iflag & ISTRIP != 0 {
            c &= 0x7f;
        }
        if self.lnext {
            self.lnext = false;
            if t.lflag & ECHO != 0 {
                echo.extend_from_slice(b"\x08"); // over the '^' shown for ^V
            }
            self.put(c, echo);
            return None;
        }
        if c == b'\r' {
            if t.iflag & IGNCR != 0 {
                return None;
            }
            if t.iflag & ICRNL != 0 {
                c = b'\n';
            }
        } else if c == b'\n' && t.iflag & INLCR != 0 {
            c = b'\r';
        }
        if t.lflag & ISIG != 0 {
            let sig = if t.is(VINTR, c) {
                Some(SIGINT)
            } else if t.is(VQUIT, c) {
                Some(SIGQUIT)
            } else if t.is(VSUSP, c) {
                Some(SIGTSTP)
            } else {
                None
            };
            if let Some(sig) = sig {
                if t.lflag & NOFLSH == 0 {
                    self.flush_input();
                }
                if t.lflag & ECHO != 0 {
                    echo_char(&t, c, echo);
                }
                return Some(sig);
            }
        }
        if t.iflag & IXON != 0 && (t.is(VSTART, c) || t.is(VSTOP, c)) {
            return None; // flow control: not input (output is never stopped)
        }
        if !t.canonical() {
            if self.raw.len() < MAX_RAW {
                self.raw.push_back(c);
            }
            if t.lflag & ECHO != 0 {
                echo_char(&t, c, echo);
            }
            return None;
        }
        let ext = t.lflag & IEXTEN != 0;
        // ^H erases too: serial terminals send either BS or DEL for the
        // backspace key (Linux honours only VERASE).
        if t.is(VERASE, c) || (ext && c == 0x08) {
            self.erase(echo);
        } else if t.is(VKILL, c) {
            self.kill(echo);
        } else if ext && t.is(VWERASE, c) {
            while self.line.last().is_some_and(|b| *b == b' ' || *b == b'\t') {
                self.erase(echo);
            }
            while self.line.last().is_some_and(|b| *b != b' ' && *b != b'\t') {
                self.erase(echo);
            }
        } else if ext && t.is(VLNEXT, c) {
            self.lnext = true;
            if t.lflag & ECHO != 0 && t.lflag & ECHOCTL != 0 {
                echo.push(b'^');
            }
        } else if ext && t.is(VREPRINT, c) {
            if t.lflag & ECHO != 0 {
                echo_char(&t, c, echo);
                echo.push(b'\n');
                for &b in &self.line {
                    echo_char(&t, b, echo);
                }
            }
        } else if t.is(VEOF, c) {
            // Ends the line without adding anything; on an empty line it is
            // end of file.
            self.lines.push_back(core::mem::take(&mut self.line));
        } else if c == b'\n' || t.is(VEOL, c) || t.is(VEOL2, c) {
            self.line.push(c);
            if t.lflag & ECHO != 0 || (c == b'\n' && t.lflag & ECHONL != 0) {
                echo.push(c);
            }
            self.lines.push_back(core::mem::take(&mut self.line));
        } else {
            self.put(c, echo);
        }
        None
    }

    fn put(&mut self, c: u8, echo: &mut Vec<u8>) {
        if !self.termios.canonical() {
            if self.raw.len() < MAX_RAW {
                self.raw.push_back(c);
            }
        } else if self.line.len() < MAX_LINE {
            self.line.push(c);
        } else {
            return;
        }
        if self.termios.lflag & ECHO != 0 {
            echo_char(&self.termios, c, echo);
        }
    }

    /// Removes the last character (a whole UTF-8 sequence under IUTF8).
    fn erase(&mut self, echo: &mut Vec<u8>) {
        let t = self.termios;
        let Some(mut c) = self.line.pop() else { return };
        if t.iflag & IUTF8 != 0 {
            while c & 0xc0 == 0x80 {
                match self.line.pop() {
                    Some(p) => c = p,
                    None => break,
                }
            }
        }
        if t.lflag & ECHO == 0 {
            return;
        }
        if t.lflag & ECHOE != 0 {
            let width = if t.lflag & ECHOCTL != 0 && is_ctl(c) { 2 } else { 1 };
            for _ in 0..width {
                echo.extend_from_slice(b"\x08 \x08");
            }
        } else {
            echo_char(&t, t.cc[VERASE], echo);
        }
    }

    fn kill(&mut self, echo: &mut Vec<u8>) {
        let t = self.termios;
        if t.lflag & ECHO != 0 && t.lflag & ECHOKE != 0 && t.lflag & ECHOE != 0 {
            while !self.line.is_empty() {
                self.erase(echo);
            }
            return;
        }
        self.line.clear();
        if t.lflag & ECHO != 0 {
            echo_char(&t, t.cc[VKILL], echo);
            if t.lflag & ECHOK != 0 {
                echo.push(b'\n');
            }
        }
    }

    pub fn flush_input(&mut self) {
        self.line.clear();
        self.lines.clear();
        self.raw.clear();
        self.lnext = false;
    }

    /// Bytes a read could return now (FIONREAD).
    pub fn available(&self) -> usize {
        if self.termios.canonical() {
            self.lines.iter().map(Vec::len).sum()
        } else {
            self.raw.len()
        }
    }

    /// Applies new settings; input already typed moves between the cooked
    /// and raw queues when ICANON changes.
    pub fn set_termios(&mut self, t: Termios) {
        let was = self.termios.canonical();
        self.termios = t;
        if was && !t.canonical() {
            for l in self.lines.drain(..) {
                self.raw.extend(l);
            }
            self.raw.extend(self.line.drain(..));
        } else if !was && t.canonical() {
            self.line.extend(self.raw.drain(..));
        }
    }
}

fn is_ctl(c: u8) -> bool {
    (c < 0x20 && c != b'\t' && c != b'\n') || c == 0x7f
}

/// Echo of one character: control characters as ^X under ECHOCTL.
fn echo_char(t: &Termios, c: u8, echo: &mut Vec<u8>) {
    if t.lflag & ECHOCTL != 0 && is_ctl(c) {
        echo.push(b'^');
        echo.push(c ^ 0x40);
    } else {
        echo.push(c);
    }
}

/// Output processing (OPOST): NL -> CR NL under ONLCR, CR -> NL under OCRNL.
pub fn opost(t: &Termios, data: &[u8], out: &mut Vec<u8>) {
    if t.oflag & OPOST == 0 {
        out.extend_from_slice(data);
        return;
    }
    for &c in data {
        match c {
            b'\n' if t.oflag & ONLCR != 0 => out.extend_from_slice(b"\r\n"),
            b'\r' if t.oflag & OCRNL != 0 => out.push(b'\n'),
            _ => out.push(c),
        }
    }
}
