// Link arguments for the kernel image only (`-bins`). The linker script
// belongs to the framework, whose boot code it lays out; the boot entry
// points live in the framework's library, so they are named as undefined
// symbols to make the linker take them from it.
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    let script = format!("{dir}/../framework/linker.ld");
    println!("cargo:rerun-if-changed={script}");
    println!("cargo:rerun-if-changed=build.rs");
    for arg in [
        "-nostartfiles",
        "-nostdlib",
        "-static",
        "-no-pie",
        "-Wl,--build-id=none",
        "-Wl,-n",
        "-Wl,--gc-sections",
        "-Wl,--undefined=mb2_entry",
        "-Wl,--undefined=pvh_entry",
        &format!("-Wl,-T,{script}"),
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
}
