//! Synthetic ELF files for every accept/reject path, then real static
//! binaries built with the host's C compiler.

use super::*;
use crate::linux_abi::errno::ENOEXEC;
use alloc::vec;
use alloc::vec::Vec;

#[derive(Clone, Copy)]
struct Ph {
    p_type: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
    memsz: u64,
    align: u64,
}

fn load(flags: u32, offset: u64, vaddr: u64, filesz: u64, memsz: u64) -> Ph {
    Ph {
        p_type: PT_LOAD,
        flags,
        offset,
        vaddr,
        filesz,
        memsz,
        align: 0x1000,
    }
}
fn other(p_type: u32, flags: u32) -> Ph {
    Ph {
        p_type,
        flags,
        offset: 0,
        vaddr: 0,
        filesz: 0,
        memsz: 0,
        align: 0,
    }
}

/// A 64-byte header, the program headers at 64, file bytes filled with a
/// pattern (byte i = i*7) up to `len`.
fn build(e_type: u16, entry: u64, phs: &[Ph], len: usize) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
    f[..64].fill(0);
    f[0..4].copy_from_slice(b"\x7fELF");
    f[4] = 2;
    f[5] = 1;
    f[6] = 1;
    f[16..18].copy_from_slice(&e_type.to_le_bytes());
    f[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[24..32].copy_from_slice(&entry.to_le_bytes());
    f[32..40].copy_from_slice(&64u64.to_le_bytes());
    f[52..54].copy_from_slice(&64u16.to_le_bytes());
    f[54..56].copy_from_slice(&56u16.to_le_bytes());
    f[56..58].copy_from_slice(&(phs.len() as u16).to_le_bytes());
    for (i, p) in phs.iter().enumerate() {
        let o = 64 + i * 56;
        f[o..o + 4].copy_from_slice(&p.p_type.to_le_bytes());
        f[o + 4..o + 8].copy_from_slice(&p.flags.to_le_bytes());
        f[o + 8..o + 16].copy_from_slice(&p.offset.to_le_bytes());
        f[o + 16..o + 24].copy_from_slice(&p.vaddr.to_le_bytes());
        f[o + 24..o + 32].copy_from_slice(&p.vaddr.to_le_bytes());
        f[o + 32..o + 40].copy_from_slice(&p.filesz.to_le_bytes());
        f[o + 40..o + 48].copy_from_slice(&p.memsz.to_le_bytes());
        f[o + 48..o + 56].copy_from_slice(&p.align.to_le_bytes());
    }
    f
}

/// BusyBox-like: R header page, RX text, RW data+bss starting mid-page.
fn exec_phs() -> Vec<Ph> {
    vec![
        load(PF_R, 0, 0x40_0000, 0x200, 0x200),
        load(PF_R | PF_X, 0x1000, 0x40_1000, 0x1800, 0x1800),
        load(PF_R | PF_W, 0x2e10, 0x40_3e10, 0x100, 0x3000),
        other(PT_GNU_STACK, PF_R | PF_W),
        Ph {
            p_type: PT_TLS,
            flags: PF_R,
            offset: 0x2e10,
            vaddr: 0x40_3e10,
            filesz: 0x10,
            memsz: 0x40,
            align: 8,
        },
    ]
}

fn parse_bytes(f: &[u8]) -> Result<LoadPlan, ElfError> {
    parse(f, &LoadOptions::default())
}

#[test]
fn static_exec_plan() {
    let f = build(ET_EXEC, 0x40_1100, &exec_phs(), 0x3000);
    let p = parse_bytes(&f).unwrap();
    assert_eq!(p.elf_type, ET_EXEC);
    assert_eq!(p.load_bias, 0);
    assert_eq!(p.entry, 0x40_1100);
    assert_eq!(
        p.phdr,
        Some(0x40_0040),
        "table at e_phoff inside the first segment"
    );
    assert_eq!((p.phnum, p.phentsize), (5, 56));
    assert_eq!(
        p.mappings,
        vec![
            Mapping {
                start: 0x40_0000,
                end: 0x40_1000,
                prot: PROT_READ,
                file_offset: 0,
                file_len: 0x200
            },
            Mapping {
                start: 0x40_1000,
                end: 0x40_3000,
                prot: PROT_READ | PROT_EXEC,
                file_offset: 0x1000,
                file_len: 0x1800
            },
            // Data starts mid-page: the page's head comes from the file too.
            Mapping {
                start: 0x40_3000,
                end: 0x40_7000,
                prot: PROT_READ | PROT_WRITE,
                file_offset: 0x2000,
                file_len: 0xf10
            },
        ]
    );
    assert_eq!(p.mappings[2].zero_len(), 0x4000 - 0xf10);
    assert_eq!(p.brk, 0x40_7000, "end of .bss (0x406e10) rounded up");
    assert!(!p.stack_executable);
    assert_eq!(
        p.tls,
        Some(TlsInfo {
            vaddr: 0x40_3e10,
            filesz: 0x10,
            memsz: 0x40,
            align: 8
        })
    );
}

#[test]
fn fill_copies_file_bytes_then_zeroes() {
    let f = build(ET_EXEC, 0x40_1100, &exec_phs(), 0x3000);
    let p = parse_bytes(&f).unwrap();
    let m = p.mappings[2];
    let mut page = vec![0xaau8; 4096];
    m.fill(&f[..], 0, &mut page).unwrap();
    assert_eq!(&page[..0xf10], &f[0x2000..0x2f10]);
    assert!(page[0xf10..].iter().all(|&b| b == 0), ".bss zeroed");
    // A later page is all zero; an out-of-range request fails.
    m.fill(&f[..], 0x1000, &mut page).unwrap();
    assert!(page.iter().all(|&b| b == 0));
    assert!(m.fill(&f[..], 0x3001, &mut page).is_err());
    // The first mapping shows the ELF header, as AT_PHDR relies on.
    p.mappings[0].fill(&f[..], 0, &mut page).unwrap();
    assert_eq!(&page[..4], b"\x7fELF");
    assert_eq!(&page[0x40..0x44], &PT_LOAD.to_le_bytes());
    // A fill straddling the end of the file bytes.
    let mut small = [0xaau8; 0x20];
    p.mappings[0].fill(&f[..], 0x1f0, &mut small).unwrap();
    assert_eq!(&small[..0x10], &f[0x1f0..0x200]);
    assert!(small[0x10..].iter().all(|&b| b == 0));
}

fn pie_phs() -> Vec<Ph> {
    vec![
        load(PF_R, 0, 0, 0x300, 0x300),
        load(PF_R | PF_X, 0x1000, 0x1000, 0x800, 0x800),
        load(PF_R | PF_W, 0x1800, 0x2800, 0x100, 0x1000),
        other(PT_DYNAMIC, PF_R | PF_W),
        other(PT_GNU_STACK, PF_R | PF_W | PF_X),
    ]
}

#[test]
fn static_pie_is_rebased() {
    let f = build(ET_DYN, 0x1010, &pie_phs(), 0x2000);
    let p = parse_bytes(&f).unwrap();
    let b = DEFAULT_DYN_BASE;
    assert_eq!(p.elf_type, ET_DYN);
    assert_eq!(p.load_bias, b);
    assert_eq!(p.entry, b + 0x1010);
    assert_eq!(p.phdr, Some(b + 0x40));
    assert_eq!(p.mappings[0].start, b);
    assert_eq!(p.mappings[2].start, b + 0x2000);
    assert_eq!(p.mappings[2].file_offset, 0x1000);
    assert_eq!(p.mappings[2].file_len, 0x900);
    assert_eq!(p.brk, b + 0x4000);
    assert!(p.stack_executable);
    assert_eq!(p.tls, None);

    // Another base; and a big p_align rounds the base up to it.
    let p = parse(
        &f[..],
        &LoadOptions {
            dyn_base: 0x7000_0000_0000,
        },
    )
    .unwrap();
    assert_eq!(p.load_bias, 0x7000_0000_0000);
    let mut phs = pie_phs();
    phs[0].align = 0x20_0000;
    let f = build(ET_DYN, 0x1010, &phs, 0x2000);
    let p = parse(
        &f[..],
        &LoadOptions {
            dyn_base: 0x5555_5555_4000,
        },
    )
    .unwrap();
    assert_eq!(p.load_bias, 0x5555_5560_0000);
    // A base too high for the image.
    let err = parse(
        &f[..],
        &LoadOptions {
            dyn_base: USER_END - 0x1000,
        },
    )
    .unwrap_err();
    assert!(matches!(err, ElfError::BadAddress(_)));
}

#[test]
fn pt_phdr_wins_when_mapped() {
    let mut phs = pie_phs();
    phs.insert(
        0,
        Ph {
            p_type: PT_PHDR,
            flags: PF_R,
            offset: 64,
            vaddr: 64,
            filesz: 6 * 56,
            memsz: 6 * 56,
            align: 8,
        },
    );
    let f = build(ET_DYN, 0x1010, &phs, 0x2000);
    let p = parse(
        &f[..],
        &LoadOptions {
            dyn_base: 0x10_0000,
        },
    )
    .unwrap();
    assert_eq!(p.phdr, Some(0x10_0040));
    // A PT_PHDR pointing nowhere is ignored in favour of the computed address.
    phs[0].vaddr = 0x9000;
    let f = build(ET_DYN, 0x1010, &phs, 0x2000);
    let p = parse(
        &f[..],
        &LoadOptions {
            dyn_base: 0x10_0000,
        },
    )
    .unwrap();
    assert_eq!(p.phdr, Some(0x10_0040));
}

#[test]
fn phdrs_not_mapped_gives_no_at_phdr() {
    // The only segment starts after the program-header table in the file.
    let phs = [load(PF_R | PF_X, 0x1000, 0x40_1000, 0x100, 0x100)];
    let f = build(ET_EXEC, 0x40_1000, &phs, 0x1100);
    assert_eq!(parse_bytes(&f).unwrap().phdr, None);
}

#[test]
fn unsorted_segments_are_sorted_and_zero_size_skipped() {
    let mut phs = exec_phs();
    phs.swap(0, 2);
    phs.push(load(PF_R, 0, 0x90_0000, 0, 0));
    let f = build(ET_EXEC, 0x40_1100, &phs, 0x3000);
    let p = parse_bytes(&f).unwrap();
    assert_eq!(p.mappings.len(), 3);
    assert!(p.mappings.windows(2).all(|w| w[0].end <= w[1].start));
    assert_eq!(p.brk, 0x40_7000);
}

fn err(f: &[u8]) -> ElfError {
    parse_bytes(f).unwrap_err()
}

#[test]
fn header_rejections() {
    let good = build(ET_EXEC, 0x40_1100, &exec_phs(), 0x3000);
    assert_eq!(err(&good[..63]), ElfError::TooShort);
    assert_eq!(err(b""), ElfError::TooShort);
    let mut f = good.clone();
    f[0] = b'#';
    assert_eq!(err(&f), ElfError::BadMagic);
    let mut f = good.clone();
    f[4] = 1;
    assert_eq!(err(&f), ElfError::NotElf64(1));
    let mut f = good.clone();
    f[5] = 2;
    assert_eq!(err(&f), ElfError::NotLittleEndian(2));
    let mut f = good.clone();
    f[6] = 0;
    assert_eq!(err(&f), ElfError::BadVersion(0));
    let mut f = good.clone();
    f[18..20].copy_from_slice(&183u16.to_le_bytes()); // aarch64
    assert_eq!(err(&f), ElfError::WrongMachine(183));
    let mut f = good.clone();
    f[16..18].copy_from_slice(&1u16.to_le_bytes()); // ET_REL
    assert_eq!(err(&f), ElfError::NotExecutable(1));
    let mut f = good.clone();
    f[54..56].copy_from_slice(&32u16.to_le_bytes());
    assert_eq!(err(&f), ElfError::BadPhentsize(32));
    let mut f = good.clone();
    f[56..58].copy_from_slice(&0u16.to_le_bytes());
    assert_eq!(err(&f), ElfError::BadPhnum(0));
    let mut f = good.clone();
    f[56..58].copy_from_slice(&0xffffu16.to_le_bytes()); // PN_XNUM
    assert_eq!(err(&f), ElfError::BadPhnum(0xffff));
    let mut f = good.clone();
    f[32..40].copy_from_slice(&0x2ff0u64.to_le_bytes());
    assert_eq!(err(&f), ElfError::PhdrsOutsideFile);
    let mut f = good.clone();
    f[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_eq!(err(&f), ElfError::PhdrsOutsideFile);
    for e in [
        ElfError::TooShort,
        ElfError::DynamicallyLinked,
        ElfError::Overlap(1, 2),
    ] {
        assert_eq!(e.errno(), ENOEXEC);
    }
    assert_eq!(ElfError::Io(5).errno(), 5);
}

#[test]
fn dynamically_linked_is_refused_with_a_clear_reason() {
    let mut phs = exec_phs();
    phs.insert(
        0,
        Ph {
            p_type: PT_INTERP,
            flags: PF_R,
            offset: 0x200,
            vaddr: 0x40_0200,
            filesz: 28,
            memsz: 28,
            align: 1,
        },
    );
    let f = build(ET_EXEC, 0x40_1100, &phs, 0x3000);
    let e = err(&f);
    assert_eq!(e, ElfError::DynamicallyLinked);
    assert!(alloc::format!("{e}").contains("dynamically linked"));
}

#[test]
fn segment_rejections() {
    let case = |edit: &dyn Fn(&mut Vec<Ph>), entry: u64| {
        let mut phs = exec_phs();
        edit(&mut phs);
        err(&build(ET_EXEC, entry, &phs, 0x3000))
    };
    assert_eq!(
        case(&|p| p[1].filesz = 0x1900, 0x40_1100),
        ElfError::FileszExceedsMemsz(1)
    );
    assert_eq!(
        case(&|p| p[2].filesz = 0x1000, 0x40_1100),
        ElfError::SegmentOutsideFile(2)
    );
    assert_eq!(
        case(&|p| p[2].offset = u64::MAX - 10, 0x40_1100),
        ElfError::SegmentOutsideFile(2)
    );
    assert_eq!(
        case(&|p| p[1].offset = 0x1008, 0x40_1100),
        ElfError::Misaligned(1)
    );
    assert_eq!(
        case(&|p| p[1].align = 0x1800, 0x40_1100),
        ElfError::Misaligned(1)
    );
    assert_eq!(
        case(&|p| p[1].memsz = u64::MAX, 0x40_1100),
        ElfError::BadAddress(1)
    );
    // Kernel half, non-canonical, the last user page, and the NULL area.
    let kernel = 0xffff_8000_0000_0000;
    assert_eq!(
        case(
            &|p| {
                p[0].vaddr = kernel;
            },
            0x40_1100
        ),
        ElfError::BadAddress(0)
    );
    assert_eq!(
        case(
            &|p| {
                p[0].vaddr = 0x8000_0000_0000;
            },
            0x40_1100
        ),
        ElfError::BadAddress(0)
    );
    assert_eq!(
        case(
            &|p| {
                p[0].vaddr = USER_END;
            },
            0x40_1100
        ),
        ElfError::BadAddress(0)
    );
    assert_eq!(
        case(
            &|p| {
                p[0].vaddr = 0x1000;
                p[0].offset = 0x1000
            },
            0x40_1100
        ),
        ElfError::BadAddress(0)
    );
    // Overlaps: outright, and sharing a page.
    assert_eq!(
        case(&|p| p[1].vaddr = 0x40_0000, 0x40_0100),
        ElfError::Overlap(0, 1)
    );
    assert_eq!(
        case(
            &|p| {
                p[2].vaddr = 0x40_2e10;
            },
            0x40_1100
        ),
        ElfError::Overlap(1, 2)
    );
    // Entry outside every segment (in the .bss page gap or unmapped).
    assert_eq!(
        case(&|_| {}, 0x50_0000),
        ElfError::EntryOutsideSegments(0x50_0000)
    );
    assert_eq!(
        case(&|p| p.retain(|p| p.p_type != PT_LOAD), 0x40_1100),
        ElfError::NoLoadSegments
    );
}

#[test]
fn read_errors_propagate() {
    struct Broken;
    impl ReadAt for Broken {
        fn size(&self) -> u64 {
            1 << 20
        }
        fn read_exact_at(&self, _: u64, _: &mut [u8]) -> Result<(), i32> {
            Err(5)
        }
    }
    assert_eq!(
        parse(&Broken, &LoadOptions::default()),
        Err(ElfError::Io(5))
    );
}

// ---- real binaries from the host toolchain ----

extern crate std;
use std::path::PathBuf;
use std::process::Command;

/// Compiles a tiny C program with `cc <flags>`; `None` (with a note) if the
/// compiler or the static C library is missing.
fn compile(name: &str, flags: &[&str]) -> Option<Vec<u8>> {
    let dir =
        std::env::temp_dir().join(alloc::format!("mantle-elf-{}-{}", std::process::id(), name));
    std::fs::create_dir_all(&dir).ok()?;
    let src = dir.join("t.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\nint main(){puts(\"hi\");return 0;}\n",
    )
    .ok()?;
    let out: PathBuf = dir.join("t");
    let status = Command::new("cc")
        .args(flags)
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .status();
    match status {
        Ok(s) if s.success() => std::fs::read(&out).ok(),
        other => {
            std::println!("note: skipping `cc {}` test: {:?}", flags.join(" "), other);
            None
        }
    }
}

fn file_entry(f: &[u8]) -> u64 {
    u64::from_le_bytes(f[24..32].try_into().unwrap())
}

/// Checks a plan against the file: the entry bytes land where the plan says.
fn check_real(f: &[u8], p: &LoadPlan) {
    assert!(p.mappings.len() >= 2);
    assert!(p.mappings.windows(2).all(|w| w[0].end <= w[1].start));
    assert!(
        p.mappings
            .iter()
            .all(|m| m.start % PAGE_SIZE == 0 && m.end % PAGE_SIZE == 0)
    );
    assert!(p.mappings.iter().any(|m| m.prot & PROT_EXEC != 0));
    assert!(p.mappings.iter().any(|m| m.prot & PROT_WRITE != 0));
    assert_eq!(p.brk, p.mappings.last().unwrap().end);
    assert!(!p.stack_executable);
    assert!(p.tls.is_some(), "glibc static binaries have PT_TLS");
    let phdr = p.phdr.expect("AT_PHDR");
    // The program headers in memory are the file's.
    let m = p
        .mappings
        .iter()
        .find(|m| phdr >= m.start && phdr < m.end)
        .unwrap();
    let mut mem = vec![0u8; 56];
    m.fill(f, phdr - m.start, &mut mem).unwrap();
    let phoff = u64::from_le_bytes(f[32..40].try_into().unwrap()) as usize;
    assert_eq!(&mem[..], &f[phoff..phoff + 56]);
    // The bytes at the entry point are the file's code there.
    let m = p
        .mappings
        .iter()
        .find(|m| p.entry >= m.start && p.entry < m.end)
        .unwrap();
    assert!(m.prot & PROT_EXEC != 0);
    let mut code = [0u8; 16];
    m.fill(f, p.entry - m.start, &mut code).unwrap();
    let off = (m.file_offset + (p.entry - m.start)) as usize;
    assert_eq!(&code, &f[off..off + 16]);
}

#[test]
fn real_static_exec() {
    let Some(f) = compile("exec", &["-static", "-O1"]) else {
        return;
    };
    let p = parse_bytes(&f).unwrap();
    assert_eq!(p.elf_type, ET_EXEC);
    assert_eq!(p.load_bias, 0);
    assert_eq!(p.entry, file_entry(&f));
    assert_eq!(p.mappings[0].start, 0x40_0000);
    assert_eq!(p.phdr, Some(0x40_0040));
    check_real(&f, &p);
}

#[test]
fn real_static_pie() {
    let Some(f) = compile("pie", &["-static-pie", "-fPIE", "-O1"]) else {
        return;
    };
    let p = parse_bytes(&f).unwrap();
    assert_eq!(p.elf_type, ET_DYN);
    assert_eq!(p.load_bias, DEFAULT_DYN_BASE);
    assert_eq!(p.entry, DEFAULT_DYN_BASE + file_entry(&f));
    assert_eq!(p.phdr, Some(DEFAULT_DYN_BASE + 0x40));
    check_real(&f, &p);
}

#[test]
fn real_dynamic_is_refused() {
    let Some(f) = compile("dyn", &["-O1"]) else {
        return;
    };
    assert_eq!(parse_bytes(&f), Err(ElfError::DynamicallyLinked));
}

#[test]
fn real_busybox_if_present() {
    // Debian's busybox-static, when installed on the host (or unpacked there).
    let candidates = ["/bin/busybox", "/usr/bin/busybox"];
    let Some(f) = candidates.iter().find_map(|p| std::fs::read(p).ok()) else {
        std::println!("note: no busybox on this host; skipped");
        return;
    };
    match parse_bytes(&f) {
        Ok(p) => {
            assert_eq!(p.entry, file_entry(&f) + p.load_bias);
            assert!(p.phdr.is_some());
        }
        // A dynamically linked busybox (Debian's `busybox` package) is refused.
        Err(e) => assert_eq!(e, ElfError::DynamicallyLinked, "busybox"),
    }
}
