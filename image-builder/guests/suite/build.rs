// Link arguments for the guest kernel only (`-bins`): the host build of the
// library and its unit tests link normally. Also writes the interrupt entry
// stubs (256 near-identical stubs plus their address table are easier to
// emit here than with assembler loop macros).
use std::fmt::Write;

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    println!("cargo:rerun-if-changed={dir}/linker.ld");
    println!("cargo:rerun-if-changed=build.rs");
    for arg in [
        "-nostartfiles",
        "-nostdlib",
        "-static",
        "-no-pie",
        "-Wl,--build-id=none",
        "-Wl,-n",
        "-Wl,--gc-sections",
        &format!("-Wl,-T,{dir}/linker.ld"),
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    // Exceptions for which the CPU pushes an error code.
    const WITH_ERROR: [u32; 10] = [8, 10, 11, 12, 13, 14, 17, 21, 29, 30];
    let mut s = String::from(".section .text.isr, \"ax\"\n.code64\n");
    for v in 0..256u32 {
        writeln!(s, "isr_stub_{v}:").unwrap();
        if !WITH_ERROR.contains(&v) {
            s.push_str("    pushq $0\n");
        }
        writeln!(s, "    pushq ${v}\n    jmp isr_common").unwrap();
    }
    s.push_str(".section .rodata.isr_table, \"a\"\n.balign 8\n.global isr_table\nisr_table:\n");
    for v in 0..256u32 {
        writeln!(s, "    .quad isr_stub_{v}").unwrap();
    }
    std::fs::write(format!("{}/isr_stubs.s", std::env::var("OUT_DIR").unwrap()), s).unwrap();
}
