use super::*;
use crate::vfs::testutil::{CaptureSink, FakeMem};

fn tty() -> (Arc<Tty>, Arc<CaptureSink>) {
    let sink = CaptureSink::new();
    (Tty::new(sink.clone()), sink)
}

fn feed(t: &Tty, bytes: &[u8]) -> Vec<TtySignal> {
    bytes.iter().filter_map(|&b| t.input(b)).collect()
}

fn read_str(t: &Tty) -> Result<Vec<u8>> {
    let mut buf = [0u8; 256];
    t.read(&mut buf).map(|n| buf[..n].to_vec())
}

#[test]
fn canonical_line_with_echo_and_crnl() {
    let (t, out) = tty();
    feed(&t, b"ls -l");
    assert_eq!(t.read(&mut [0; 8]), Err(Errno::EAGAIN));
    assert_eq!(t.poll(), PollEvents::OUT);
    feed(&t, b"\r");
    assert!(t.poll().contains(PollEvents::IN));
    assert_eq!(read_str(&t).unwrap(), b"ls -l\n");
    assert_eq!(out.take(), b"ls -l\r\n");
}

#[test]
fn backspace_kill_and_word_erase() {
    let (t, out) = tty();
    feed(&t, b"ecoo\x7f\x7fho hi\x08\x08there\n");
    assert_eq!(read_str(&t).unwrap(), b"echo there\n");
    assert_eq!(out.take(), b"ecoo\x08 \x08\x08 \x08ho hi\x08 \x08\x08 \x08there\r\n");
    // Erase on an empty line does nothing.
    feed(&t, b"\x7fx\n");
    assert_eq!(read_str(&t).unwrap(), b"x\n");
    assert_eq!(out.take(), b"x\r\n");
    // ^U kills the line (ECHOKE: erased visually), ^W a word.
    feed(&t, b"abc\x15one two  \x17three\n");
    assert_eq!(read_str(&t).unwrap(), b"one three\n");
    let echoed = out.take();
    assert!(echoed.starts_with(b"abc\x08 \x08\x08 \x08\x08 \x08one two  "), "{echoed:?}");
    // A control character echoed as ^X takes two columns to erase.
    feed(&t, b"a\x01\x7f\n");
    assert_eq!(out.take(), b"a^A\x08 \x08\x08 \x08\r\n");
}

#[test]
fn utf8_erase_removes_whole_characters() {
    let (t, _) = tty();
    let mut tm = t.termios();
    tm.iflag |= IUTF8;
    t.set_termios(tm);
    feed(&t, "hé".as_bytes());
    feed(&t, b"\x7f\n");
    assert_eq!(read_str(&t).unwrap(), b"h\n");
}

#[test]
fn eof_and_partial_reads() {
    let (t, _) = tty();
    feed(&t, b"\x04");
    assert_eq!(read_str(&t), Ok(Vec::new()));
    assert_eq!(t.read(&mut [0; 4]), Err(Errno::EAGAIN));
    feed(&t, b"abc\x04");
    assert_eq!(read_str(&t).unwrap(), b"abc"); // ^D mid-line: no newline, no EOF
    feed(&t, b"hello\nworld\n");
    let mut b = [0u8; 3];
    assert_eq!(t.read(&mut b), Ok(3));
    assert_eq!(&b, b"hel");
    assert_eq!(read_str(&t).unwrap(), b"lo\n"); // one line per read
    assert_eq!(read_str(&t).unwrap(), b"world\n");
}

#[test]
fn signals_go_to_the_foreground_group() {
    let (t, out) = tty();
    assert_eq!(feed(&t, b"\x03"), [TtySignal { signal: SIGINT, pgrp: None }]);
    t.set_foreground_pgrp(42);
    feed(&t, b"partial");
    out.take();
    assert_eq!(feed(&t, b"\x03"), [TtySignal { signal: SIGINT, pgrp: Some(42) }]);
    assert_eq!(out.take(), b"^C");
    feed(&t, b"\n");
    assert_eq!(read_str(&t).unwrap(), b"\n"); // the partial line was flushed
    assert_eq!(feed(&t, b"\x1a"), [TtySignal { signal: SIGTSTP, pgrp: Some(42) }]);
    assert_eq!(feed(&t, b"\x1c"), [TtySignal { signal: SIGQUIT, pgrp: Some(42) }]);
    let mut tm = t.termios();
    tm.lflag &= !ISIG;
    t.set_termios(tm);
    assert!(feed(&t, b"\x03\n").is_empty());
    assert_eq!(read_str(&t).unwrap(), b"\x03\n");
}

#[test]
fn lnext_quotes_the_next_character() {
    let (t, _) = tty();
    t.set_foreground_pgrp(1);
    assert!(feed(&t, b"\x16\x03\x16\x7f\n").is_empty());
    assert_eq!(read_str(&t).unwrap(), b"\x03\x7f\n");
}

#[test]
fn noncanonical_vmin_vtime() {
    let (t, out) = tty();
    let mut tm = t.termios();
    tm.lflag &= !(ICANON | ECHO);
    tm.cc[VMIN] = 3;
    tm.cc[VTIME] = 0;
    t.set_termios(tm);
    feed(&t, b"ab");
    assert_eq!(t.read(&mut [0; 8]), Err(Errno::EAGAIN));
    assert_eq!(t.poll(), PollEvents::OUT);
    assert_eq!(t.read_timeout(), None);
    feed(&t, b"\x7fc");
    assert_eq!(read_str(&t).unwrap(), b"ab\x7fc"); // no editing in raw mode
    assert!(out.take().is_empty());
    // VMIN=0, VTIME=0: polling read.
    tm.cc[VMIN] = 0;
    t.set_termios(tm);
    assert_eq!(t.read(&mut [0; 8]), Ok(0));
    // VMIN=0, VTIME=5: wait up to 0.5 s for one byte.
    tm.cc[VTIME] = 5;
    t.set_termios(tm);
    assert_eq!(t.read(&mut [0; 8]), Err(Errno::EAGAIN));
    assert_eq!(t.read_timeout(), Some(5));
    assert_eq!(t.read_expired(&mut [0; 8]), 0);
    feed(&t, b"z");
    assert_eq!(read_str(&t).unwrap(), b"z");
    // VMIN=4, VTIME=2: inter-byte timer once something arrived.
    tm.cc[VMIN] = 4;
    tm.cc[VTIME] = 2;
    t.set_termios(tm);
    assert_eq!(t.read_timeout(), None);
    feed(&t, b"xy");
    assert_eq!(t.read(&mut [0; 8]), Err(Errno::EAGAIN));
    assert_eq!(t.read_timeout(), Some(2));
    let mut b = [0u8; 8];
    assert_eq!(t.read_expired(&mut b), 2);
    // A pending line moves to the raw queue when ICANON goes off.
    t.set_termios(Termios::default());
    feed(&t, b"half");
    t.set_termios(tm);
    assert_eq!(read_str(&t).unwrap(), b"half");
}

#[test]
fn output_processing() {
    let (t, out) = tty();
    assert_eq!(t.write(b"a\nb\n"), 4);
    assert_eq!(out.take(), b"a\r\nb\r\n");
    let mut tm = t.termios();
    tm.oflag &= !OPOST;
    t.set_termios(tm);
    t.write(b"a\n");
    assert_eq!(out.take(), b"a\n");
}

#[test]
fn ioctls_through_user_memory() {
    let (t, _) = tty();
    let mut m = FakeMem::new(0x1000, 64);
    assert_eq!(t.ioctl(TCGETS, 0x1000, &mut m), Ok(0));
    let mut tm = Termios::from_bytes(&m.bytes[..36].try_into().unwrap());
    assert_eq!(tm, Termios::default());
    tm.lflag &= !(ICANON | ECHO);
    m.bytes[..36].copy_from_slice(&tm.to_bytes());
    feed(&t, b"typed");
    t.ioctl(TCSETSF, 0x1000, &mut m).unwrap();
    assert!(!t.termios().canonical());
    assert_eq!(t.read(&mut [0; 8]), Err(Errno::EAGAIN)); // flushed
    m.bytes[40..44].copy_from_slice(&77i32.to_le_bytes());
    t.ioctl(TIOCSPGRP, 0x1028, &mut m).unwrap();
    assert_eq!(t.foreground_pgrp(), 77);
    t.ioctl(TIOCGPGRP, 0x1030, &mut m).unwrap();
    assert_eq!(&m.bytes[48..52], &77u32.to_le_bytes());
    t.ioctl(TIOCGWINSZ, 0x1000, &mut m).unwrap();
    assert_eq!(&m.bytes[..4], &[24, 0, 80, 0]);
    m.bytes[..8].copy_from_slice(&Winsize { rows: 40, cols: 120, xpixel: 0, ypixel: 0 }.to_bytes());
    t.ioctl(TIOCSWINSZ, 0x1000, &mut m).unwrap();
    assert_eq!(t.winsize().cols, 120);
    feed(&t, b"xyz");
    t.ioctl(FIONREAD, 0x1000, &mut m).unwrap();
    assert_eq!(&m.bytes[..4], &3i32.to_le_bytes());
    assert_eq!(t.ioctl(TCGETS, 0x9000, &mut m), Err(Errno::EFAULT));
    assert_eq!(t.ioctl(0x1234, 0x1000, &mut m), Err(Errno::ENOTTY));
    assert_eq!(t.set_winsize(Winsize::default()), Some(TtySignal { signal: 28, pgrp: Some(77) }));
}
