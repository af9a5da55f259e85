//! Pipes: a bounded byte queue with counted reader and writer ends.
//! Nothing here blocks: "would block" is EAGAIN, and the caller (which
//! knows whether the descriptor is O_NONBLOCK) waits for `poll` readiness
//! and retries.

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;

use super::types::PollEvents;
use super::{Errno, Result};

pub const PIPE_CAPACITY: usize = 64 * 1024;
/// Writes up to this size are atomic: all or nothing.
pub const PIPE_BUF: usize = 4096;

static NEXT_INO: AtomicU64 = AtomicU64::new(1);

pub struct Pipe {
    ino: u64,
    state: Mutex<State>,
}

struct State {
    buf: VecDeque<u8>,
    readers: usize,
    writers: usize,
    /// Wake-up generations (edge-triggered epoll): `to_readers` advances
    /// on data or the last writer's close, `to_writers` on space or the
    /// last reader's close.
    to_readers: u64,
    to_writers: u64,
    /// Ends opened so far (a FIFO's open waits for the other side's count
    /// to move, as Linux's r_counter/w_counter).
    reader_opens: u64,
    writer_opens: u64,
}

/// Makes a pipe; dropping the last clone of an end closes that end.
pub fn pipe() -> (PipeReader, PipeWriter) {
    let p = Arc::new(Pipe {
        ino: NEXT_INO.fetch_add(1, Ordering::Relaxed),
        state: Mutex::new(State {
            buf: VecDeque::new(),
            readers: 1,
            writers: 1,
            to_readers: 0,
            to_writers: 0,
            reader_opens: 1,
            writer_opens: 1,
        }),
    });
    (PipeReader(p.clone()), PipeWriter(p))
}

/// The pipe behind a named FIFO, with no ends yet: opens attach them.
pub fn fifo(ino: u64) -> Arc<Pipe> {
    Arc::new(Pipe {
        ino,
        state: Mutex::new(State {
            buf: VecDeque::new(),
            readers: 0,
            writers: 0,
            to_readers: 0,
            to_writers: 0,
            reader_opens: 0,
            writer_opens: 0,
        }),
    })
}

impl Pipe {
    /// Inode number for fstat; also a stable key to wait on.
    pub fn ino(&self) -> u64 {
        self.ino
    }

    pub fn len(&self) -> usize {
        self.state.lock().buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A new read end (a FIFO opened for reading).
    pub fn attach_reader(self: &Arc<Self>) -> PipeReader {
        let mut s = self.state.lock();
        s.readers += 1;
        s.reader_opens += 1;
        s.to_writers += 1;
        PipeReader(self.clone())
    }

    /// A new write end (a FIFO opened for writing).
    pub fn attach_writer(self: &Arc<Self>) -> PipeWriter {
        let mut s = self.state.lock();
        s.writers += 1;
        s.writer_opens += 1;
        s.to_readers += 1;
        PipeWriter(self.clone())
    }

    pub fn readers(&self) -> usize {
        self.state.lock().readers
    }

    pub fn writers(&self) -> usize {
        self.state.lock().writers
    }

    /// How many read ends and write ends have been opened so far.
    pub fn opens(&self) -> (u64, u64) {
        let s = self.state.lock();
        (s.reader_opens, s.writer_opens)
    }
}

pub struct PipeReader(Arc<Pipe>);
pub struct PipeWriter(Arc<Pipe>);

impl PipeReader {
    pub fn pipe(&self) -> &Arc<Pipe> {
        &self.0
    }

    /// Data, or Ok(0) at end of file (no writers left), or EAGAIN.
    pub fn read(&self, buf: &mut [u8]) -> Result<usize> {
        self.read_freeing(buf).map(|(n, _)| n)
    }

    /// [`read`](Self::read), and whether it made room a writer may be
    /// waiting for: the pipe had less than `PIPE_BUF` free before (no
    /// writer blocks, and the write end's readiness does not change, while
    /// at least that much is free — Linux wakes writers only then, too).
    pub fn read_freeing(&self, buf: &mut [u8]) -> Result<(usize, bool)> {
        let mut s = self.0.state.lock();
        if buf.is_empty() {
            return Ok((0, false));
        }
        if s.buf.is_empty() {
            return if s.writers == 0 { Ok((0, false)) } else { Err(Errno::EAGAIN) };
        }
        let was_full = PIPE_CAPACITY - s.buf.len() < PIPE_BUF;
        let n = buf.len().min(s.buf.len());
        let (a, b) = s.buf.as_slices();
        let from_a = n.min(a.len());
        buf[..from_a].copy_from_slice(&a[..from_a]);
        buf[from_a..n].copy_from_slice(&b[..n - from_a]);
        s.buf.drain(..n);
        s.to_writers += 1;
        Ok((n, was_full))
    }

    /// Advances whenever this end may have become readable.
    pub fn generation(&self) -> u64 {
        self.0.state.lock().to_readers
    }

    pub fn poll(&self) -> PollEvents {
        let s = self.0.state.lock();
        let mut ev = PollEvents::NONE;
        if !s.buf.is_empty() {
            ev |= PollEvents::IN;
        }
        if s.writers == 0 {
            ev |= PollEvents::HUP;
        }
        ev
    }
}

impl PipeWriter {
    pub fn pipe(&self) -> &Arc<Pipe> {
        &self.0
    }

    /// EPIPE without readers (the caller also raises SIGPIPE). A write of
    /// at most PIPE_BUF goes in whole or not at all (EAGAIN); a larger one
    /// takes what fits and the caller retries with the rest.
    pub fn write(&self, data: &[u8]) -> Result<usize> {
        let mut s = self.0.state.lock();
        if s.readers == 0 {
            return Err(Errno::EPIPE);
        }
        if data.is_empty() {
            return Ok(0);
        }
        let space = PIPE_CAPACITY - s.buf.len();
        if space == 0 || (data.len() <= PIPE_BUF && space < data.len()) {
            return Err(Errno::EAGAIN);
        }
        let n = data.len().min(space);
        s.buf.extend(&data[..n]);
        s.to_readers += 1;
        Ok(n)
    }

    /// Advances whenever this end may have become writable.
    pub fn generation(&self) -> u64 {
        self.0.state.lock().to_writers
    }

    pub fn poll(&self) -> PollEvents {
        let s = self.0.state.lock();
        if s.readers == 0 {
            return PollEvents::ERR | PollEvents::OUT;
        }
        if PIPE_CAPACITY - s.buf.len() >= PIPE_BUF { PollEvents::OUT } else { PollEvents::NONE }
    }
}

impl Clone for PipeReader {
    fn clone(&self) -> Self {
        self.0.state.lock().readers += 1;
        PipeReader(self.0.clone())
    }
}

impl Clone for PipeWriter {
    fn clone(&self) -> Self {
        self.0.state.lock().writers += 1;
        PipeWriter(self.0.clone())
    }
}

impl Drop for PipeReader {
    fn drop(&mut self) {
        let mut s = self.0.state.lock();
        s.readers -= 1;
        s.to_writers += 1;
    }
}

impl Drop for PipeWriter {
    fn drop(&mut self) {
        let mut s = self.0.state.lock();
        s.writers -= 1;
        s.to_readers += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_flows_then_eof_when_writers_are_gone() {
        let (r, w) = pipe();
        let mut buf = [0u8; 8];
        assert_eq!(r.read(&mut buf), Err(Errno::EAGAIN));
        assert_eq!(r.poll(), PollEvents::NONE);
        assert_eq!(w.write(b"hello"), Ok(5));
        assert!(r.poll().contains(PollEvents::IN));
        assert_eq!(r.read(&mut buf[..3]), Ok(3));
        assert_eq!(&buf[..3], b"hel");
        let w2 = w.clone();
        drop(w);
        assert_eq!(r.read(&mut buf), Ok(2));
        assert_eq!(r.read(&mut buf), Err(Errno::EAGAIN)); // w2 still open
        drop(w2);
        assert_eq!(r.poll(), PollEvents::HUP);
        assert_eq!(r.read(&mut buf), Ok(0));
    }

    #[test]
    fn a_read_frees_room_for_writers_only_from_a_full_pipe() {
        let (r, w) = pipe();
        let mut buf = [0u8; PIPE_BUF];
        assert_eq!(w.write(b"ab"), Ok(2));
        assert_eq!(r.read_freeing(&mut buf[..1]), Ok((1, false)), "plenty of room before: no writer waits");
        // Fill it: a PIPE_BUF write no longer fits, so writers may wait.
        let chunk = [7u8; PIPE_BUF];
        while w.write(&chunk).is_ok() {}
        assert!(PIPE_CAPACITY - r.pipe().len() < PIPE_BUF);
        assert_eq!(r.read_freeing(&mut buf), Ok((PIPE_BUF, true)));
        assert_eq!(w.write(&chunk), Ok(PIPE_BUF), "room again after the read");
        // Bytes come out in order across the queue's wrap.
        let (r2, w2) = pipe();
        let mut n = 0u8;
        let mut out = [0u8; 3000];
        for _ in 0..40 {
            let data: alloc::vec::Vec<u8> = (0..3000).map(|i| n.wrapping_add((i % 251) as u8)).collect();
            assert_eq!(w2.write(&data), Ok(3000));
            assert_eq!(r2.read_freeing(&mut out).map(|x| x.0), Ok(3000));
            assert_eq!(&out[..], &data[..]);
            n = n.wrapping_add(1);
        }
    }

    #[test]
    fn generations_advance_on_wakeups_only() {
        let (r, w) = pipe();
        let (g_r, g_w) = (r.generation(), w.generation());
        assert_eq!(w.write(b"ab"), Ok(2));
        assert!(r.generation() > g_r);
        assert_eq!(w.generation(), g_w);
        let g_r = r.generation();
        let mut buf = [0u8; 1];
        assert_eq!(r.read(&mut buf), Ok(1));
        assert_eq!(r.generation(), g_r);
        assert!(w.generation() > g_w);
        drop(w);
        assert!(r.generation() > g_r);
    }

    #[test]
    fn fifo_ends_attach_and_count_opens() {
        let f = fifo(7);
        assert_eq!((f.readers(), f.opens()), (0, (0, 0)));
        let r = f.attach_reader();
        let mut buf = [0u8; 4];
        assert_eq!(r.read(&mut buf), Ok(0)); // no writer: end of file
        let w = f.attach_writer();
        assert_eq!(f.opens(), (1, 1));
        assert_eq!(r.read(&mut buf), Err(Errno::EAGAIN));
        assert_eq!(w.write(b"ab"), Ok(2));
        assert_eq!(r.read(&mut buf), Ok(2));
        drop(r);
        assert_eq!(f.readers(), 0);
        assert_eq!(w.write(b"x"), Err(Errno::EPIPE));
    }

    #[test]
    fn epipe_without_readers() {
        let (r, w) = pipe();
        drop(r);
        assert_eq!(w.write(b"x"), Err(Errno::EPIPE));
        assert!(w.poll().contains(PollEvents::ERR));
    }

    #[test]
    fn bounded_with_atomic_small_writes() {
        let (r, w) = pipe();
        let big = alloc::vec![1u8; PIPE_CAPACITY + 100];
        assert_eq!(w.write(&big), Ok(PIPE_CAPACITY));
        assert_eq!(w.write(b"x"), Err(Errno::EAGAIN));
        assert_eq!(w.poll(), PollEvents::NONE);
        let mut buf = alloc::vec![0u8; 100];
        assert_eq!(r.read(&mut buf), Ok(100));
        // 100 bytes free: a 200-byte write is atomic, so it must wait.
        assert_eq!(w.write(&[2u8; 200]), Err(Errno::EAGAIN));
        assert_eq!(w.write(&[2u8; 100]), Ok(100));
        assert_eq!(r.pipe().len(), PIPE_CAPACITY);
    }
}
