// Generates the interrupt entry stubs (`arch/trap.rs` includes them). The
// link arguments for the kernel image are the services crate's build script
// (`vmkernel/services/build.rs`), which uses this crate's `linker.ld`.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    write_trap_stubs();
}

/// Interrupt entry stubs for all 256 vectors, as assembly text included by
/// `arch/trap.rs` (generated: 256 near-identical stubs are easier to emit
/// than to express with assembler loop macros).
fn write_trap_stubs() {
    use std::fmt::Write;
    // Exceptions for which the CPU pushes an error code.
    const WITH_ERROR: [u32; 10] = [8, 10, 11, 12, 13, 14, 17, 21, 29, 30];
    let mut s = String::new();
    s.push_str(".section .text.trap_stubs, \"ax\"\n.balign 16\n");
    for v in 0..256u32 {
        writeln!(s, "trap_stub_{v}:").unwrap();
        if !WITH_ERROR.contains(&v) {
            s.push_str("    push $0\n");
        }
        writeln!(s, "    push ${v}\n    jmp trap_common\n    .balign 16").unwrap();
    }
    s.push_str(".section .rodata.trap_stub_table, \"a\"\n.balign 8\n.global trap_stub_table\ntrap_stub_table:\n");
    for v in 0..256u32 {
        writeln!(s, "    .quad trap_stub_{v}").unwrap();
    }
    let out = std::env::var("OUT_DIR").unwrap();
    std::fs::write(format!("{out}/trap_stubs.s"), s).unwrap();
}
