//! The user-world ELF loader (`vmkernel::elf`) and the initial stack built
//! from its plan (`user_stack`): what `execve` does with a file a user
//! world names. Inputs are mutated real executables (this test binary, and
//! BusyBox and the static user worlds when the machine has them), mutated
//! synthetic static and static-PIE images, and random bytes.

use std::sync::OnceLock;

use vmkernel::elf::{LoadOptions, LoadPlan, ReadAt, parse};
use vmkernel::user_stack::{self, AuxFacts};

use crate::{Rng, mutate};

const PAGE: u64 = 4096;

/// Program-header types worth producing.
const PT: &[u32] = &[1, 1, 1, 1, 2, 3, 4, 6, 7, 0x6474_e551, 0x6474_e552, 0x6474_e550, 0, 0x7000_0000];

/// A synthetic x86-64 executable: an ELF header, `phdrs` program headers
/// right after it, and `body` bytes of contents.
pub fn synthetic_elf64(rng: &mut Rng, class64: bool, machine: u16) -> Vec<u8> {
    let phnum = rng.range(1, 8) as usize;
    let body_len = rng.range(0, 3 * PAGE) as usize;
    let ehsize = if class64 { 64 } else { 52 };
    let phentsize = if class64 { 56 } else { 32 };
    let phoff = ehsize;
    let mut f = vec![0u8; phoff + phnum * phentsize];
    f[0..4].copy_from_slice(b"\x7fELF");
    f[4] = if class64 { 2 } else { 1 };
    f[5] = 1;
    f[6] = 1;
    let et: u16 = if rng.bool() { 2 } else { 3 };
    let base: u64 = if et == 2 { 0x40_0000 } else { 0 };
    f[16..18].copy_from_slice(&et.to_le_bytes());
    f[18..20].copy_from_slice(&machine.to_le_bytes());
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    let entry = base + rng.below(3 * PAGE);
    if class64 {
        f[24..32].copy_from_slice(&entry.to_le_bytes());
        f[32..40].copy_from_slice(&(phoff as u64).to_le_bytes());
        f[52..54].copy_from_slice(&(ehsize as u16).to_le_bytes());
        f[54..56].copy_from_slice(&(phentsize as u16).to_le_bytes());
        f[56..58].copy_from_slice(&(phnum as u16).to_le_bytes());
    } else {
        f[24..28].copy_from_slice(&(entry as u32).to_le_bytes());
        f[28..32].copy_from_slice(&(phoff as u32).to_le_bytes());
        f[40..42].copy_from_slice(&(ehsize as u16).to_le_bytes());
        f[42..44].copy_from_slice(&(phentsize as u16).to_le_bytes());
        f[44..46].copy_from_slice(&(phnum as u16).to_le_bytes());
    }
    let file_len = (f.len() + body_len) as u64;
    let mut vaddr = base;
    for i in 0..phnum {
        let p_type = if i == 0 { 1 } else { *rng.pick(PT) };
        let flags = rng.below(8) as u32;
        let offset = if rng.chance(7, 8) { rng.below(file_len.max(1)) & !(PAGE - 1) } else { rng.interesting_u64() };
        let filesz = if rng.chance(7, 8) { rng.below(file_len.saturating_sub(offset).max(1)) } else { rng.interesting_u64() };
        let memsz = if rng.chance(7, 8) { filesz.wrapping_add(rng.below(4 * PAGE)) } else { rng.interesting_u64() };
        let align = *rng.pick(&[PAGE, PAGE, 0x20_0000, 0, 1, 3, 1 << 40]);
        let va = if rng.chance(7, 8) { vaddr.wrapping_add(offset & (PAGE - 1)) } else { rng.interesting_u64() };
        vaddr = (va.wrapping_add(memsz).wrapping_add(PAGE - 1) & !(PAGE - 1)).wrapping_add(rng.below(2) * PAGE);
        let o = phoff + i * phentsize;
        let h = &mut f[o..o + phentsize];
        h[0..4].copy_from_slice(&p_type.to_le_bytes());
        if class64 {
            h[4..8].copy_from_slice(&flags.to_le_bytes());
            h[8..16].copy_from_slice(&offset.to_le_bytes());
            h[16..24].copy_from_slice(&va.to_le_bytes());
            h[24..32].copy_from_slice(&va.to_le_bytes());
            h[32..40].copy_from_slice(&filesz.to_le_bytes());
            h[40..48].copy_from_slice(&memsz.to_le_bytes());
            h[48..56].copy_from_slice(&align.to_le_bytes());
        } else {
            h[4..8].copy_from_slice(&(offset as u32).to_le_bytes());
            h[8..12].copy_from_slice(&(va as u32).to_le_bytes());
            h[12..16].copy_from_slice(&(va as u32).to_le_bytes());
            h[16..20].copy_from_slice(&(filesz as u32).to_le_bytes());
            h[20..24].copy_from_slice(&(memsz as u32).to_le_bytes());
            h[24..28].copy_from_slice(&flags.to_le_bytes());
            h[28..32].copy_from_slice(&(align as u32).to_le_bytes());
        }
    }
    f.extend(rng.bytes(body_len));
    f
}

/// A file whose first bytes were edited: `head` replaces the original's
/// first `orig_head` bytes, and the whole is cut or zero-extended to
/// `size`. Real executables are megabytes; copying them per execution
/// would cost more than parsing them.
struct Patched<'a> {
    head: Vec<u8>,
    orig: &'a [u8],
    orig_head: usize,
    size: u64,
}

impl Patched<'_> {
    fn byte(&self, pos: u64) -> u8 {
        let p = pos as usize;
        if p < self.head.len() {
            self.head[p]
        } else {
            let q = p - self.head.len() + self.orig_head;
            self.orig.get(q).copied().unwrap_or(0)
        }
    }
}

impl ReadAt for Patched<'_> {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), i32> {
        let end = offset.checked_add(buf.len() as u64).ok_or(5)?;
        if end > self.size {
            return Err(5);
        }
        let h = self.head.len() as u64;
        if offset >= h && self.orig_head as u64 + (end - h) <= self.orig.len() as u64 {
            let s = (offset - h) as usize + self.orig_head;
            buf.copy_from_slice(&self.orig[s..s + buf.len()]);
        } else {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = self.byte(offset + i as u64);
            }
        }
        Ok(())
    }
}

/// Real executables on this machine: this test binary always, the static
/// user worlds and BusyBox when they have been built or installed.
fn real_seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut paths = vec![std::env::current_exe().ok()];
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        paths.push(Some(root.join("target/userworld-static/x86_64-unknown-linux-gnu/release/init")));
        paths.push(Some("/bin/busybox".into()));
        paths.into_iter().flatten().filter_map(|p| std::fs::read(p).ok()).filter(|b| b.len() >= 64).collect()
    })
}

/// Checks a plan's promises and exercises everything exec does with it.
fn use_plan(file: &(impl ReadAt + ?Sized), plan: &LoadPlan, rng: &mut Rng) {
    let mut prev_end = 0u64;
    for m in &plan.mappings {
        assert!(m.start < m.end, "empty or inverted mapping {m:?}");
        assert!(m.start % PAGE == 0 && m.end % PAGE == 0, "unaligned mapping {m:?}");
        assert!(m.start >= prev_end, "overlapping or unsorted mappings {:?}", plan.mappings);
        assert!(m.file_len <= m.len(), "file bytes beyond the mapping {m:?}");
        prev_end = m.end;
        // Fill the first, the last and a random page, as the page-fault
        // and eager-load paths do, plus a request past the end.
        let pages = m.len() / PAGE;
        let mut page = [0u8; PAGE as usize];
        for p in [0, pages - 1, rng.below(pages)] {
            let _ = m.fill(file, p * PAGE, &mut page);
        }
        assert!(m.fill(file, m.len(), &mut page).is_err(), "a fill past the mapping's end succeeded");
        let _ = m.fill(file, rng.interesting_u64(), &mut page[..rng.below(PAGE) as usize]);
    }
    let facts = AuxFacts::from_plan(plan);
    let random = [7u8; 16];
    let argv: [&[u8]; 2] = [b"/bin/prog", b"arg"];
    let _ = user_stack::build(vmkernel::elf::USER_END, &argv, &[b"A=B"], b"/bin/prog", &random, &facts);
}

pub fn one(rng: &mut Rng) {
    let opts = LoadOptions { dyn_base: if rng.chance(7, 8) { 0x5555_5555_4000 } else { rng.interesting_u64() } };
    let reals = real_seeds();
    match rng.below(4) {
        0 if !reals.is_empty() => {
            let orig = rng.pick(reals);
            let orig_head = orig.len().min(if rng.bool() { 128 } else { 8192 });
            let mut head = orig[..orig_head].to_vec();
            mutate(rng, &mut head, orig_head + 512);
            let size = if rng.chance(7, 8) { orig.len() as u64 } else { rng.below(orig.len() as u64 + 8192) };
            let file = Patched { head, orig, orig_head, size };
            if let Ok(plan) = parse(&file, &opts) {
                use_plan(&file, &plan, rng);
            }
        }
        1 => {
            let n = rng.below(512) as usize;
            let mut b = rng.bytes(n);
            if b.len() >= 4 && rng.bool() {
                b[..4].copy_from_slice(b"\x7fELF");
            }
            if let Ok(plan) = parse(b.as_slice(), &opts) {
                use_plan(b.as_slice(), &plan, rng);
            }
        }
        _ => {
            let mut b = synthetic_elf64(rng, true, 62);
            if rng.chance(3, 4) {
                let max = b.len() + 256;
                mutate(rng, &mut b, max);
            }
            if let Ok(plan) = parse(b.as_slice(), &opts) {
                use_plan(b.as_slice(), &plan, rng);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fuzz_user_elf_loader() {
        crate::run("elf", super::one);
    }

    /// The harness reaches the interesting part: some generated images
    /// parse, so the plan checks run.
    #[test]
    fn synthetic_images_often_parse() {
        let mut ok = 0;
        for i in 0..2000 {
            let mut rng = crate::Rng::new(i);
            let b = super::synthetic_elf64(&mut rng, true, 62);
            ok += vmkernel::elf::parse(b.as_slice(), &Default::default()).is_ok() as u32;
        }
        assert!(ok > 100, "only {ok} of 2000 synthetic images parse");
    }
}
