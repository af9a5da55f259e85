// Link arguments for the guest kernel only (`-bins`): the host build of the
// library and its unit tests link normally.
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
}
