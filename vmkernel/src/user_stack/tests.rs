//! Builds stacks and decodes them back the way a C runtime's `_start` would,
//! checking every pointer lands inside the image.

use super::*;
use alloc::vec;
use alloc::vec::Vec;

const TOP: u64 = 0x7fff_ffff_f000;
const RANDOM: [u8; 16] = *b"0123456789abcdef";

struct Decoded {
    argv: Vec<Vec<u8>>,
    envp: Vec<Vec<u8>>,
    auxv: Vec<(u64, u64)>,
}

fn word(s: &InitialStack, addr: u64) -> u64 {
    assert!(
        addr >= s.rsp && addr + 8 <= s.rsp + s.image.len() as u64,
        "word {addr:#x} outside"
    );
    assert_eq!(addr % 8, 0);
    let o = (addr - s.rsp) as usize;
    u64::from_le_bytes(s.image[o..o + 8].try_into().unwrap())
}

fn cstr(s: &InitialStack, addr: u64) -> Vec<u8> {
    assert!(
        addr >= s.rsp && addr < s.rsp + s.image.len() as u64,
        "string {addr:#x} outside"
    );
    let o = (addr - s.rsp) as usize;
    let n = s.image[o..]
        .iter()
        .position(|&b| b == 0)
        .expect("NUL-terminated");
    s.image[o..o + n].to_vec()
}

fn decode(s: &InitialStack) -> Decoded {
    assert_eq!(s.rsp % 16, 0, "RSP 16-byte aligned at entry");
    let mut a = s.rsp;
    let argc = word(s, a);
    a += 8;
    let mut argv = Vec::new();
    for _ in 0..argc {
        argv.push(cstr(s, word(s, a)));
        a += 8;
    }
    assert_eq!(word(s, a), 0, "argv NULL-terminated");
    a += 8;
    let mut envp = Vec::new();
    while word(s, a) != 0 {
        envp.push(cstr(s, word(s, a)));
        a += 8;
    }
    a += 8;
    assert_eq!(a, s.auxv_addr);
    let mut auxv = Vec::new();
    loop {
        let (k, v) = (word(s, a), word(s, a + 8));
        auxv.push((k, v));
        a += 16;
        if k == AT_NULL {
            break;
        }
    }
    Decoded { argv, envp, auxv }
}

fn aux(d: &Decoded, key: u64) -> Option<u64> {
    d.auxv.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

fn facts() -> AuxFacts<'static> {
    AuxFacts {
        entry: 0x40_1bc0,
        phdr: Some(0x40_0040),
        phnum: 10,
        uid: 1000,
        euid: 1001,
        gid: 100,
        egid: 101,
        hwcap: 0x178b_fbff,
        hwcap2: 2,
        ..AuxFacts::default()
    }
}

#[test]
fn full_layout_decodes() {
    let argv: [&[u8]; 3] = [b"/bin/busybox", b"sh", b"-c"];
    let envp: [&[u8]; 2] = [b"HOME=/", b"PATH=/bin:/sbin"];
    let s = build(TOP, &argv, &envp, b"/bin/busybox", &RANDOM, &facts()).unwrap();
    assert_eq!(s.rsp + s.image.len() as u64, TOP);
    let d = decode(&s);
    assert_eq!(d.argv, argv.iter().map(|a| a.to_vec()).collect::<Vec<_>>());
    assert_eq!(d.envp, envp.iter().map(|a| a.to_vec()).collect::<Vec<_>>());

    assert_eq!(aux(&d, AT_PHDR), Some(0x40_0040));
    assert_eq!(aux(&d, AT_PHENT), Some(56));
    assert_eq!(aux(&d, AT_PHNUM), Some(10));
    assert_eq!(aux(&d, AT_PAGESZ), Some(4096));
    assert_eq!(aux(&d, AT_BASE), Some(0));
    assert_eq!(aux(&d, AT_FLAGS), Some(0));
    assert_eq!(aux(&d, AT_ENTRY), Some(0x40_1bc0));
    assert_eq!(aux(&d, AT_UID), Some(1000));
    assert_eq!(aux(&d, AT_EUID), Some(1001));
    assert_eq!(aux(&d, AT_GID), Some(100));
    assert_eq!(aux(&d, AT_EGID), Some(101));
    assert_eq!(aux(&d, AT_SECURE), Some(0));
    assert_eq!(aux(&d, AT_HWCAP), Some(0x178b_fbff));
    assert_eq!(aux(&d, AT_HWCAP2), Some(2));
    assert_eq!(aux(&d, AT_CLKTCK), Some(100));
    assert_eq!(aux(&d, AT_MINSIGSTKSZ), Some(2048));
    assert_eq!(aux(&d, AT_SYSINFO_EHDR), None, "no vDSO");
    assert_eq!(d.auxv.last(), Some(&(AT_NULL, 0)));
    let keys: Vec<u64> = d.auxv.iter().map(|(k, _)| *k).collect();
    let mut unique = keys.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), keys.len(), "no key twice");
    assert_eq!(keys.len(), 20);

    // AT_RANDOM points at the 16 bytes; AT_EXECFN and AT_PLATFORM at strings.
    let r = aux(&d, AT_RANDOM).unwrap();
    assert_eq!(r, s.random_addr);
    let o = (r - s.rsp) as usize;
    assert_eq!(&s.image[o..o + 16], &RANDOM);
    assert_eq!(cstr(&s, aux(&d, AT_EXECFN).unwrap()), b"/bin/busybox");
    assert_eq!(cstr(&s, aux(&d, AT_PLATFORM).unwrap()), b"x86_64");

    // The /proc ranges cover exactly the strings, in order.
    assert_eq!(word(&s, s.rsp + 8), s.arg_start);
    let args = &s.image[(s.arg_start - s.rsp) as usize..(s.arg_end - s.rsp) as usize];
    assert_eq!(args, b"/bin/busybox\0sh\0-c\0");
    let env = &s.image[(s.env_start - s.rsp) as usize..(s.env_end - s.rsp) as usize];
    assert_eq!(env, b"HOME=/\0PATH=/bin:/sbin\0");
    // The end marker: the last 8 bytes below the top are zero.
    assert!(s.image[s.image.len() - 8..].iter().all(|&b| b == 0));
    assert_eq!(s.execfn_addr + 13 + 8, TOP);
}

#[test]
fn rsp_aligned_for_every_shape() {
    for top in [TOP, TOP - 8, TOP - 3, 0x7ffd_0000_0009] {
        for argc in 1..6usize {
            for envc in 0..4usize {
                let owned: Vec<Vec<u8>> = (0..argc + envc).map(|i| vec![b'a'; i * 3 + 1]).collect();
                let refs: Vec<&[u8]> = owned.iter().map(|v| v.as_slice()).collect();
                let (argv, envp) = refs.split_at(argc);
                let s = build(top, argv, envp, b"x", &RANDOM, &facts()).unwrap();
                assert_eq!(s.rsp % 16, 0);
                assert!(s.rsp + s.image.len() as u64 <= top);
                let d = decode(&s);
                assert_eq!(d.argv.len(), argc);
                assert_eq!(d.envp.len(), envc);
                assert_eq!(s.random_addr % 16, 0);
                // Nothing between the auxv and AT_RANDOM overlaps.
                assert!(s.auxv_addr + 16 * d.auxv.len() as u64 <= s.random_addr);
            }
        }
    }
}

#[test]
fn without_phdr_the_trio_is_omitted() {
    let f = AuxFacts {
        phdr: None,
        ..facts()
    };
    let d = decode(&build(TOP, &[b"prog"], &[], b"prog", &RANDOM, &f).unwrap());
    assert_eq!(aux(&d, AT_PHDR), None);
    assert_eq!(aux(&d, AT_PHNUM), None);
    assert_eq!(aux(&d, AT_PHENT), None);
    assert!(aux(&d, AT_RANDOM).is_some());
}

#[test]
fn empty_argv_gets_an_empty_argv0() {
    let s = build(TOP, &[], &[b"A=1"], b"/init", &RANDOM, &facts()).unwrap();
    let d = decode(&s);
    assert_eq!(d.argv, vec![Vec::<u8>::new()]);
    assert_eq!(d.envp, vec![b"A=1".to_vec()]);
}

#[test]
fn limits() {
    let big = vec![b'x'; 64 * 1024];
    // Two 64 KiB strings plus pointers exceed 128 KiB.
    assert_eq!(
        build(TOP, &[&big, &big], &[], b"p", &RANDOM, &facts()).err(),
        Some(E2BIG)
    );
    assert_eq!(
        build(TOP, &[&big], &[&big], b"p", &RANDOM, &facts()).err(),
        Some(E2BIG)
    );
    // Just under the limit is fine.
    let fits = vec![b'x'; MAX_ARG_BYTES - 8 - 1];
    let s = build(TOP, &[&fits], &[], b"p", &RANDOM, &facts()).unwrap();
    assert_eq!(decode(&s).argv[0].len(), fits.len());
    let over = vec![b'x'; MAX_ARG_BYTES - 8];
    assert_eq!(
        build(TOP, &[&over], &[], b"p", &RANDOM, &facts()).err(),
        Some(E2BIG)
    );
    // Many tiny strings: the pointers count too.
    let many: Vec<&[u8]> = (0..MAX_ARG_BYTES / 9 + 1).map(|_| &b""[..]).collect();
    assert_eq!(
        build(TOP, &many, &[], b"p", &RANDOM, &facts()).err(),
        Some(E2BIG)
    );
    // Embedded NULs cannot be represented.
    assert_eq!(
        build(TOP, &[b"a\0b"], &[], b"p", &RANDOM, &facts()).err(),
        Some(EINVAL)
    );
    assert_eq!(
        build(TOP, &[b"a"], &[b"X=\0"], b"p", &RANDOM, &facts()).err(),
        Some(EINVAL)
    );
    assert_eq!(
        build(TOP, &[b"a"], &[], b"p\0", &RANDOM, &facts()).err(),
        Some(EINVAL)
    );
}

#[test]
fn from_a_real_load_plan() {
    use crate::elf::{LoadPlan, Mapping};
    let plan = LoadPlan {
        elf_type: crate::elf::ET_DYN,
        mappings: vec![Mapping {
            start: 0x5555_5555_4000,
            end: 0x5555_5555_5000,
            prot: 5,
            file_offset: 0,
            file_len: 0x1000,
        }],
        entry: 0x5555_5555_4100,
        load_bias: 0x5555_5555_4000,
        phdr: Some(0x5555_5555_4040),
        phnum: 12,
        phentsize: 56,
        brk: 0x5555_5555_5000,
        stack_executable: false,
        tls: None,
    };
    let f = AuxFacts::from_plan(&plan);
    let d = decode(&build(TOP, &[b"hostd"], &[], b"/bin/hostd", &RANDOM, &f).unwrap());
    assert_eq!(aux(&d, AT_ENTRY), Some(0x5555_5555_4100));
    assert_eq!(aux(&d, AT_PHDR), Some(0x5555_5555_4040));
    assert_eq!(aux(&d, AT_PHNUM), Some(12));
    assert_eq!(aux(&d, AT_UID), Some(0));
}
