//! The kernel's `struct termios` (asm-generic/termbits.h: 36 bytes, not
//! glibc's 60-byte user struct), `struct winsize`, and the tty ioctls.

pub const NCCS: usize = 19;
pub const TERMIOS_SIZE: usize = 36;
pub const WINSIZE_SIZE: usize = 8;

// c_cc indices.
pub const VINTR: usize = 0;
pub const VQUIT: usize = 1;
pub const VERASE: usize = 2;
pub const VKILL: usize = 3;
pub const VEOF: usize = 4;
pub const VTIME: usize = 5;
pub const VMIN: usize = 6;
pub const VSTART: usize = 8;
pub const VSTOP: usize = 9;
pub const VSUSP: usize = 10;
pub const VEOL: usize = 11;
pub const VREPRINT: usize = 12;
pub const VWERASE: usize = 14;
pub const VLNEXT: usize = 15;
pub const VEOL2: usize = 16;

// c_iflag
pub const ISTRIP: u32 = 0o40;
pub const INLCR: u32 = 0o100;
pub const IGNCR: u32 = 0o200;
pub const ICRNL: u32 = 0o400;
pub const IXON: u32 = 0o2000;
pub const IUTF8: u32 = 0o40000;
// c_oflag
pub const OPOST: u32 = 0o1;
pub const ONLCR: u32 = 0o4;
pub const OCRNL: u32 = 0o10;
// c_cflag
pub const B38400: u32 = 0o17;
pub const CS8: u32 = 0o60;
pub const CREAD: u32 = 0o200;
pub const HUPCL: u32 = 0o2000;
// c_lflag
pub const ISIG: u32 = 0o1;
pub const ICANON: u32 = 0o2;
pub const ECHO: u32 = 0o10;
pub const ECHOE: u32 = 0o20;
pub const ECHOK: u32 = 0o40;
pub const ECHONL: u32 = 0o100;
pub const NOFLSH: u32 = 0o200;
/// Background writes stop with SIGTTOU.
pub const TOSTOP: u32 = 0o400;
pub const ECHOCTL: u32 = 0o1000;
pub const ECHOKE: u32 = 0o4000;
pub const IEXTEN: u32 = 0o100000;

// ioctl requests.
pub const TCGETS: u32 = 0x5401;
pub const TCSETS: u32 = 0x5402;
pub const TCSETSW: u32 = 0x5403;
pub const TCSETSF: u32 = 0x5404;
pub const TCSBRK: u32 = 0x5409;
pub const TCXONC: u32 = 0x540A;
pub const TCFLSH: u32 = 0x540B;
pub const TIOCSCTTY: u32 = 0x540E;
pub const TIOCGPGRP: u32 = 0x540F;
pub const TIOCSPGRP: u32 = 0x5410;
pub const TIOCOUTQ: u32 = 0x5411;
pub const TIOCGWINSZ: u32 = 0x5413;
pub const TIOCSWINSZ: u32 = 0x5414;
pub const FIONREAD: u32 = 0x541B;
pub const TIOCNOTTY: u32 = 0x5422;
pub const TIOCGSID: u32 = 0x5429;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Termios {
    pub iflag: u32,
    pub oflag: u32,
    pub cflag: u32,
    pub lflag: u32,
    pub line: u8,
    pub cc: [u8; NCCS],
}

impl Default for Termios {
    /// Linux's `tty_std_termios`: cooked mode with echo, as a shell expects.
    fn default() -> Self {
        let mut cc = [0u8; NCCS];
        cc[VINTR] = 0x03;
        cc[VQUIT] = 0x1c;
        cc[VERASE] = 0x7f;
        cc[VKILL] = 0x15;
        cc[VEOF] = 0x04;
        cc[VMIN] = 1;
        cc[VSTART] = 0x11;
        cc[VSTOP] = 0x13;
        cc[VSUSP] = 0x1a;
        cc[VREPRINT] = 0x12;
        cc[13] = 0x0f; // VDISCARD
        cc[VWERASE] = 0x17;
        cc[VLNEXT] = 0x16;
        Termios {
            iflag: ICRNL | IXON,
            oflag: OPOST | ONLCR,
            cflag: B38400 | CS8 | CREAD | HUPCL,
            lflag: ISIG | ICANON | ECHO | ECHOE | ECHOK | ECHOCTL | ECHOKE | IEXTEN,
            line: 0,
            cc,
        }
    }
}

impl Termios {
    pub fn to_bytes(&self) -> [u8; TERMIOS_SIZE] {
        let mut b = [0u8; TERMIOS_SIZE];
        for (i, f) in [self.iflag, self.oflag, self.cflag, self.lflag].iter().enumerate() {
            b[4 * i..4 * i + 4].copy_from_slice(&f.to_le_bytes());
        }
        b[16] = self.line;
        b[17..].copy_from_slice(&self.cc);
        b
    }

    pub fn from_bytes(b: &[u8; TERMIOS_SIZE]) -> Termios {
        let f = |i: usize| u32::from_le_bytes(b[4 * i..4 * i + 4].try_into().expect("4 bytes"));
        let mut cc = [0u8; NCCS];
        cc.copy_from_slice(&b[17..]);
        Termios { iflag: f(0), oflag: f(1), cflag: f(2), lflag: f(3), line: b[16], cc }
    }

    pub fn canonical(&self) -> bool {
        self.lflag & ICANON != 0
    }

    /// Whether `c` is the control character at `idx` (0 disables one).
    pub fn is(&self, idx: usize, c: u8) -> bool {
        self.cc[idx] != 0 && self.cc[idx] == c
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Winsize {
    pub rows: u16,
    pub cols: u16,
    pub xpixel: u16,
    pub ypixel: u16,
}

impl Default for Winsize {
    fn default() -> Self {
        Winsize { rows: 24, cols: 80, xpixel: 0, ypixel: 0 }
    }
}

impl Winsize {
    pub fn to_bytes(&self) -> [u8; WINSIZE_SIZE] {
        let mut b = [0u8; WINSIZE_SIZE];
        for (i, v) in [self.rows, self.cols, self.xpixel, self.ypixel].iter().enumerate() {
            b[2 * i..2 * i + 2].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    pub fn from_bytes(b: &[u8; WINSIZE_SIZE]) -> Winsize {
        let f = |i: usize| u16::from_le_bytes([b[2 * i], b[2 * i + 1]]);
        Winsize { rows: f(0), cols: f(1), xpixel: f(2), ypixel: f(3) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::offset_of;

    #[test]
    fn constants_match_linux() {
        let ioctls = [
            (TCGETS, libc::TCGETS),
            (TCSETS, libc::TCSETS),
            (TCSETSW, libc::TCSETSW),
            (TCSETSF, libc::TCSETSF),
            (TCSBRK, libc::TCSBRK),
            (TCXONC, libc::TCXONC),
            (TCFLSH, libc::TCFLSH),
            (TIOCSCTTY, libc::TIOCSCTTY),
            (TIOCGPGRP, libc::TIOCGPGRP),
            (TIOCSPGRP, libc::TIOCSPGRP),
            (TIOCOUTQ, libc::TIOCOUTQ),
            (TIOCGWINSZ, libc::TIOCGWINSZ),
            (TIOCSWINSZ, libc::TIOCSWINSZ),
            (FIONREAD, libc::FIONREAD),
            (TIOCNOTTY, libc::TIOCNOTTY),
            (TIOCGSID, libc::TIOCGSID),
        ];
        for (ours, theirs) in ioctls {
            assert_eq!(ours as u64, theirs);
        }
        let flags = [
            (ISTRIP, libc::ISTRIP),
            (INLCR, libc::INLCR),
            (IGNCR, libc::IGNCR),
            (ICRNL, libc::ICRNL),
            (IXON, libc::IXON),
            (IUTF8, libc::IUTF8),
            (OPOST, libc::OPOST),
            (ONLCR, libc::ONLCR),
            (OCRNL, libc::OCRNL),
            (B38400, libc::B38400),
            (CS8, libc::CS8),
            (CREAD, libc::CREAD),
            (HUPCL, libc::HUPCL),
            (ISIG, libc::ISIG),
            (ICANON, libc::ICANON),
            (ECHO, libc::ECHO),
            (ECHOE, libc::ECHOE),
            (ECHOK, libc::ECHOK),
            (ECHONL, libc::ECHONL),
            (NOFLSH, libc::NOFLSH),
            (TOSTOP, libc::TOSTOP),
            (ECHOCTL, libc::ECHOCTL),
            (ECHOKE, libc::ECHOKE),
            (IEXTEN, libc::IEXTEN),
        ];
        for (ours, theirs) in flags {
            assert_eq!(ours, theirs);
        }
        let idx = [
            (VINTR, libc::VINTR),
            (VQUIT, libc::VQUIT),
            (VERASE, libc::VERASE),
            (VKILL, libc::VKILL),
            (VEOF, libc::VEOF),
            (VTIME, libc::VTIME),
            (VMIN, libc::VMIN),
            (VSTART, libc::VSTART),
            (VSTOP, libc::VSTOP),
            (VSUSP, libc::VSUSP),
            (VEOL, libc::VEOL),
            (VREPRINT, libc::VREPRINT),
            (VWERASE, libc::VWERASE),
            (VLNEXT, libc::VLNEXT),
            (VEOL2, libc::VEOL2),
        ];
        for (ours, theirs) in idx {
            assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn layouts() {
        // glibc's termios starts with the kernel's fields in the same places.
        assert_eq!(offset_of!(libc::termios, c_lflag), 12);
        assert_eq!(offset_of!(libc::termios, c_line), 16);
        assert_eq!(offset_of!(libc::termios, c_cc), 17);
        assert_eq!(core::mem::size_of::<libc::winsize>(), WINSIZE_SIZE);
        assert_eq!(offset_of!(libc::winsize, ws_col), 2);
        let t = Termios::default();
        let b = t.to_bytes();
        assert_eq!(&b[0..4], &0x500u32.to_le_bytes());
        assert_eq!(&b[12..16], &0x8a3bu32.to_le_bytes());
        assert_eq!(b[17 + VERASE], 0x7f);
        assert_eq!(Termios::from_bytes(&b), t);
        let w = Winsize { rows: 50, cols: 132, xpixel: 1, ypixel: 2 };
        assert_eq!(Winsize::from_bytes(&w.to_bytes()), w);
        assert_eq!(&w.to_bytes()[..4], &[50, 0, 132, 0]);
    }
}
