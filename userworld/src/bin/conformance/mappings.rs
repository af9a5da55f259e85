//! MAP_SHARED file mappings written back to the file, madvise(MADV_DONTNEED)
//! and mremap.

use crate::harness::*;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

fn map(len: usize, prot: i32, flags: i32, fd: i32, off: i64) -> Result<*mut u8, String> {
    // SAFETY: a fresh mapping chosen by the kernel touches no existing memory.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, off) };
    if p == libc::MAP_FAILED { Err(format!("mmap: {}", errno_name(errno()))) } else { Ok(p.cast()) }
}

const RW: i32 = libc::PROT_READ | libc::PROT_WRITE;

fn unmap(p: *mut u8, len: usize) -> Result<i64, i32> {
    // SAFETY: callers unmap only mappings they made and no longer reference.
    sys(unsafe { libc::munmap(p.cast(), len) })
}

/// The bytes at `p..p+len` (the caller's mapping).
fn bytes<'a>(p: *mut u8, len: usize) -> &'a mut [u8] {
    // SAFETY: callers pass a live read/write mapping of at least `len` bytes.
    unsafe { std::slice::from_raw_parts_mut(p, len) }
}

fn msync(p: *mut u8, len: usize, flags: i32) -> Result<i64, i32> {
    // SAFETY: msync only reads the mapping.
    sys(unsafe { libc::msync(p.cast(), len, flags) })
}

fn madvise(p: *mut u8, len: usize, advice: i32) -> Result<i64, i32> {
    // SAFETY: the advice given drops only pages the caller no longer needs.
    sys(unsafe { libc::madvise(p.cast(), len, advice) })
}

fn mremap(p: *mut u8, old: usize, new: usize, flags: i32, to: *mut u8) -> Result<*mut u8, i32> {
    // SAFETY: callers remap only their own mappings and use the returned address.
    let r = unsafe { libc::mremap(p.cast(), old, new, flags, to) };
    if r == libc::MAP_FAILED { Err(errno()) } else { Ok(r.cast()) }
}

/// A file of `pages` pages, page i filled with b'a' + i.
fn make_file(p: &Path, pages: usize) -> Result<std::os::fd::OwnedFd, String> {
    let ps = page_size();
    let data: Vec<u8> = (0..pages * ps).map(|i| b'a' + (i / ps) as u8).collect();
    std::fs::write(p, &data).map_err(|e| format!("write {}: {e}", p.display()))?;
    open(p, libc::O_RDWR, 0).map_err(|e| format!("open: {}", errno_name(e)))
}

fn pread(fd: &impl AsRawFd, off: usize, len: usize) -> Result<Vec<u8>, String> {
    let mut b = vec![0u8; len];
    // SAFETY: `b` is valid for writes of `len` bytes.
    let n = unsafe { libc::pread(fd.as_raw_fd(), b.as_mut_ptr().cast(), len, off as i64) };
    if n != len as isize {
        return Err(format!("pread: {n} ({})", errno_name(errno())));
    }
    Ok(b)
}

pub fn run(r: &mut Runner, dir: &Path) {
    let ps = page_size();

    let d = dir.to_path_buf();
    r.check("mmap_shared_file_msync_munmap_write_back", || {
        let path = d.join("shared-wb");
        let f = make_file(&path, 2)?;
        let p = map(2 * ps, RW, libc::MAP_SHARED, f.as_raw_fd(), 0)?;
        let m = bytes(p, 2 * ps);
        m[..5].copy_from_slice(b"hello");
        m[ps + 10..ps + 15].copy_from_slice(b"world");
        expect_eq("msync(MS_SYNC)", msync(p, 2 * ps, libc::MS_SYNC), Ok(0))?;
        expect_eq("file page 0", pread(&f, 0, 6)?, b"helloa".to_vec())?;
        expect_eq("file page 1", pread(&f, ps + 9, 7)?, b"bworldb".to_vec())?;
        // munmap writes back too (no msync).
        m[100..103].copy_from_slice(b"bye");
        expect_eq("munmap", unmap(p, 2 * ps), Ok(0))?;
        expect_eq("file after munmap", pread(&f, 99, 5)?, b"abyea".to_vec())?;
        expect_eq("file size unchanged", fstat(&f).map(|s| s.st_size).ok(), Some(2 * ps as i64))?;
        // A private mapping never writes back.
        let p = map(ps, RW, libc::MAP_PRIVATE, f.as_raw_fd(), 0)?;
        bytes(p, ps)[..5].copy_from_slice(b"XXXXX");
        expect_eq("msync private", msync(p, ps, libc::MS_SYNC), Ok(0))?;
        expect_eq("munmap private", unmap(p, ps), Ok(0))?;
        expect_eq("file after a private write", pread(&f, 0, 5)?, b"hello".to_vec())?;
        drop(f);
        std::fs::remove_file(&path).map_err(|e| format!("unlink: {e}"))
    });

    let d = dir.to_path_buf();
    r.check("mmap_shared_file_seen_by_another_process", || {
        let path = d.join("shared-proc");
        let f = make_file(&path, 1)?;
        let p = map(ps, RW, libc::MAP_SHARED, f.as_raw_fd(), 0)?;
        bytes(p, ps)[..6].copy_from_slice(b"parent");
        expect_eq("msync", msync(p, ps, libc::MS_SYNC), Ok(0))?;
        expect_eq("munmap", unmap(p, ps), Ok(0))?;
        // Another process maps the file: it sees the parent's data, and what
        // it writes through its mapping reaches the file when it exits.
        let pc = path.clone();
        let pid = fork_child(move || {
            let Ok(f) = open(&pc, libc::O_RDWR, 0) else { return 1 };
            let Ok(p) = map(ps, RW, libc::MAP_SHARED, f.as_raw_fd(), 0) else { return 2 };
            let m = bytes(p, ps);
            if &m[..6] != b"parent" {
                return 3;
            }
            m[6..11].copy_from_slice(b"child");
            // Exits with the mapping still in place.
            0
        })?;
        expect_exited(wait_child(pid, T)?, 0)?;
        expect_eq("file after the child's exit", pread(&f, 0, 12)?, b"parentchilda".to_vec())?;
        // A shared mapping made now sees it as well.
        let p = map(ps, libc::PROT_READ, libc::MAP_SHARED, f.as_raw_fd(), 0)?;
        let seen = bytes(p, ps)[..11].to_vec();
        let _ = unmap(p, ps);
        expect_eq("new mapping", seen, b"parentchild".to_vec())?;
        drop(f);
        std::fs::remove_file(&path).map_err(|e| format!("unlink: {e}"))
    });

    r.check("msync_rules", || {
        let p = map(2 * ps, RW, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)?;
        // SAFETY: an unaligned address is rejected without effect.
        expect_errno("msync unaligned", msync(unsafe { p.add(1) }, ps, libc::MS_SYNC), libc::EINVAL)?;
        expect_errno("msync MS_SYNC|MS_ASYNC", msync(p, ps, libc::MS_SYNC | libc::MS_ASYNC), libc::EINVAL)?;
        expect_eq("munmap", unmap(p, 2 * ps), Ok(0))?;
        expect_errno("msync unmapped", msync(p, ps, libc::MS_ASYNC), libc::ENOMEM)
    });

    r.check("madvise_dontneed_anonymous_private_zero_fills", || {
        let p = map(4 * ps, RW, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)?;
        let m = bytes(p, 4 * ps);
        m.fill(0xaa);
        // SAFETY: pages 1 and 2 of our own mapping.
        expect_eq("madvise", madvise(unsafe { p.add(ps) }, 2 * ps, libc::MADV_DONTNEED), Ok(0))?;
        let m = bytes(p, 4 * ps);
        ensure!(m[..ps].iter().all(|&b| b == 0xaa), "page 0 changed");
        ensure!(m[ps..3 * ps].iter().all(|&b| b == 0), "pages 1-2 not zero after MADV_DONTNEED");
        ensure!(m[3 * ps..].iter().all(|&b| b == 0xaa), "page 3 changed");
        m[ps] = 7;
        expect_eq("written after", bytes(p, 4 * ps)[ps], 7)?;
        // SAFETY: as above.
        expect_errno("madvise unaligned", madvise(unsafe { p.add(1) }, ps, libc::MADV_DONTNEED), libc::EINVAL)?;
        expect_errno("madvise bad advice", madvise(p, ps, 12345), libc::EINVAL)?;
        expect_eq("munmap", unmap(p, 4 * ps), Ok(0))
    });

    let d = dir.to_path_buf();
    r.check("madvise_dontneed_file_private_rereads", || {
        let path = d.join("dontneed");
        let f = make_file(&path, 2)?;
        let p = map(2 * ps, RW, libc::MAP_PRIVATE, f.as_raw_fd(), 0)?;
        bytes(p, 2 * ps)[..ps].fill(b'x');
        bytes(p, 2 * ps)[ps..].fill(b'y');
        expect_eq("madvise", madvise(p, ps, libc::MADV_DONTNEED), Ok(0))?;
        let m = bytes(p, 2 * ps);
        ensure!(m[..ps].iter().all(|&b| b == b'a'), "page 0 not reread from the file: {:?}", &m[..4]);
        ensure!(m[ps..].iter().all(|&b| b == b'y'), "page 1 lost its private change");
        // The file changed since the mapping was made: the reread sees it.
        // SAFETY: writing 3 bytes from a valid buffer.
        unsafe { libc::pwrite(f.as_raw_fd(), b"new".as_ptr().cast(), 3, ps as i64) };
        // SAFETY: page 1 of our own mapping.
        expect_eq("madvise page 1", madvise(unsafe { p.add(ps) }, ps, libc::MADV_DONTNEED), Ok(0))?;
        expect_eq("page 1 reread", bytes(p, 2 * ps)[ps..ps + 4].to_vec(), b"newb".to_vec())?;
        expect_eq("munmap", unmap(p, 2 * ps), Ok(0))?;
        drop(f);
        std::fs::remove_file(&path).map_err(|e| format!("unlink: {e}"))
    });

    r.check("madvise_dontneed_shared_anonymous_keeps_data", || {
        let p = map(ps, RW, libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1, 0)?;
        bytes(p, ps).fill(0x5a);
        expect_eq("madvise", madvise(p, ps, libc::MADV_DONTNEED), Ok(0))?;
        ensure!(bytes(p, ps).iter().all(|&b| b == 0x5a), "shared memory lost its data");
        expect_eq("munmap", unmap(p, ps), Ok(0))
    });

    r.check("mremap_grow_shrink_keep_contents", || {
        let p = map(2 * ps, RW, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)?;
        for (i, b) in bytes(p, 2 * ps).iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        let q = mremap(p, 2 * ps, 8 * ps, libc::MREMAP_MAYMOVE, std::ptr::null_mut())
            .map_err(|e| format!("mremap grow: {}", errno_name(e)))?;
        let m = bytes(q, 8 * ps);
        ensure!(m[..2 * ps].iter().enumerate().all(|(i, &b)| b == (i % 251) as u8), "contents lost on growth");
        ensure!(m[2 * ps..].iter().all(|&b| b == 0), "grown part not zero");
        m[8 * ps - 1] = 9;
        // Shrinking stays in place and keeps the front.
        let s = mremap(q, 8 * ps, ps, 0, std::ptr::null_mut()).map_err(|e| format!("mremap shrink: {}", errno_name(e)))?;
        expect_eq("shrunk address", s, q)?;
        ensure!(bytes(s, ps).iter().enumerate().all(|(i, &b)| b == (i % 251) as u8), "contents lost on shrinking");
        // SAFETY: the page after the shrunk mapping, now unmapped.
        expect_errno("tail unmapped", msync(unsafe { q.add(ps) }, ps, libc::MS_ASYNC), libc::ENOMEM)?;
        expect_eq("munmap", unmap(s, ps), Ok(0))
    });

    r.check("mremap_in_place_enomem_fixed_and_einval", || {
        let p = map(2 * ps, RW, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)?;
        bytes(p, 2 * ps)[..ps].fill(1);
        bytes(p, 2 * ps)[ps..].fill(2);
        // Page 0 cannot grow in place into page 1 without MREMAP_MAYMOVE.
        expect_errno("grow without room", mremap(p, ps, 2 * ps, 0, std::ptr::null_mut()).map(|_| 0), libc::ENOMEM)?;
        expect_errno("FIXED without MAYMOVE", mremap(p, ps, ps, libc::MREMAP_FIXED, std::ptr::null_mut()).map(|_| 0), libc::EINVAL)?;
        // SAFETY: an unaligned address is rejected without effect.
        expect_errno("unaligned", mremap(unsafe { p.add(1) }, ps, ps, 0, std::ptr::null_mut()).map(|_| 0), libc::EINVAL)?;
        expect_errno("new size 0", mremap(p, ps, 0, libc::MREMAP_MAYMOVE, std::ptr::null_mut()).map(|_| 0), libc::EINVAL)?;
        // MREMAP_FIXED moves page 1 onto a chosen address, replacing what was there.
        let target = map(3 * ps, libc::PROT_READ, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)?;
        // SAFETY: page 1 of our mapping moves to the middle of `target`.
        let (src, dst) = unsafe { (p.add(ps), target.add(ps)) };
        let q = mremap(src, ps, 2 * ps, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED, dst)
            .map_err(|e| format!("mremap FIXED: {}", errno_name(e)))?;
        expect_eq("moved to", q, dst)?;
        let m = bytes(q, 2 * ps);
        ensure!(m[..ps].iter().all(|&b| b == 2), "moved page lost its contents");
        ensure!(m[ps..].iter().all(|&b| b == 0), "grown part not zero");
        m[0] = 3; // writable: the old protection moved with it
        expect_errno("old page unmapped", msync(src, ps, libc::MS_ASYNC), libc::ENOMEM)?;
        ensure!(bytes(p, ps).iter().all(|&b| b == 1), "page 0 changed");
        let _ = unmap(p, ps);
        let _ = unmap(target, 3 * ps);
        Ok(())
    });

    let d = dir.to_path_buf();
    r.check("mremap_file_mapping_grows_into_the_file", || {
        let path = d.join("remap-file");
        let f = make_file(&path, 3)?;
        let p = map(ps, libc::PROT_READ, libc::MAP_PRIVATE, f.as_raw_fd(), 0)?;
        let q = mremap(p, ps, 3 * ps, libc::MREMAP_MAYMOVE, std::ptr::null_mut())
            .map_err(|e| format!("mremap: {}", errno_name(e)))?;
        let m = bytes(q, 3 * ps);
        let firsts = [m[0], m[ps], m[2 * ps]];
        let _ = unmap(q, 3 * ps);
        expect_eq("first byte of each page", firsts, [b'a', b'b', b'c'])?;
        drop(f);
        std::fs::remove_file(&path).map_err(|e| format!("unlink: {e}"))
    });
}
