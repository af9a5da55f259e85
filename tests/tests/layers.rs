//! The kernel's layering, checked from the sources (no emulator): the
//! crate graph runs one way (abi ← library ← framework ← services), the
//! framework never names the services, its hardware sub-layer (arch, mm)
//! never names worlds, and unsafe code is allowed only where README says
//! (the framework, plus one marker-trait assertion in vmk-storage). The
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
    let allowed: [(&str, &str); 1] = [("vmkernel/services/src/main.rs", "extern \"C\" fn kernel_entry")];
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
        for (n, line) in code_lines(&text) {
            let l = line.trim();
            if l.contains("unsafe") && l != "#[unsafe(no_mangle)]" && !l.contains("unsafe_code") {
                unsafe_lines.push(format!("{file}:{n}: {l}"));
            }
        }
    }
    assert!(unsafe_lines.is_empty(), "unsafe code in the services:\n{}", unsafe_lines.join("\n"));
}

/// The hardware-free crates have no unsafe code, except one stated
/// assertion: a FAT datastore may move between CPUs as a whole
/// (`vmkernel/storage/src/fat/mod.rs` says why).
#[test]
fn hardware_free_crates_have_no_unsafe_code() {
    let allowed = [("vmkernel/storage/src/fat/mod.rs", "unsafe impl Send for Datastore {}")];
    let mut found = Vec::new();
    for (dir, lib) in [
        ("vmkernel/src", "vmkernel/src/lib.rs"),
        ("vmkernel/abi/src", "vmkernel/abi/src/lib.rs"),
        ("vmkernel/net/src", "vmkernel/net/src/lib.rs"),
        ("vmkernel/storage/src", "vmkernel/storage/src/lib.rs"),
    ] {
        assert!(read(lib).contains("#![deny(unsafe_code)]"), "{lib} lost #![deny(unsafe_code)]");
        // Host-only unit tests (`tests.rs`) may build fake physical memory.
        for (file, text) in rust_files(dir).into_iter().filter(|(f, _)| !f.ends_with("/tests.rs")) {
            let lines: Vec<&str> = text.lines().collect();
            for (n, line) in code_lines(&text) {
                let l = line.trim();
                let item = if l.contains("allow(unsafe_code)") { lines.get(n).map_or("", |x| x.trim()) } else { l };
                if (l.contains("unsafe") && !l.contains("deny(unsafe_code)") && !l.contains("forbid(unsafe_code)"))
                    && !allowed.iter().any(|(f, i)| *f == file && item == *i)
                {
                    found.push(format!("{file}:{n}: {l}"));
                }
            }
        }
    }
    assert!(found.is_empty(), "unsafe code in the hardware-free crates:\n{}", found.join("\n"));
}

/// The top-level modules a line of code names through `crate::` (also
/// inside `crate::{a, b::c}` groups).
fn crate_modules_named(line: &str) -> Vec<String> {
    modules_named_after(line, "crate::")
}

/// The modules a line names right after `prefix` (`crate::`, `super::`,
/// `crate::arch::`), also inside `{a, b::c}` groups.
fn modules_named_after(line: &str, prefix: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find(prefix) {
        // `crate::` inside `crate::arch::` is not a `super::`-style match
        // of another prefix: only whole path starts count.
        let whole = rest[..i].chars().next_back().is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'));
        rest = &rest[i + prefix.len()..];
        if !whole {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // The group's top-level items (nested groups belong to theirs).
            let (mut depth, mut item) = (0, String::new());
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        names.push(item.trim().split("::").next().unwrap_or("").to_string());
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            names.push(item.trim().split("::").next().unwrap_or("").to_string());
        } else {
            names.push(rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect());
        }
    }
    names.retain(|n| !n.is_empty() && n != "self");
    names
}

/// Module-level dependency graph of a crate's top-level modules (files and
/// folders under `src`): module -> (module it names, where).
fn module_graph(src: &str, root_file: &str) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>> {
    let module_of = |file: &str| -> String {
        let rel = file.strip_prefix(src).unwrap_or(file).trim_start_matches('/');
        rel.split('/').next().unwrap_or("").trim_end_matches(".rs").to_string()
    };
    let files = rust_files(src);
    let modules: std::collections::BTreeSet<String> =
        files.iter().filter(|(f, _)| !f.ends_with(root_file)).map(|(f, _)| module_of(f)).collect();
    let mut graph: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>> =
        modules.iter().map(|m| (m.clone(), Default::default())).collect();
    for (file, text) in files.iter().filter(|(f, _)| !f.ends_with(root_file)) {
        let from = module_of(file);
        for (n, line) in code_lines(text) {
            for to in crate_modules_named(line) {
                if to != from && modules.contains(&to) {
                    graph.get_mut(&from).unwrap().entry(to).or_insert_with(|| format!("{file}:{n}"));
                }
            }
        }
    }
    graph
}

/// Dependency graph of the submodules of a folder module (`src/<folder>/`,
/// e.g. the framework's `arch`): which of its siblings each names, through
/// `super::` or `crate::<folder>::`.
fn submodule_graph(src: &str, folder: &str) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>> {
    let dir = format!("{src}/{folder}");
    let module_of = |file: &str| -> String {
        let rel = file.strip_prefix(dir.as_str()).unwrap_or(file).trim_start_matches('/');
        rel.split('/').next().unwrap_or("").trim_end_matches(".rs").to_string()
    };
    let files: Vec<(String, String)> = rust_files(&dir).into_iter().filter(|(f, _)| module_of(f) != "mod").collect();
    let modules: std::collections::BTreeSet<String> = files.iter().map(|(f, _)| module_of(f)).collect();
    let mut graph: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>> =
        modules.iter().map(|m| (m.clone(), Default::default())).collect();
    let in_folder = format!("crate::{folder}::");
    for (file, text) in &files {
        let from = module_of(file);
        for (n, line) in code_lines(text) {
            for to in modules_named_after(line, "super::").into_iter().chain(modules_named_after(line, &in_folder)) {
                if to != from && modules.contains(&to) {
                    graph.get_mut(&from).unwrap().entry(to).or_insert_with(|| format!("{file}:{n}"));
                }
            }
        }
    }
    graph
}

/// A cycle in `graph`, as the modules along it with where each names the
/// next, if there is one.
fn find_cycle(graph: &std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        graph: &std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
        state: &mut std::collections::BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(m.to_string(), 1);
        path.push(m.to_string());
        for (to, at) in &graph[m] {
            match state.get(to.as_str()).copied().unwrap_or(0) {
                1 => {
                    let start = path.iter().position(|p| p == to).unwrap_or(0);
                    let mut cycle: Vec<String> = path[start..].to_vec();
                    cycle.push(format!("{to} (named at {at})"));
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(to, graph, state, path) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        state.insert(m.to_string(), 2);
        None
    }
    let mut state = std::collections::BTreeMap::new();
    for m in graph.keys() {
        if state.get(m.as_str()).copied().unwrap_or(0) == 0
            && let Some(c) = visit(m, graph, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

#[test]
fn framework_modules_have_no_cycles() {
    // The order they form: cpu at the bottom; mm, time; acpi, backtrace;
    // arch (traps, APICs, SMP); console, power; worlds, hv and the rest.
    // A lower module that must reach a higher one offers a registration
    // point instead (e.g. `arch::trap::set_kernel_fault_handler`).
    let graph = module_graph("vmkernel/framework/src", "vmkernel/framework/src/lib.rs");
    assert!(graph.len() > 10 && graph.contains_key("arch") && graph.contains_key("cpu"), "{:?}", graph.keys());
    assert!(graph["arch"].contains_key("mm"), "the scan should see arch -> mm: {:?}", graph["arch"]);
    if let Some(cycle) = find_cycle(&graph) {
        panic!("module cycle in the framework: {}", cycle.join(" -> "));
    }
}

#[test]
fn service_modules_have_no_cycles() {
    // E.g. uw below net (the network services register the /proc/net
    // files with `uw::files`), nic below net (`nic::set_interrupt_hook`),
    // syscall and vmk_calls on top.
    let graph = module_graph("vmkernel/services/src", "vmkernel/services/src/main.rs");
    assert!(graph.contains_key("uw") && graph.contains_key("syscall"), "{:?}", graph.keys());
    assert!(graph["syscall"].contains_key("uw"), "the scan should see syscall -> uw: {:?}", graph["syscall"]);
    if let Some(cycle) = find_cycle(&graph) {
        panic!("module cycle in the services: {}", cycle.join(" -> "));
    }
}

/// Inside the framework's folders too (the arch code, the VMX/SVM
/// backends, memory): a lower submodule that must reach a higher one gets
/// a registration point (e.g. the trap layer's
/// `set_unclaimed_interrupt_ack`, which the APIC driver fills in).
#[test]
fn framework_submodules_have_no_cycles() {
    let arch = submodule_graph("vmkernel/framework/src", "arch");
    assert!(arch.contains_key("trap") && arch.contains_key("apic"), "{:?}", arch.keys());
    assert!(arch["apic"].contains_key("trap"), "the scan should see apic -> trap: {:?}", arch["apic"]);
    for folder in ["arch", "hv", "mm"] {
        let graph = submodule_graph("vmkernel/framework/src", folder);
        assert!(!graph.is_empty(), "no submodules found in the framework's {folder}");
        if let Some(cycle) = find_cycle(&graph) {
            panic!("module cycle in the framework's {folder}: {}", cycle.join(" -> "));
        }
    }
}

/// The scans themselves catch what they look for.
#[test]
fn scans_see_what_they_look_for() {
    let text = "use crate::uw::process; // crate::world in a comment\nlet x = 1;\n";
    let code: Vec<(usize, &str)> = code_lines(text).collect();
    assert_eq!(code.len(), 2);
    assert!(code[0].1.contains("crate::uw::") && !code[0].1.contains("crate::world"));
    assert_eq!(crate_modules_named("use crate::{mm, time::{a, b}}; crate::arch::cpu::x(); crate::{self}"), ["mm", "time", "arch"]);
    let line = "use super::{cpu, trap}; crate::arch::apic::eoi(); vmkernel::arch_x::y";
    assert_eq!(modules_named_after(line, "super::"), ["cpu", "trap"]);
    assert_eq!(modules_named_after(line, "crate::arch::"), ["apic"]);
    let mut g: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>> = Default::default();
    g.entry("a".into()).or_default().insert("b".into(), "a.rs:1".into());
    g.entry("b".into()).or_default().insert("c".into(), "b.rs:1".into());
    g.entry("c".into()).or_default();
    assert_eq!(find_cycle(&g), None);
    g.get_mut("c").unwrap().insert("a".into(), "c.rs:7".into());
    assert_eq!(find_cycle(&g), Some(vec!["a".into(), "b".into(), "c".into(), "a (named at c.rs:7)".into()]));
    let deps = path_dependencies("vmkernel/services/Cargo.toml");
    assert!(deps.iter().any(|(n, p)| n == "mantle-framework" && p == "../framework"), "{deps:?}");
}
