//! VM churn stress: many create/start/wait/destroy cycles of concurrent
//! guests on an SMP host, the load under which a rare host crash showed up.
//! Run on purpose (it takes minutes):
//!
//! ```text
//! CHURN_CPU=max CHURN_CPUS=2 CHURN_CYCLES=100 \
//!   cargo test -p tests --test churn -- --ignored --nocapture
//! ```
//!
//! `CHURN_QEMU_D` adds `-d <flags> -D <CHURN_QEMU_LOG>` to QEMU (e.g.
//! `cpu_reset,guest_errors`) so a host triple fault leaves the CPU state.

use std::time::{Duration, Instant};

use tests::*;

const PROMPT: &str = "# ";

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

#[test]
#[ignore = "stress run: minutes of emulation; run on purpose"]
fn vm_churn_stress() {
    let cpu = env_or("CHURN_CPU", "max");
    let cpus: u32 = env_or("CHURN_CPUS", "2").parse().unwrap();
    let cycles: u32 = env_or("CHURN_CYCLES", "100").parse().unwrap();
    let guests: u32 = env_or("CHURN_GUESTS", "2").parse().unwrap();
    let mem: u32 = env_or("CHURN_MEM", "8").parse().unwrap();
    let step = Duration::from_secs(env_or("CHURN_STEP", "180").parse().unwrap());
    // Seconds to keep a failed QEMU alive (to inspect it through a monitor
    // given in CHURN_QEMU_EXTRA, e.g. with `-action shutdown=pause`).
    let hold: u64 = env_or("CHURN_HOLD", "0").parse().unwrap();
    let lock = emulator_lock();
    let mut q = qemu_iso(iso("churn", "", &[]));
    q.cpus = cpus;
    q.cpu = cpu.clone();
    q.debug_exit = false;
    if let Ok(flags) = std::env::var("CHURN_QEMU_D") {
        let log = env_or("CHURN_QEMU_LOG", "/tmp/churn-qemu.log");
        q.extra.extend(["-d".to_string(), flags, "-D".to_string(), log]);
    }
    if let Ok(extra) = std::env::var("CHURN_QEMU_EXTRA") {
        q.extra.extend(extra.split_whitespace().map(String::from));
    }
    let mut c = q.spawn_console().unwrap_or_else(|e| panic!("{e}"));
    eprintln!("$ {}", c.command_line);
    activate_shell(&mut c, Duration::from_secs(120), step);
    let names: Vec<String> = (0..guests).map(|i| ["a", "b", "c"][i as usize % 3].to_string()).collect();
    let mut next_id = 1u32;
    let start = Instant::now();
    for cycle in 0..cycles {
        let ids: Vec<u32> = (0..guests).map(|i| next_id + i).collect();
        next_id += guests;
        let create: Vec<String> = names
            .iter()
            .map(|g| format!("vmkcli vm create --name fpu-{g} --kernel /usr/lib/mantle/guests/fpu-{g}.bin --memory {mem} >/dev/null"))
            .collect();
        let list = ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(" ");
        let cmd = format!(
            "{}; for id in {list}; do vmkcli vm start $id >/dev/null; done; for id in {list}; do vmkcli vm wait $id --timeout 120; done; for id in {list}; do vmkcli vm destroy $id >/dev/null; done",
            create.join("; ")
        );
        let out = match c.run(&cmd, PROMPT, step) {
            Ok(o) => o,
            Err(e) => {
                let log = c.log();
                if hold > 0 {
                    eprintln!("cycle {cycle}: {e}; holding QEMU for {hold} s");
                    std::thread::sleep(Duration::from_secs(hold));
                }
                if let Ok(path) = std::env::var("CHURN_SERIAL") {
                    let _ = std::fs::write(path, c.log());
                }
                let tail: String = log.lines().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
                panic!("cycle {cycle} of {cycles} ({cpu}, {cpus} CPUs, {:.0?}): {e}\n--- serial log tail ---\n{tail}", start.elapsed());
            }
        };
        let good = out.matches("debug-exit code 0x10").count();
        if good != guests as usize {
            panic!("cycle {cycle}: {good} of {guests} guests reported success: {out:?}\n--- serial log ---\n{}", c.log());
        }
        if cycle % 10 == 9 {
            eprintln!("churn: {} cycles done in {:.0?}", cycle + 1, start.elapsed());
        }
    }
    if let Ok(path) = std::env::var("CHURN_SERIAL") {
        let _ = std::fs::write(path, c.log());
    }
    eprintln!("churn: {cycles} cycles of {guests} guests ({cpu}, {cpus} CPUs) clean in {:.0?}", start.elapsed());
    drop(c);
    drop(lock);
}
