//! A small Rust std program that exercises what ordinary programs lean on —
//! threads, channels, files, clocks, randomness — and says what it saw.
//! The image tests put it into an image with `image-builder iso --add` and
//! run it from the shell, the way an administrator adds a tool.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn main() {
    let mut problems = Vec::new();

    // Threads: a shared counter and a channel.
    let counter = Arc::new(Mutex::new(0u64));
    let (tx, rx) = mpsc::channel();
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let c = counter.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    *c.lock().unwrap() += 1;
                }
                tx.send(i).unwrap();
                i * 2
            })
        })
        .collect();
    drop(tx);
    let joined: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let received: u64 = rx.iter().sum();
    let total = *counter.lock().unwrap();
    if total != 8000 || joined != 56 || received != 28 {
        problems.push(format!("threads: counter {total}, joined {joined}, received {received}"));
    }

    // Files.
    let dir = std::env::temp_dir().join(format!("stdprobe-{}", std::process::id()));
    let file_ok = (|| -> std::io::Result<bool> {
        std::fs::create_dir_all(&dir)?;
        let a = dir.join("a.txt");
        std::fs::write(&a, b"mantle")?;
        let b = dir.join("b.txt");
        std::fs::rename(&a, &b)?;
        let back = std::fs::read(&b)?;
        let listed = std::fs::read_dir(&dir)?.count();
        std::fs::remove_dir_all(&dir)?;
        Ok(back == b"mantle" && listed == 1 && !dir.exists())
    })();
    if !matches!(file_ok, Ok(true)) {
        problems.push(format!("files: {file_ok:?}"));
    }

    // Time: sleeps last at least what was asked; the wall clock is sane.
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(50));
    let slept = t0.elapsed();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    if slept < Duration::from_millis(50) || now < 1_577_836_800 {
        problems.push(format!("time: slept {slept:?}, epoch {now}"));
    }

    // Randomness: /dev/urandom and std's randomly seeded hashing.
    let mut a = [0u8; 32];
    let mut b = [0u8; 32];
    let rand_ok = std::fs::File::open("/dev/urandom").and_then(|mut f| {
        f.read_exact(&mut a)?;
        f.read_exact(&mut b)
    });
    let h: HashMap<u32, u32> = (0..100).map(|i| (i, i * i)).collect();
    if rand_ok.is_err() || a == b || a == [0; 32] || h[&9] != 81 {
        problems.push(format!("random: {rand_ok:?}"));
    }

    if problems.is_empty() {
        println!("stdprobe: ok (8 threads, files, {} ms sleep, random)", slept.as_millis());
    } else {
        for p in &problems {
            println!("stdprobe: FAIL {p}");
        }
        std::process::exit(1);
    }
}
