//! Host-side fuzzing of the VMkernel's hardware-free library.
//!
//! Every harness is a function from a seeded [`Rng`] to one execution: it
//! builds an input (pure random bytes, structure-aware random values, or a
//! mutated valid seed such as a real ELF or cpio archive), feeds it to the
//! kernel code under test and checks the invariants the callers rely on. A
//! panic is a failure: the kernel must turn every bad input into an error.
//!
//! [`run`] drives a harness for a bounded time so that it runs in plain
//! `cargo test` (`FUZZ_SECS`, default 3 s per harness; longer on purpose,
//! e.g. `FUZZ_SECS=600 cargo test --release -p vmk-fuzz -- --nocapture`).
//! Execution `i` of seed `s` draws its input from `Rng::for_execution(s, i)`
//! alone, so a failure is replayed exactly with `FUZZ_SEED=s FUZZ_ITER=i`.
#![deny(unsafe_code)]

pub mod bootinfo;
pub mod cpio;
pub mod decoder;
pub mod devices;
pub mod elf;
pub mod guest_loader;
pub mod guest_paging;
pub mod vm_regions;
pub mod vmconfig;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A small, fast, seedable PRNG (SplitMix64): quality is ample for input
/// generation, and a seed names an input sequence exactly.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The generator for execution `iter` of a run with `seed`.
    pub fn for_execution(seed: u64, iter: u64) -> Rng {
        let mut r = Rng(seed ^ iter.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn u32(&mut self) -> u32 {
        self.next_u64() as u32
    }

    pub fn u8(&mut self) -> u8 {
        self.next_u64() as u8
    }

    pub fn bool(&mut self) -> bool {
        self.next_u64() & 1 != 0
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.u8()).collect()
    }

    /// Random bytes, up to `max` of them.
    pub fn bytes_upto(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max as u64 + 1) as usize;
        self.bytes(n)
    }

    /// A value that often sits on a boundary: 0, 1, all ones, a power of
    /// two (and its neighbours), a sign bit, a kernel or non-canonical
    /// address, or plain random bits.
    pub fn interesting_u64(&mut self) -> u64 {
        match self.below(12) {
            0 => 0,
            1 => 1,
            2 => u64::MAX,
            3 => 1u64 << self.below(64),
            4 => (1u64 << self.below(64)).wrapping_sub(1),
            5 => (1u64 << self.below(64)).wrapping_add(1),
            6 => *self.pick(&[0x7fff_ffff, 0x8000_0000, 0xffff_ffff, 0x1_0000_0000, 0x7fff_ffff_ffff_ffff, 0x8000_0000_0000_0000]),
            7 => 0xffff_8000_0000_0000 | (self.next_u64() & 0x7fff_ffff_f000),
            8 => 0x0000_8000_0000_0000 | (self.next_u64() & 0x7fff_ffff_ffff),
            9 => self.below(0x1_0000),
            10 => (self.next_u64() as i64 % 4096) as u64,
            _ => self.next_u64(),
        }
    }
}

/// AFL-style "havoc": one to eight stacked random edits of `data` (bit
/// flips, interesting bytes/words, arithmetic, block insert/delete/copy,
/// truncation), keeping it at most `max_len` bytes long.
pub fn mutate(rng: &mut Rng, data: &mut Vec<u8>, max_len: usize) {
    let rounds = 1 << rng.below(4);
    for _ in 0..rounds {
        let len = data.len();
        match rng.below(11) {
            0 if len > 0 => {
                let i = rng.below(len as u64) as usize;
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len as u64) as usize;
                data[i] = *rng.pick(&[0, 1, 0x7f, 0x80, 0xff, 0x10, 0x20, 0x40]);
            }
            2 if len > 0 => {
                let i = rng.below(len as u64) as usize;
                data[i] = rng.u8();
            }
            3 if len >= 2 => {
                let i = rng.below(len as u64 - 1) as usize;
                let v = *rng.pick(&[0u16, 0xffff, 0x7fff, 0x8000, 0x100, 0xff]);
                data[i..i + 2].copy_from_slice(&v.to_le_bytes());
            }
            4 if len >= 4 => {
                let i = rng.below(len as u64 - 3) as usize;
                let v = rng.interesting_u64() as u32;
                data[i..i + 4].copy_from_slice(&v.to_le_bytes());
            }
            5 if len >= 8 => {
                let i = rng.below(len as u64 - 7) as usize;
                let v = rng.interesting_u64();
                data[i..i + 8].copy_from_slice(&v.to_le_bytes());
            }
            6 if len > 0 => {
                // Small add/subtract on a byte.
                let i = rng.below(len as u64) as usize;
                let d = rng.range(1, 35) as u8;
                data[i] = if rng.bool() { data[i].wrapping_add(d) } else { data[i].wrapping_sub(d) };
            }
            7 if len > 0 => {
                let at = rng.below(len as u64) as usize;
                let n = rng.range(1, (len - at).min(256) as u64) as usize;
                data.drain(at..at + n);
            }
            8 if len < max_len => {
                let at = rng.below(len as u64 + 1) as usize;
                let n = rng.range(1, (max_len - len).min(256) as u64) as usize;
                let fill = if rng.bool() { rng.bytes(n) } else { vec![rng.u8(); n] };
                data.splice(at..at, fill);
            }
            9 if len > 1 => {
                // Copy a block over another place in the input.
                let from = rng.below(len as u64) as usize;
                let to = rng.below(len as u64) as usize;
                let n = rng.range(1, (len - from).min(len - to).min(128) as u64) as usize;
                data.copy_within(from..from + n, to);
            }
            10 if len > 0 => {
                data.truncate(rng.below(len as u64 + 1) as usize);
            }
            _ => {}
        }
    }
    data.truncate(max_len);
}

/// How long and from which seed a harness runs (environment: `FUZZ_SECS`,
/// `FUZZ_SEED`, `FUZZ_ITER`).
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub duration: Duration,
    pub seed: u64,
    /// Replay only this execution.
    pub only: Option<u64>,
}

fn env_num(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

impl Settings {
    /// From the environment; the default seed is fixed so that the bounded
    /// run in CI is reproducible (its first executions are always the same).
    pub fn from_env() -> Settings {
        let secs = std::env::var("FUZZ_SECS").ok().and_then(|s| s.trim().parse::<f64>().ok()).unwrap_or(3.0);
        Settings {
            duration: Duration::from_secs_f64(secs.max(0.0)),
            seed: env_num("FUZZ_SEED").unwrap_or(0x4d61_6e74_6c65),
            only: env_num("FUZZ_ITER"),
        }
    }
}

/// What a run did.
#[derive(Clone, Copy, Debug)]
pub struct Report {
    pub executions: u64,
    pub elapsed: Duration,
}

/// An execution that takes longer than this is a hang: the run aborts with
/// the seed and execution number.
pub const HANG_LIMIT: Duration = Duration::from_secs(30);

/// Runs `harness` for the configured time (at least one execution) and
/// prints `fuzz <name>: N executions in T s, 0 crashes`. A panicking
/// execution ends the run with a panic naming the seed and execution.
pub fn run(name: &str, harness: impl FnMut(&mut Rng)) -> Report {
    run_with(name, Settings::from_env(), harness)
}

pub fn run_with(name: &str, s: Settings, mut harness: impl FnMut(&mut Rng)) -> Report {
    let start = Instant::now();
    let current = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    // Watchdog: an execution that never ends is reported, not waited for.
    let watchdog = {
        let (current, done, name) = (current.clone(), done.clone(), name.to_string());
        let seed = s.seed;
        std::thread::spawn(move || {
            let mut last = (u64::MAX, Instant::now());
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                let c = current.load(Ordering::Relaxed);
                if c != last.0 {
                    last = (c, Instant::now());
                } else if last.1.elapsed() > HANG_LIMIT {
                    eprintln!("fuzz {name}: HANG in execution {c} (replay: FUZZ_SEED={seed:#x} FUZZ_ITER={c})");
                    std::process::abort();
                }
            }
        })
    };
    let mut executions = 0u64;
    let mut iter = s.only.unwrap_or(0);
    loop {
        current.store(iter, Ordering::Relaxed);
        let mut rng = Rng::for_execution(s.seed, iter);
        if catch_unwind(AssertUnwindSafe(|| harness(&mut rng))).is_err() {
            done.store(true, Ordering::Relaxed);
            panic!("fuzz {name}: CRASH in execution {iter} (replay: FUZZ_SEED={:#x} FUZZ_ITER={iter})", s.seed);
        }
        executions += 1;
        iter += 1;
        if s.only.is_some() || start.elapsed() >= s.duration {
            break;
        }
    }
    done.store(true, Ordering::Relaxed);
    let _ = watchdog.join();
    let elapsed = start.elapsed();
    println!("fuzz {name}: {executions} executions in {:.1} s, 0 crashes (seed {:#x})", elapsed.as_secs_f64(), s.seed);
    Report { executions, elapsed }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_input() {
        let a = Rng::for_execution(7, 3).bytes(32);
        let b = Rng::for_execution(7, 3).bytes(32);
        assert_eq!(a, b);
        assert_ne!(a, Rng::for_execution(7, 4).bytes(32));
    }

    #[test]
    fn mutate_respects_max_len() {
        let mut r = Rng::new(1);
        let mut d = vec![0u8; 100];
        for _ in 0..10_000 {
            mutate(&mut r, &mut d, 300);
            assert!(d.len() <= 300);
        }
    }

    #[test]
    fn a_panicking_harness_fails_the_run() {
        let s = Settings { duration: Duration::from_millis(50), seed: 1, only: None };
        let r = catch_unwind(|| run_with("selftest", s, |rng| assert!(rng.below(100) != 42, "found it")));
        assert!(r.is_err());
    }
}
