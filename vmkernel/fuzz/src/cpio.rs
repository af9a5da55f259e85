//! The boot archive: the cpio newc reader (`vmkernel::cpio`), the archive
//! lister (`rootfs::list`) and unpacking into a size-limited ramfs
//! (`vfs::ramfs::load::load_cpio`), fed mutated real archives (written
//! with the project's own `cpio::Writer`: files, directories, symlinks,
//! nested paths, `..`, odd modes) and random bytes; and the compressed
//! form the ISO carries (`lz4_frame::unpack` through `rootfs::unpack`),
//! mutated frames with and without their checksums.

use std::sync::Arc;

use vmkernel::cpio::{self, Writer};
use vmkernel::vfs::ramfs::RamFs;
use vmkernel::vfs::ramfs::load::load_cpio;
use vmkernel::vfs::types::{FixedClock, Timespec};

use crate::{Rng, mutate};

const NAMES: &[&str] = &["bin", "etc", "usr/lib/mantle", "a/b/c/d", ".", "..", "./x", "a/../b", "/abs", "", "sbin/init", "dev/console"];
const MODES: &[u32] = &[0o100644, 0o100755, 0o040755, 0o120777, 0o020666, 0o060660, 0o010644, 0o140755, 0o104755, 0, 0o170000];

/// A valid archive of random entries.
pub fn archive(rng: &mut Rng) -> Vec<u8> {
    let mut w = Writer::new();
    for _ in 0..rng.below(12) {
        let mut name = String::from(*rng.pick(NAMES));
        for _ in 0..rng.below(3) {
            name.push('/');
            let part: &str = rng.pick::<&str>(NAMES);
            name.push_str(part);
        }
        if rng.chance(1, 16) {
            name = "n".repeat(rng.range(200, 300) as usize);
        }
        let mode = if rng.chance(7, 8) { *rng.pick(MODES) } else { rng.u32() };
        let n = rng.below(300) as usize;
        let data = if mode & 0o170000 == 0o120000 { rng.pick(NAMES).as_bytes().to_vec() } else { rng.bytes(n) };
        w.add(&name, mode, rng.below(3) as u32, rng.below(3) as u32, rng.u32(), &data);
    }
    w.finish()
}

pub fn one(rng: &mut Rng) {
    let bytes = if rng.chance(1, 8) {
        let n = rng.below(600) as usize;
        let mut b = rng.bytes(n);
        if b.len() >= 6 && rng.bool() {
            b[..6].copy_from_slice(b"070701");
        }
        b
    } else {
        let mut b = archive(rng);
        if rng.chance(3, 4) {
            let max = b.len() + 512;
            mutate(rng, &mut b, max);
        }
        b
    };
    // A quarter of the cases go through the LZ4 frame first; without
    // checksums most mutations reach the block decoder itself.
    let bytes = if rng.chance(1, 4) {
        let checksums = rng.bool();
        let info = lz4_flex::frame::FrameInfo::new()
            .content_size(Some(bytes.len() as u64))
            .block_size(*rng.pick(&[lz4_flex::frame::BlockSize::Max64KB, lz4_flex::frame::BlockSize::Max4MB]))
            .block_checksums(checksums)
            .content_checksum(checksums);
        let mut e = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
        std::io::Write::write_all(&mut e, &bytes).expect("in-memory LZ4 encoding");
        let mut packed = e.finish().expect("in-memory LZ4 encoding");
        if rng.chance(3, 4) {
            let max = packed.len() + 64;
            mutate(rng, &mut packed, max);
        }
        match vmkernel::rootfs::unpack(&packed, *rng.pick(&[1 << 20, 100, 0])) {
            Ok(cpio) => cpio.into_owned(),
            Err(_) => return,
        }
    } else {
        bytes
    };
    let mut count = 0usize;
    for e in cpio::entries(&bytes) {
        let Ok(e) = e else { break };
        let _ = (e.is_dir(), e.is_file(), e.is_symlink(), vmkernel::rootfs::mode_string(e.mode));
        count += 1;
        assert!(count <= bytes.len() / 110 + 1, "more entries than headers fit");
    }
    let _ = vmkernel::rootfs::list(&bytes, |_| {});
    let fs = RamFs::with_limit(Arc::new(FixedClock(Timespec { sec: 0, nsec: 0 })), *rng.pick(&[1 << 20, 4096, 0]));
    let _ = load_cpio(&fs, &bytes);
}

#[cfg(test)]
mod tests {
    #[test]
    fn fuzz_boot_archive() {
        crate::run("cpio", super::one);
    }
}
