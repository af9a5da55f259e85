//! The bounded HTTP fuzz run of `hostd::fuzz` against a running hostd (the
//! hostd image test runs it against hostd on Mantle through the forwarded
//! port). Prints a summary; exits 1 with every failure printed when hostd
//! answered with a 5xx, a non-JSON API error or not at all.
//!
//!     cargo run -p hostd --example apifuzz -- --addr 127.0.0.1:8443 \
//!         --cacert host.crt --password PW --requests 300

use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// hostd's address, host:port.
    #[arg(long)]
    addr: String,
    /// hostd's certificate (PEM): the only one trusted.
    #[arg(long)]
    cacert: std::path::PathBuf,
    #[arg(long, default_value = "root")]
    user: String,
    #[arg(long)]
    password: String,
    #[arg(long, default_value_t = 300)]
    requests: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// A kernel on hostd's host for the VMs the fuzzer defines.
    #[arg(long, default_value = "/usr/lib/mantle/guests/idle.bin")]
    kernel: String,
    #[arg(long, default_value = "datastore1")]
    datastore: String,
    /// Seconds one answer may take.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

fn main() {
    let a = Args::parse();
    let cert_pem = match std::fs::read(&a.cacert) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("apifuzz: {}: {e}", a.cacert.display());
            std::process::exit(2);
        }
    };
    let o = hostd::fuzz::FuzzOptions {
        addr: a.addr,
        server_name: "localhost".into(),
        cert_pem,
        user: a.user,
        password: a.password,
        requests: a.requests,
        seed: a.seed,
        kernel: a.kernel,
        datastore: a.datastore,
        timeout: Duration::from_secs(a.timeout),
    };
    let started = Instant::now();
    match hostd::fuzz::run(&o) {
        Ok(r) => {
            println!("apifuzz: seed {}: {} in {:.0} s", o.seed, r.summary(), started.elapsed().as_secs_f64());
            if !r.failures.is_empty() {
                println!("{}", r.failures.join("\n"));
                std::process::exit(1);
            }
        }
        Err(e) => {
            println!("apifuzz: {e}");
            std::process::exit(1);
        }
    }
}
