//! Boot benchmark: Mantle vs Debian's Linux under QEMU TCG.
//!
//! `cargo run -p image-builder --example bench_boot -- [--runs N] [--iso PATH]`
//!
//! Without `--iso`, uses `target/mantle/mantle.iso` if it exists, otherwise
//! builds a minimal GRUB ISO around the kernel under `target/bench/`.
use std::path::PathBuf;

fn main() {
    let mut runs = 5;
    let mut iso: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => {
                runs = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--iso" => iso = Some(args.next().unwrap_or_else(|| usage()).into()),
            _ => usage(),
        }
    }
    if let Err(e) = run(runs, iso) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(runs: usize, iso: Option<PathBuf>) -> Result<(), String> {
    let kernel = image_builder::kernel::build_kernel(true)?;
    let default_iso = image_builder::kernel::workspace_root().join("target/mantle/mantle.iso");
    let iso = match iso {
        Some(p) => p,
        None if default_iso.is_file() => default_iso,
        None => image_builder::bench::make_mantle_iso(&kernel)?,
    };
    image_builder::bench::bench_boot(&iso, &kernel, runs)
}

fn usage() -> ! {
    eprintln!("usage: bench_boot [--runs N] [--iso PATH]");
    std::process::exit(2)
}
