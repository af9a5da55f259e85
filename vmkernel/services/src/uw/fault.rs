//! User page faults: demand-zero pages for anonymous areas, copy-on-write
//! after fork, and growth of the stack area — everything else is a real
//! fault that becomes a signal.

use alloc::sync::Arc;
use vmkernel::linux_abi::flags::mman::{PROT_EXEC, PROT_WRITE};
use vmkernel::paging;
use vmkernel::vm_regions::Access;

use super::process::{self, Mm};
use crate::mm;

/// Page-table flags for an area's protection.
pub fn pte_flags(prot: u32) -> u64 {
    let mut f = paging::USER;
    if prot & PROT_WRITE != 0 {
        f |= paging::WRITABLE;
    }
    if prot & PROT_EXEC == 0 {
        f |= paging::NO_EXECUTE;
    }
    f
}

/// Makes `va` accessible for a read (or write) if the areas allow it.
pub fn resolve(mm: &Mm, va: u64, write: bool) -> bool {
    resolve_access(mm, va, if write { Access::Write } else { Access::Read })
}

/// Free frames above the kernel's reserve below which a failed fault is
/// taken for a lack of memory.
const LOW_FRAMES: u64 = 64;
/// How long a fault waits for memory, in 10 ms steps.
const OOM_WAITS: u32 = 20;

fn resolve_access(mm: &Mm, va: u64, access: Access) -> bool {
    let mut waits = 0;
    loop {
        if resolve_once(mm, va, access) {
            return true;
        }
        // Out of memory rather than a bad access: a process that just hit
        // the limit is usually about to give its frames back as it dies
        // (the hog that exhausted memory is killed by its own failed
        // fault). Wait for them a little, as Linux's faults stall under
        // memory pressure, before this fault fails too.
        if waits >= OOM_WAITS || !mm::user_frames_low(LOW_FRAMES) {
            return false;
        }
        waits += 1;
        crate::world::sleep_ns(10_000_000);
    }
}

fn resolve_once(mm: &Mm, va: u64, access: Access) -> bool {
    let page = va & !0xfff;
    let vma = match mm.vm.lock().fault_lookup(va, access) {
        Ok(v) => v,
        Err(_) => return false,
    };
    match mm.space.translate(page) {
        Some(t) => {
            // Present: only a write to a copy-on-write page is ours to fix.
            if access == Access::Write && t.flags & paging::WRITABLE == 0 {
                return vma.prot & PROT_WRITE != 0 && mm.space.resolve_cow(page);
            }
            true
        }
        None => {
            // Not present: the executable's page on its first touch, else
            // a fresh zeroed page (other file mappings are copied in when
            // they are made, so only anonymous memory faults).
            if let (vmkernel::vm_regions::Backing::File { id, offset }, Some(image)) = (vma.backing, &mm.image)
                && id == image.id()
            {
                let file_offset = offset + (page - vma.start);
                match image.shared_page(page, file_offset) {
                    Err(()) => return false,
                    Ok(Some(shared)) => {
                        let flags = pte_flags(vma.prot);
                        // A write (to a private data page) copies at once
                        // instead of faulting again for the copy.
                        let r = if access == Access::Write {
                            let Some(copy) = mm::UserFrame::copy_of(&shared) else {
                                log::warn!("out of memory on a user page fault at {va:#x}");
                                return false;
                            };
                            mm.space.map(page, copy, flags)
                        } else {
                            let r = mm.space.map_shared(page, &shared, flags);
                            super::exec::fault_around(mm, image, &vma, page, offset);
                            r
                        };
                        // Err: another thread mapped it meanwhile.
                        return r.is_ok() || mm.space.translate(page).is_some();
                    }
                    Ok(None) => {}
                }
                let mut buf = [0u8; 4096];
                if !image.fill_page(page, file_offset, &mut buf) {
                    return false;
                }
                let Some(frame) = mm::UserFrame::alloc_with(&buf) else {
                    log::warn!("out of memory on a user page fault at {va:#x}");
                    return false;
                };
                if mm.space.map(page, frame, pte_flags(vma.prot)).is_err() {
                    return mm.space.translate(page).is_some();
                }
                return true;
            }
            // Another mapped file's page not present (dropped by
            // MADV_DONTNEED, or grown by mremap): read it from the file.
            if let vmkernel::vm_regions::Backing::File { id, offset } = vma.backing
                && let Some(f) = mm.files.lock().get(&id).cloned()
            {
                let mut buf = [0u8; 4096];
                let _ = f.pread(offset + (page - vma.start), &mut buf);
                let Some(frame) = mm::UserFrame::alloc_with(&buf) else {
                    log::warn!("out of memory on a user page fault at {va:#x}");
                    return false;
                };
                if mm.space.map(page, frame, pte_flags(vma.prot)).is_err() {
                    return mm.space.translate(page).is_some();
                }
                return true;
            }
            let Some(frame) = mm::UserFrame::alloc() else {
                log::warn!("out of memory on a user page fault at {va:#x}");
                return false;
            };
            if mm.space.map(page, frame, pte_flags(vma.prot)).is_err() {
                // Another thread mapped it meanwhile: fine.
                return mm.space.translate(page).is_some();
            }
            true
        }
    }
}

/// Handles a #PF from ring 3; true if the access can be retried.
pub fn handle_user_fault(addr: u64, error: u64) -> bool {
    let Some(p) = process::current() else { return false };
    let mm: Arc<Mm> = p.mm();
    let access = if error & 16 != 0 {
        Access::Exec
    } else if error & 2 != 0 {
        Access::Write
    } else {
        Access::Read
    };
    resolve_access(&mm, addr, access)
}

/// An exception in ring 3 (the framework's user trap handler): page
/// faults the kernel can resolve (demand paging, copy-on-write, stack
/// growth) are resolved; everything else becomes a signal to the faulting
/// thread — fatal unless it has a handler. The kernel and other worlds
/// carry on.
pub fn user_exception(frame: &mut crate::arch::trap::TrapFrame, fault_address: u64) {
    let v = frame.vector;
    if v == 14 && handle_user_fault(fault_address, frame.error_code) {
        return;
    }
    let signal = match v {
        0 | 16 | 19 => 8, // SIGFPE
        6 => 4,           // SIGILL
        3 | 1 => 5,       // SIGTRAP
        17 => 7,          // SIGBUS
        _ => 11,          // SIGSEGV
    };
    let p = process::current();
    log::warn!(
        "user world pid {} ({}): {} at rip {:#x} (addr {:#x}, error {:#x}): signal {}",
        p.as_ref().map_or(0, |p| p.pid),
        p.as_ref().map_or(alloc::string::String::from("?"), |p| p.name.lock().clone()),
        crate::arch::trap::exception_name(v),
        frame.rip,
        fault_address,
        frame.error_code,
        signal
    );
    drop(p);
    let addr = if v == 14 { fault_address } else { frame.rip };
    super::signal::force_fault_signal(signal, addr);
}
