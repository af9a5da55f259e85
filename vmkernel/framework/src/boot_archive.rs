//! The root archive handed over as a boot module: find it, unpack it when
//! it is compressed (a zstd frame, as image-builder writes it, or an LZ4
//! frame, as it wrote before; a plain cpio module
//! is used in place), log its listing, and give its frames back once the
//! RAM file system holds the files.

use alloc::borrow::Cow;
use core::sync::atomic::{AtomicBool, Ordering};

use vmkernel::bootinfo::{BootInfo, Module};
use vmkernel::cpio::CpioError;
use vmkernel::frames::FRAME_SIZE;
use vmkernel::rootfs::{self, Packing};

use crate::{mm, time};

/// Set once the module's frames went back to the allocator: its bytes may
/// not be read after that.
static RELEASED: AtomicBool = AtomicBool::new(false);

/// The root archive's cpio bytes, for as long as the boot needs them.
pub struct RootArchive {
    module: Module,
    cpio: Cow<'static, [u8]>,
}

impl RootArchive {
    pub fn cpio(&self) -> &[u8] {
        &self.cpio
    }
}

/// The module's bytes, if the boot loader passed one (and it was not
/// released yet).
fn module_bytes(bi: &BootInfo) -> Option<(Module, &'static [u8])> {
    if RELEASED.load(Ordering::Acquire) {
        return None;
    }
    let module = rootfs::archive_module(&bi.modules)?;
    if !mm::direct_map_covers(module.start, module.len) {
        log::error!("rootfs: module at {:#x} (+{:#x}) is outside the direct map", module.start, module.len);
        return None;
    }
    // SAFETY: the module's frames are reserved from the frame allocator
    // (mm::init), so nothing writes them while the kernel runs; `release`
    // consumes the only `RootArchive` (and sets RELEASED) before it frees
    // them.
    Some((module.clone(), unsafe { mm::phys_slice(module.start, module.len as usize) }))
}

/// Finds the root archive and unpacks it if it is compressed, logging the
/// compressed and unpacked sizes and how long unpacking took. A damaged
/// compressed archive is reported and gives `None`: the kernel then boots
/// without a root file system, as without a module.
pub fn open(bi: &BootInfo) -> Option<RootArchive> {
    let Some((module, bytes)) = module_bytes(bi) else {
        log::warn!("rootfs: no boot module: no root archive");
        return None;
    };
    if rootfs::packing(bytes) == Packing::Cpio {
        log::info!("rootfs: cpio archive, {} bytes (not compressed)", bytes.len());
        return Some(RootArchive { module, cpio: Cow::Borrowed(bytes) });
    }
    // Leave half of free memory for the files the ramfs copies out.
    let limit = (mm::free_frames() * FRAME_SIZE / 2) as usize;
    let started = time::uptime_ns();
    match rootfs::unpack(bytes, limit) {
        Ok(cpio) => {
            let us = time::uptime_ns().saturating_sub(started) / 1000;
            log::info!(
                "rootfs: {} archive, {} bytes compressed, {} bytes unpacked in {}.{:03} ms",
                if rootfs::packing(bytes) == Packing::Zstd { "zstd" } else { "LZ4" },
                bytes.len(),
                cpio.len(),
                us / 1000,
                us % 1000
            );
            Some(RootArchive { module, cpio })
        }
        Err(e) => {
            log::error!("rootfs: cannot unpack the compressed root archive ({} bytes): {e}; root archive ignored", bytes.len());
            None
        }
    }
}

/// Logs every entry and a summary; a corrupt archive is reported and the
/// boot carries on.
pub fn log_listing(archive: &RootArchive) {
    // Files and directories at info level; the hundreds of BusyBox applet
    // links at debug level.
    let listing = rootfs::list(archive.cpio(), |e| {
        if e.is_symlink() {
            log::debug!("rootfs: {} {} bytes {}", rootfs::AbsolutePath(e.name), e.data.len(), rootfs::mode_string(e.mode));
        } else {
            log::info!("rootfs: {} {} bytes {}", rootfs::AbsolutePath(e.name), e.data.len(), rootfs::mode_string(e.mode));
        }
    });
    match listing {
        Ok(s) => log::info!("rootfs: {} entries, {} bytes", s.entries, s.bytes),
        Err(e) => match e.error {
            CpioError::Corrupt(at) => log::error!(
                "rootfs: corrupt cpio archive at offset {at:#x} (after {} entries); root archive ignored",
                e.read.entries
            ),
            CpioError::NoTrailer => log::error!(
                "rootfs: cpio archive ends without a trailer (after {} entries); root archive ignored",
                e.read.entries
            ),
        },
    }
}

/// Drops the unpacked copy and returns the module's frames to the frame
/// allocator: the ramfs has copied what it needs. Frames the module shares
/// with the boot information or another module stay reserved.
pub fn release(archive: RootArchive, bi: &BootInfo) {
    let RootArchive { module, cpio } = archive;
    drop(cpio);
    RELEASED.store(true, Ordering::Release);
    let (start, end) = (module.start, module.start + module.len);
    let overlaps = |f: u64, (s, e): (u64, u64)| f < e && s < f + FRAME_SIZE;
    let mut freed = 0u64;
    let mut frame = start.next_multiple_of(FRAME_SIZE);
    while frame + FRAME_SIZE <= end {
        let shared = overlaps(frame, bi.info_range)
            || bi.modules.iter().filter(|m| m.start != module.start).any(|m| overlaps(frame, (m.start, m.start + m.len)));
        if !shared && mm::free_frame(frame).is_ok() {
            freed += 1;
        }
        frame += FRAME_SIZE;
    }
    log::info!("rootfs: returned the archive module's {} KiB to the frame allocator", freed * FRAME_SIZE / 1024);
}
