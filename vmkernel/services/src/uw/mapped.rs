//! Shared file mappings written back to their files (msync, munmap, exit).
//!
//! A file mapping holds its own copy of the file's pages (there is no page
//! cache shared between mappings): what a process writes through a
//! MAP_SHARED mapping reaches the file at msync, at munmap and when the
//! address space goes (exit, exec). Other processes' mappings made after
//! that, and read(2), then see it; two mappings of one file that exist at
//! the same time in different processes do not see each other's writes
//! until then (on Linux they share the page cache).

use vmkernel::linux_abi::flags::mman::PROT_WRITE;
use alloc::collections::BTreeSet;

use vmkernel::vm_regions::{Backing, Vma};

use super::process::Mm;

/// Writes the present pages of the shared writable file areas among
/// `areas` back to their files, never past the file's end (a mapping does
/// not extend its file).
pub fn write_back(mm: &Mm, areas: &[Vma]) {
    for v in areas.iter().filter(|v| v.shared && v.max_prot & PROT_WRITE != 0) {
        let Backing::File { id, offset } = v.backing else { continue };
        let Some(f) = mm.files.lock().get(&id).cloned() else { continue };
        let size = f.metadata().size;
        // Only pages that are there (a page never touched holds nothing
        // to write; the area may be far longer than the file).
        for va in mm.space.mapped_pages(v.start, v.end) {
            let at = offset + (va - v.start);
            if at >= size {
                break;
            }
            let mut page = [0u8; 4096];
            if mm.space.read_user_page(va, &mut page) {
                let n = ((size - at) as usize).min(4096);
                if let Err(e) = f.pwrite(at, &page[..n]) {
                    log::warn!("write-back of a shared mapping at {va:#x}: {e:?}");
                }
            }
        }
    }
}

/// Lets go of the open files no mapped area refers to any longer (after
/// munmap, mremap, a mapping replaced): a process that maps and unmaps a
/// file must not keep it open (and an unlinked file's data alive) until it
/// exits.
pub fn release_unmapped_files(mm: &Mm) {
    let used: BTreeSet<u64> = mm
        .vm
        .lock()
        .areas()
        .filter_map(|v| match v.backing {
            Backing::File { id, .. } => Some(id),
            _ => None,
        })
        .collect();
    // Taken out under the lock, closed after it (a close may wait on a disk).
    let unused: alloc::vec::Vec<_> = {
        let mut files = mm.files.lock();
        let ids: alloc::vec::Vec<u64> = files.keys().filter(|id| !used.contains(id)).copied().collect();
        ids.into_iter().filter_map(|id| files.remove(&id)).collect()
    };
    drop(unused);
}
