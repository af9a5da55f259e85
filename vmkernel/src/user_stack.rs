//! The initial user stack of a new program (what execve leaves for `_start`),
//! laid out as Linux's `create_elf_tables` does, per the System V x86-64 ABI:
//!
//! ```text
//!   top →  8 zero bytes (end marker)
//!          execfn string (AT_EXECFN)
//!          argv strings, then envp strings      ← arg_start .. env_end
//!          (align 16) platform string "x86_64"  (AT_PLATFORM)
//!          (align 16) 16 random bytes           (AT_RANDOM)
//!          padding so RSP ends 16-byte aligned
//!          auxv pairs … AT_NULL, 0
//!          envp[0..envc], NULL
//!          argv[0..argc], NULL
//!   RSP →  argc
//! ```
//! No vDSO, so no AT_SYSINFO_EHDR: programs then call clock_gettime directly.

use crate::elf::LoadPlan;
use crate::linux_abi::auxv::*;
use crate::linux_abi::errno::{E2BIG, EINVAL};
use alloc::vec::Vec;

/// Bytes of argument and environment strings plus their pointers that execve
/// accepts (Linux allows a quarter of the stack limit; 128 KiB keeps the
/// initial stack small and is what the brief asks for).
pub const MAX_ARG_BYTES: usize = 128 * 1024;
/// Longest single string (Linux MAX_ARG_STRLEN: 32 pages).
pub const MAX_ARG_STRLEN: usize = 32 * 4096;

/// Inputs besides the strings. `Default` gives root credentials, no
/// hardware-capability bits, 4 KiB pages and 100 Hz ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuxFacts<'a> {
    pub entry: u64,
    /// Program headers in memory; `None` omits AT_PHDR, AT_PHENT and
    /// AT_PHNUM together (glibc wants both or neither).
    pub phdr: Option<u64>,
    pub phent: u64,
    pub phnum: u64,
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    pub egid: u32,
    /// CPUID.1:EDX, as Linux reports for x86.
    pub hwcap: u64,
    pub hwcap2: u64,
    pub platform: &'a [u8],
    pub page_size: u64,
    pub clock_ticks: u64,
    /// Smallest signal stack the kernel's signal frame fits in.
    pub minsigstksz: u64,
}

impl Default for AuxFacts<'_> {
    fn default() -> Self {
        Self {
            entry: 0,
            phdr: None,
            phent: 56,
            phnum: 0,
            uid: 0,
            euid: 0,
            gid: 0,
            egid: 0,
            hwcap: 0,
            hwcap2: 0,
            platform: b"x86_64",
            page_size: 4096,
            clock_ticks: 100,
            minsigstksz: crate::linux_abi::signal::MINSIGSTKSZ,
        }
    }
}

impl AuxFacts<'_> {
    /// The facts that come from the executable.
    pub fn from_plan(plan: &LoadPlan) -> Self {
        Self {
            entry: plan.entry,
            phdr: plan.phdr,
            phent: plan.phentsize as u64,
            phnum: plan.phnum as u64,
            ..Self::default()
        }
    }
}

/// The built stack: `image` is the memory `[rsp, top)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitialStack {
    pub image: Vec<u8>,
    pub rsp: u64,
    /// The argv and envp strings (for /proc/<pid>/cmdline and environ).
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
    pub random_addr: u64,
    pub execfn_addr: u64,
    pub auxv_addr: u64,
}

const fn align_down(a: u64, n: u64) -> u64 {
    a & !(n - 1)
}

/// Builds the initial stack for a program whose stack ends at `top`.
/// Fails with E2BIG when the strings are too large, EINVAL when one
/// contains a NUL byte. An empty argv becomes `[""]`, as on Linux ≥ 5.18,
/// so `argv[0]` is never NULL.
pub fn build(
    top: u64,
    argv: &[&[u8]],
    envp: &[&[u8]],
    execfn: &[u8],
    random: &[u8; 16],
    facts: &AuxFacts,
) -> Result<InitialStack, i32> {
    const EMPTY: &[&[u8]] = &[b""];
    let argv = if argv.is_empty() { EMPTY } else { argv };
    let all = argv.iter().chain(envp.iter());
    let mut strings = 0usize;
    for s in all.clone() {
        if s.contains(&0) {
            return Err(EINVAL);
        }
        if s.len() >= MAX_ARG_STRLEN {
            return Err(E2BIG);
        }
        strings += s.len() + 1;
    }
    if strings + 8 * (argv.len() + envp.len()) > MAX_ARG_BYTES {
        return Err(E2BIG);
    }
    if execfn.contains(&0) || facts.platform.contains(&0) || execfn.len() >= MAX_ARG_STRLEN {
        return Err(EINVAL);
    }

    // Addresses, top down.
    let top = align_down(top, 16);
    let execfn_addr = top - 8 - (execfn.len() as u64 + 1);
    let arg_start = execfn_addr - strings as u64;
    let arg_len: u64 = argv.iter().map(|s| s.len() as u64 + 1).sum();
    let env_start = arg_start + arg_len;
    let platform_addr = align_down(arg_start, 16) - (facts.platform.len() as u64 + 1);
    let random_addr = align_down(platform_addr - 16, 16);

    let mut auxv: Vec<(u64, u64)> = Vec::with_capacity(24);
    auxv.push((AT_MINSIGSTKSZ, facts.minsigstksz));
    auxv.push((AT_HWCAP, facts.hwcap));
    auxv.push((AT_PAGESZ, facts.page_size));
    auxv.push((AT_CLKTCK, facts.clock_ticks));
    if let Some(phdr) = facts.phdr {
        auxv.push((AT_PHDR, phdr));
        auxv.push((AT_PHENT, facts.phent));
        auxv.push((AT_PHNUM, facts.phnum));
    }
    auxv.push((AT_BASE, 0)); // no interpreter
    auxv.push((AT_FLAGS, 0));
    auxv.push((AT_ENTRY, facts.entry));
    auxv.push((AT_UID, facts.uid as u64));
    auxv.push((AT_EUID, facts.euid as u64));
    auxv.push((AT_GID, facts.gid as u64));
    auxv.push((AT_EGID, facts.egid as u64));
    auxv.push((AT_SECURE, 0));
    auxv.push((AT_RANDOM, random_addr));
    auxv.push((AT_HWCAP2, facts.hwcap2));
    auxv.push((AT_EXECFN, execfn_addr));
    auxv.push((AT_PLATFORM, platform_addr));
    auxv.push((AT_NULL, 0));

    let words = 1 + (argv.len() + 1) + (envp.len() + 1) + 2 * auxv.len();
    let rsp = align_down(random_addr - 8 * words as u64, 16);
    let mut image = alloc::vec![0u8; (top - rsp) as usize];
    let at = |addr: u64| (addr - rsp) as usize;
    let put = |image: &mut Vec<u8>, addr: u64, bytes: &[u8]| {
        image[at(addr)..at(addr) + bytes.len()].copy_from_slice(bytes);
    };

    // Strings (the NULs are already there: the image starts zeroed).
    put(&mut image, execfn_addr, execfn);
    put(&mut image, platform_addr, facts.platform);
    put(&mut image, random_addr, random);
    let mut ptrs: Vec<u64> = Vec::with_capacity(words);
    ptrs.push(argv.len() as u64);
    let mut p = arg_start;
    for (i, s) in argv.iter().chain(envp.iter()).enumerate() {
        put(&mut image, p, s);
        ptrs.push(p);
        p += s.len() as u64 + 1;
        if i + 1 == argv.len() {
            ptrs.push(0); // end of argv
        }
    }
    ptrs.push(0); // end of envp
    let auxv_addr = rsp + 8 * ptrs.len() as u64;
    for (k, v) in &auxv {
        ptrs.push(*k);
        ptrs.push(*v);
    }
    debug_assert_eq!(ptrs.len(), words);
    for (i, w) in ptrs.iter().enumerate() {
        put(&mut image, rsp + 8 * i as u64, &w.to_le_bytes());
    }

    Ok(InitialStack {
        image,
        rsp,
        arg_start,
        arg_end: env_start,
        env_start,
        env_end: execfn_addr,
        random_addr,
        execfn_addr,
        auxv_addr,
    })
}

#[cfg(test)]
mod tests;
