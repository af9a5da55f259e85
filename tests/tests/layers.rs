//! The kernel's layering, checked from the sources (no emulator): the
//! crate graph runs one way (abi ← library ← framework ← services), the
//! framework never names the services, its hardware sub-layer (arch, mm)
//! never names worlds, and unsafe code is allowed only where README says
//! (the framework, plus the in-kernel tests until they move). The
//! compiler enforces `deny(unsafe_code)` itself; this test makes sure the
//! attributes stay and no new exception appears. Clippy
//! (`image-builder lint`, run by `.ci/run`) checks the SAFETY comments.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

/// Every `.rs` file below `dir` (relative to the workspace root).
fn rust_files(dir: &str) -> Vec<(String, String)> {
    fn walk(p: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(p).unwrap_or_else(|e| panic!("listing {}: {e}", p.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&root().join(dir), &mut files);
    files.sort();
    let r = root();
    files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(&r).unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&p).unwrap();
            (rel, text)
        })
        .collect()
}

/// The code of a source file without `//` comments (line and doc comments),
/// so prose may mention anything.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().map(|(i, l)| (i + 1, l.split("//").next().unwrap_or(""))).filter(|(_, l)| !l.trim().is_empty())
}

/// The `path = "..."` dependencies of a manifest's `[dependencies]` table.
fn path_dependencies(manifest: &str) -> Vec<(String, String)> {
    let text = read(manifest);
    let mut in_deps = false;
    let mut deps = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            in_deps = t == "[dependencies]";
            continue;
        }
        if !in_deps {
            continue;
        }
        if let (Some((name, _)), Some(p)) = (t.split_once('='), t.split_once("path = \"")) {
            let path = p.1.split('"').next().unwrap_or("");
            deps.push((name.trim().to_string(), path.to_string()));
        }
    }
    deps
}

#[test]
fn crate_graph_runs_one_way() {
    let names = |m: &str| -> Vec<String> { path_dependencies(m).into_iter().map(|(n, _)| n).collect() };
    assert_eq!(names("vmkernel/abi/Cargo.toml"), Vec::<String>::new(), "the ABI crate depends on nothing of Mantle");
    assert_eq!(names("vmkernel/Cargo.toml"), ["mantle-abi"], "the hardware-free library depends only on the ABI crate");
    for (name, path) in path_dependencies("vmkernel/framework/Cargo.toml") {
        assert!(
            name == "vmkernel" || path.starts_with("../../drivers/"),
            "the framework depends on {name} ({path}): only the library and drivers are below it"
        );
    }
    let uw = names("userworld/Cargo.toml");
    assert!(uw.contains(&"mantle-abi".to_string()) && !uw.contains(&"vmkernel".to_string()), "user worlds use the ABI crate, never the kernel library: {uw:?}");
}

#[test]
fn framework_never_names_the_services() {
    // What only the services define (module names in vmkernel/services/src).
    let services: Vec<String> = std::fs::read_dir(root().join("vmkernel/services/src"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .filter(|s| s != "main")
        .chain(["vmkernel_services".to_string()])
        .collect();
    let mut found = Vec::new();
    for (file, text) in rust_files("vmkernel/framework/src") {
        for (n, line) in code_lines(&text) {
            for m in &services {
                if line.contains(&format!("crate::{m}::")) || line.contains(&format!("crate::{m};")) || (m == "vmkernel_services" && line.contains(m.as_str())) {
                    found.push(format!("{file}:{n}: {}", line.trim()));
                }
            }
        }
    }
    assert!(found.is_empty(), "framework code calls up into the services:\n{}", found.join("\n"));
}

#[test]
fn hardware_layer_never_names_worlds() {
    // arch and mm are below the worlds: they offer registration points
    // (tick handler, AP start, stack start function) instead.
    let mut found = Vec::new();
    for dir in ["vmkernel/framework/src/arch", "vmkernel/framework/src/mm"] {
        for (file, text) in rust_files(dir) {
            for (n, line) in code_lines(&text) {
                if line.contains("crate::world") || line.contains("world::") {
                    found.push(format!("{file}:{n}: {}", line.trim()));
                }
            }
        }
    }
    assert!(found.is_empty(), "arch/mm call up into worlds:\n{}", found.join("\n"));
}

#[test]
fn unsafe_code_stays_in_the_framework() {
    for (file, attr) in [
        ("vmkernel/src/lib.rs", "#![deny(unsafe_code)]"),
        ("vmkernel/abi/src/lib.rs", "#![deny(unsafe_code)]"),
        ("vmkernel/services/src/main.rs", "#![deny(unsafe_code)]"),
    ] {
        assert!(read(file).contains(attr), "{file} lost {attr}");
    }
    // The only exceptions in the services, each for a stated reason.
    let allowed: [(&str, &str); 2] = [
        ("vmkernel/services/src/main.rs", "mod ktest;"),
        ("vmkernel/services/src/main.rs", "extern \"C\" fn kernel_entry"),
    ];
    let mut exceptions = Vec::new();
    for (file, text) in rust_files("vmkernel/services/src") {
        let lines: Vec<&str> = text.lines().collect();
        for (n, line) in code_lines(&text) {
            if line.contains("allow(unsafe_code)") {
                // The item it applies to: the next line that is not an
                // attribute.
                let item = lines[n..].iter().find(|l| !l.trim_start().starts_with("#[")).map_or("", |l| l.trim());
                if !allowed.iter().any(|(f, i)| *f == file && item.contains(i)) {
                    exceptions.push(format!("{file}:{n}: allow(unsafe_code) on {item:?}"));
                }
            }
        }
    }
    assert!(exceptions.is_empty(), "new unsafe exceptions in the services:\n{}", exceptions.join("\n"));
    // Outside those items the services' code has no unsafe at all (the
    // compiler checks this too; here it is a fact README states).
    let mut unsafe_lines = Vec::new();
    for (file, text) in rust_files("vmkernel/services/src") {
        if file.ends_with("ktest.rs") {
            continue;
        }
        for (n, line) in code_lines(&text) {
            let l = line.trim();
            if l.contains("unsafe") && l != "#[unsafe(no_mangle)]" && !l.contains("unsafe_code") {
                unsafe_lines.push(format!("{file}:{n}: {l}"));
            }
        }
    }
    assert!(unsafe_lines.is_empty(), "unsafe code in the services:\n{}", unsafe_lines.join("\n"));
}

/// The scans themselves catch what they look for.
#[test]
fn scans_see_what_they_look_for() {
    let text = "use crate::uw::process; // crate::world in a comment\nlet x = 1;\n";
    let code: Vec<(usize, &str)> = code_lines(text).collect();
    assert_eq!(code.len(), 2);
    assert!(code[0].1.contains("crate::uw::") && !code[0].1.contains("crate::world"));
    let deps = path_dependencies("vmkernel/services/Cargo.toml");
    assert!(deps.iter().any(|(n, p)| n == "mantle-framework" && p == "../framework"), "{deps:?}");
}
