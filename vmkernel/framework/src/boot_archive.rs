//! The root archive handed over as a boot module: find it and log its
//! listing. (A RAM file system will later be unpacked from the same bytes.)

use vmkernel::bootinfo::BootInfo;
use vmkernel::cpio::CpioError;
use vmkernel::rootfs;

use crate::mm;

/// The archive's bytes, if the boot loader passed a module.
pub fn archive(bi: &BootInfo) -> Option<&'static [u8]> {
    let module = rootfs::archive_module(&bi.modules)?;
    if !mm::direct_map_covers(module.start, module.len) {
        log::error!("rootfs: module at {:#x} (+{:#x}) is outside the direct map", module.start, module.len);
        return None;
    }
    // SAFETY: the module's frames are reserved from the frame allocator
    // (mm::init), so nothing writes them while the kernel runs.
    Some(unsafe { mm::phys_slice(module.start, module.len as usize) })
}

/// Logs every entry and a summary; a corrupt archive is reported and the
/// boot carries on.
pub fn log_listing(bi: &BootInfo) {
    let Some(archive) = archive(bi) else {
        log::warn!("rootfs: no boot module: no root archive");
        return;
    };
    // Files and directories at info level; the hundreds of BusyBox applet
    // links at debug level.
    let listing = rootfs::list(archive, |e| {
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
