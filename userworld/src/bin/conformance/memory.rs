//! mmap, munmap, mprotect.

use crate::harness::*;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

/// An anonymous private read/write mapping of `len` bytes.
fn map_anon(len: usize, flags: i32) -> Result<*mut u8, i32> {
    // SAFETY: a fresh mapping chosen by the kernel touches no existing memory.
    let p = unsafe {
        libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags | libc::MAP_ANONYMOUS, -1, 0)
    };
    if p == libc::MAP_FAILED { Err(errno()) } else { Ok(p.cast()) }
}

fn unmap(p: *mut u8, len: usize) -> Result<i64, i32> {
    // SAFETY: callers only unmap mappings they created and no longer reference.
    sys(unsafe { libc::munmap(p.cast(), len) })
}

/// In a child with the default SIGSEGV disposition (Rust std installs its own handler
/// for stack overflows), writes to `p`; returns the child's wait status.
fn write_in_child(p: *mut u8) -> Result<i32, String> {
    let addr = p as usize;
    let pid = fork_child(move || {
        // SAFETY: resetting a disposition in the child only; the write is meant to fault.
        unsafe {
            libc::signal(libc::SIGSEGV, libc::SIG_DFL);
            (addr as *mut u8).write_volatile(1);
        }
        0
    })?;
    wait_child(pid, T)
}

pub fn run(r: &mut Runner, dir: &Path) {
    let d = dir.to_path_buf();

    r.check("mmap_anon_zeroed_rw", || {
        let len = 1 << 20;
        let p = map_anon(len, libc::MAP_PRIVATE).map_err(|e| format!("mmap: {}", errno_name(e)))?;
        ensure!((p as usize).is_multiple_of(page_size()), "mapping {p:p} not page-aligned");
        // SAFETY: the mapping is `len` bytes of readable, writable memory owned here.
        let s = unsafe { std::slice::from_raw_parts_mut(p, len) };
        ensure!(s.iter().all(|&b| b == 0), "anonymous memory not zero-filled");
        for (i, b) in s.iter_mut().enumerate() {
            *b = (i % 253) as u8;
        }
        ensure!(s.iter().enumerate().all(|(i, &b)| b == (i % 253) as u8), "data read back differs");
        expect_eq("munmap", unmap(p, len), Ok(0))
    });

    r.check("mmap_zero_length_einval", || {
        expect_errno("mmap len 0", map_anon(0, libc::MAP_PRIVATE).map(|p| p as i64), libc::EINVAL)
    });

    r.check("mmap_bad_flags_einval", || {
        // Neither MAP_PRIVATE nor MAP_SHARED.
        expect_errno("mmap without type", map_anon(4096, 0).map(|p| p as i64), libc::EINVAL)
    });

    r.check("munmap_unaligned_einval", || {
        let p = map_anon(4096, libc::MAP_PRIVATE).map_err(|e| errno_name(e).to_string())?;
        // SAFETY: computing an address, not dereferencing.
        let res = unmap(unsafe { p.add(1) }, 4096);
        unmap(p, 4096).map_err(|e| errno_name(e).to_string())?;
        expect_errno("munmap unaligned", res, libc::EINVAL)
    });

    r.check("munmap_then_access_segv", || {
        let len = 2 * page_size();
        let p = map_anon(len, libc::MAP_PRIVATE).map_err(|e| errno_name(e).to_string())?;
        // SAFETY: touching our own mapping before unmapping it.
        unsafe { p.write_volatile(9) };
        expect_eq("munmap", unmap(p, len), Ok(0))?;
        expect_signaled(write_in_child(p)?, libc::SIGSEGV)
    });

    r.check("mprotect_readonly_write_segv", || {
        let len = page_size();
        let p = map_anon(len, libc::MAP_PRIVATE).map_err(|e| errno_name(e).to_string())?;
        // SAFETY: our own mapping.
        unsafe { p.write_volatile(42) };
        // SAFETY: changing protection on our own mapping.
        ok("mprotect READ", sys(unsafe { libc::mprotect(p.cast(), len, libc::PROT_READ) }))?;
        let status = write_in_child(p)?;
        // SAFETY: still mapped and readable in the parent.
        expect_eq("parent still reads", unsafe { p.read_volatile() }, 42)?;
        // SAFETY: as above.
        ok("mprotect RW", sys(unsafe { libc::mprotect(p.cast(), len, libc::PROT_READ | libc::PROT_WRITE) }))?;
        // SAFETY: writable again.
        unsafe { p.write_volatile(43) };
        // SAFETY: as above.
        expect_eq("write after restoring", unsafe { p.read_volatile() }, 43)?;
        unmap(p, len).map_err(|e| errno_name(e).to_string())?;
        expect_signaled(status, libc::SIGSEGV)
    });

    r.check("mmap_fixed_replaces_middle_page", || {
        let pg = page_size();
        let p = map_anon(3 * pg, libc::MAP_PRIVATE).map_err(|e| errno_name(e).to_string())?;
        // SAFETY: all three pages are ours.
        unsafe { std::ptr::write_bytes(p, 0xAA, 3 * pg) };
        // SAFETY: replacing a page inside our own mapping.
        let mid = unsafe { p.add(pg) };
        // SAFETY: MAP_FIXED over a range we own and do not reference elsewhere.
        let q = unsafe {
            libc::mmap(mid.cast(), pg, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED, -1, 0)
        };
        let res = (|| {
            ensure!(q != libc::MAP_FAILED, "mmap MAP_FIXED: {}", errno_name(errno()));
            expect_eq("MAP_FIXED address", q as usize, mid as usize)?;
            // SAFETY: the whole range is still mapped.
            let s = unsafe { std::slice::from_raw_parts(p, 3 * pg) };
            ensure!(s[pg..2 * pg].iter().all(|&b| b == 0), "replaced page is not zero-filled");
            ensure!(s[..pg].iter().chain(&s[2 * pg..]).all(|&b| b == 0xAA), "neighbour pages changed");
            Ok(())
        })();
        unmap(p, 3 * pg).map_err(|e| errno_name(e).to_string())?;
        res
    });

    r.check("mmap_file_private", || {
        let path = d.join("mapped");
        std::fs::write(&path, b"mapped file contents").map_err(|e| e.to_string())?;
        let f = open(&path, libc::O_RDONLY, 0).map_err(|e| errno_name(e).to_string())?;
        // SAFETY: read-only private mapping of a file we opened.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ, libc::MAP_PRIVATE, f.as_raw_fd(), 0) };
        ensure!(p != libc::MAP_FAILED, "mmap file: {}", errno_name(errno()));
        // SAFETY: one page mapped; the file is 20 bytes and the rest of the page reads 0.
        let s = unsafe { std::slice::from_raw_parts(p as *const u8, 4096) };
        let res = expect_eq("content", &s[..20], b"mapped file contents").and_then(|_| {
            ensure!(s[20..].iter().all(|&b| b == 0), "tail of the last page not zero");
            Ok(())
        });
        unmap(p.cast(), 4096).map_err(|e| errno_name(e).to_string())?;
        res
    });

    r.check("mmap_shared_anon_visible_across_fork", || {
        let p = map_anon(4096, libc::MAP_SHARED).map_err(|e| errno_name(e).to_string())?;
        let addr = p as usize;
        let pid = fork_child(move || {
            // SAFETY: the shared mapping is inherited by the child.
            unsafe { (addr as *mut u32).write_volatile(0xC0FFEE) };
            0
        })?;
        expect_exited(wait_child(pid, T)?, 0)?;
        // SAFETY: our own mapping.
        let v = unsafe { (p as *const u32).read_volatile() };
        unmap(p, 4096).map_err(|e| errno_name(e).to_string())?;
        expect_eq("value written by child", v, 0xC0FFEE)
    });

    // An area's length says nothing of what is mapped in it: the kernel
    // walks what is there (a loop over every page of a 4 GiB read-only
    // area held a CPU for tens of seconds with interrupts off; sysfuzz
    // workers hung in munmap). 1 TiB here: page by page, hours.
    r.check("huge_sparse_area_protected_moved_and_unmapped", || {
        const LEN: usize = 1 << 40;
        let pg = page_size();
        // SAFETY: a fresh reservation chosen by the kernel touches no existing memory.
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), LEN, libc::PROT_NONE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE, -1, 0)
        };
        ensure!(p != libc::MAP_FAILED, "mmap 1 TiB PROT_NONE: {}", errno_name(errno()));
        let p = p as *mut u8;
        let res = (|| {
            // One written page (Linux keeps a 1 TiB area with two written
            // pieces as separate areas, which mremap refuses to grow).
            // SAFETY: the first page of our own reservation made writable.
            ok("mprotect RW", sys(unsafe { libc::mprotect(p.cast(), pg, libc::PROT_READ | libc::PROT_WRITE) }))?;
            // SAFETY: writable now.
            unsafe { p.write_volatile(0x5a) };
            // SAFETY: the whole reservation, ours.
            ok("mprotect READ 1 TiB", sys(unsafe { libc::mprotect(p.cast(), LEN, libc::PROT_READ) }))?;
            // SAFETY: readable now.
            expect_eq("first page after mprotect", unsafe { p.read_volatile() }, 0x5a)?;
            // SAFETY: as above.
            expect_eq("last page after mprotect", unsafe { p.add(LEN - pg).read_volatile() }, 0)?;
            Ok(())
        })();
        if let Err(e) = res {
            let _ = unmap(p, LEN);
            return Err(e);
        }
        // Grown by a page, so it moves: the written page moves with it.
        // SAFETY: remapping our own reservation, which nothing references.
        let q = unsafe { libc::mremap(p.cast(), LEN, LEN + pg, libc::MREMAP_MAYMOVE) };
        let (base, len) = if q == libc::MAP_FAILED { (p, LEN) } else { (q as *mut u8, LEN + pg) };
        let res = (|| {
            ensure!(q != libc::MAP_FAILED, "mremap 1 TiB: {}", errno_name(errno()));
            // SAFETY: the moved area is readable, the written page in it.
            expect_eq("first page after mremap", unsafe { base.read_volatile() }, 0x5a)?;
            // SAFETY: as above.
            expect_eq("last page after mremap", unsafe { base.add(LEN - pg).read_volatile() }, 0)?;
            Ok(())
        })();
        expect_eq("munmap 1 TiB", unmap(base, len), Ok(0))?;
        res
    });

    r.check("mmap_private_copy_on_write_across_fork", || {
        let p = map_anon(4096, libc::MAP_PRIVATE).map_err(|e| errno_name(e).to_string())?;
        // SAFETY: our own mapping.
        unsafe { (p as *mut u32).write_volatile(1) };
        let addr = p as usize;
        let pid = fork_child(move || {
            // SAFETY: the child's private copy.
            unsafe {
                (addr as *mut u32).write_volatile(2);
                (addr as *const u32).read_volatile() as i32
            }
        })?;
        expect_exited(wait_child(pid, T)?, 2)?;
        // SAFETY: our own mapping.
        let v = unsafe { (p as *const u32).read_volatile() };
        unmap(p, 4096).map_err(|e| errno_name(e).to_string())?;
        expect_eq("parent's value", v, 1)
    });
}
