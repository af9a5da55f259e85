//! Physical memory, the kernel's page tables and the kernel heap.
//!
//! Address-space layout:
//! - `0x0000_0000_0000_0000 ..` lower half: user worlds (empty for now);
//! - `PHYS_OFFSET ..` direct map of physical memory (all RAM, and the
//!   first 4 GiB whole so MMIO — LAPIC, IOAPIC, ECAM — is reachable);
//! - `KERNEL_VMA ..` the kernel image, text RX, rodata R, data RW+NX.
//!
//! The boot stub's identity map is dropped when `init` switches to the
//! kernel's own tables.

pub mod heap;

use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;
use vmkernel::bootinfo::{BootInfo, PhysRead, RegionKind};
use vmkernel::frames::{FRAME_SIZE, FrameAllocator};
use vmkernel::paging::{self, GLOBAL, NO_EXECUTE, TableMemory, WRITABLE};

use crate::cpu;

pub const PHYS_OFFSET: u64 = 0xffff_8000_0000_0000;
pub const KERNEL_VMA: u64 = 0xffff_ffff_8000_0000;
/// The boot stub direct-maps this much; `init` extends it to all RAM.
const BOOT_DIRECT_MAP: u64 = 4 << 30;

unsafe extern "C" {
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
    static __kernel_end: u8;
}

fn sym(s: &u8) -> u64 {
    s as *const u8 as u64
}

/// Where the direct map shows physical address `phys`. Framework-only:
/// the services reach memory through typed owners ([`UserFrame`], the
/// user-memory copies of [`AddressSpace`]), never by physical address.
pub(crate) fn phys_to_virt(phys: u64) -> u64 {
    PHYS_OFFSET + phys
}

pub(crate) static FRAMES: Mutex<Option<FrameAllocator<'static>>> = Mutex::new(None);
static KERNEL_PML4: AtomicU64 = AtomicU64::new(0);
static DIRECT_MAP_END: AtomicU64 = AtomicU64::new(BOOT_DIRECT_MAP);
static USABLE_BYTES: AtomicU64 = AtomicU64::new(0);

/// Reads physical memory through the direct map (boot-info parsing).
struct DirectMap;

/// Parses the boot loader's information at physical address `info`
/// (`magic` names the protocol), reading it through the direct map.
pub fn parse_boot_info(magic: u32, info: u64) -> Result<BootInfo, vmkernel::bootinfo::BootInfoError> {
    BootInfo::parse(magic, info, &DirectMap)
}

impl PhysRead for DirectMap {
    fn read(&self, phys: u64, buf: &mut [u8]) {
        if phys.saturating_add(buf.len() as u64) > DIRECT_MAP_END.load(Ordering::Relaxed) {
            buf.fill(0);
            return;
        }
        // SAFETY: the range lies inside the direct map, which maps it.
        unsafe {
            core::ptr::copy_nonoverlapping(phys_to_virt(phys) as *const u8, buf.as_mut_ptr(), buf.len());
        }
    }
}

/// A slice of physical memory through the direct map.
///
/// # Safety
/// The range must be RAM (or a firmware table) that nothing writes while
/// the slice lives.
pub unsafe fn phys_slice(phys: u64, len: usize) -> &'static [u8] {
    // SAFETY: guaranteed by the caller.
    unsafe { core::slice::from_raw_parts(phys_to_virt(phys) as *const u8, len) }
}

/// Page-table frames come from the frame allocator and are zeroed through
/// the direct map.
struct KernelTables<'a, 'b>(&'a mut FrameAllocator<'b>);

impl TableMemory for KernelTables<'_, '_> {
    fn alloc_table(&mut self) -> Option<u64> {
        let f = self.0.alloc()?;
        // SAFETY: a frame fresh from the allocator belongs to us.
        unsafe { core::ptr::write_bytes(phys_to_virt(f) as *mut u8, 0, FRAME_SIZE as usize) };
        Some(f)
    }
    fn read(&self, table: u64, index: usize) -> u64 {
        // SAFETY: table frames are mapped by the direct map.
        unsafe { core::ptr::read_volatile((phys_to_virt(table) as *const u64).add(index)) }
    }
    fn write(&mut self, table: u64, index: usize, entry: u64) {
        // SAFETY: as above; the caller of `map` owns these tables.
        unsafe { core::ptr::write_volatile((phys_to_virt(table) as *mut u64).add(index), entry) }
    }
}

/// Page tables after boot: each new table frame is taken from the frame
/// allocator under its lock for just that allocation, so walks can run
/// without holding the lock (and may allocate from the heap, whose growth
/// takes the same lock). Framework-only: it reads and writes any
/// physical page it is given.
pub(crate) struct Tables;

impl TableMemory for Tables {
    fn alloc_table(&mut self) -> Option<u64> {
        alloc_user_frame()
    }
    fn read(&self, table: u64, index: usize) -> u64 {
        // SAFETY: table frames are mapped by the direct map.
        unsafe { core::ptr::read_volatile((phys_to_virt(table) as *const u64).add(index)) }
    }
    fn write(&mut self, table: u64, index: usize, entry: u64) {
        // SAFETY: as above; callers own the tables they change.
        unsafe { core::ptr::write_volatile((phys_to_virt(table) as *mut u64).add(index), entry) }
    }
}

/// Sets up the frame allocator, the kernel's page tables and the heap;
/// the error says why the machine cannot run.
pub fn init(bi: &BootInfo) -> Result<(), &'static str> {
    // SAFETY: a linker-script symbol: only its address is taken.
    let kernel_phys_end = sym(unsafe { &__kernel_end }) - KERNEL_VMA;
    let top = bi.regions.iter().filter(|r| r.kind == RegionKind::Usable).map(|r| r.end()).max().unwrap_or(0);
    USABLE_TOP.store(top, Ordering::Relaxed);
    let words = FrameAllocator::words_for(top);
    let bitmap_bytes = (words * 8) as u64;

    // Place the bitmap in usable RAM above the kernel, inside the boot
    // direct map, clear of modules and the boot information.
    let mut busy: arrayvec::ArrayVec<(u64, u64), 24> = arrayvec::ArrayVec::new();
    busy.push((0, kernel_phys_end));
    busy.push(bi.info_range);
    for m in &bi.modules {
        let _ = busy.try_push((m.start, m.start + m.len));
    }
    let overlaps = |s: u64, e: u64, busy: &[(u64, u64)]| busy.iter().any(|&(bs, be)| s < be && bs < e);
    let mut bitmap_at = None;
    'find: for r in bi.regions.iter().filter(|r| r.kind == RegionKind::Usable) {
        let mut s = r.start.max(1 << 20).next_multiple_of(FRAME_SIZE);
        while s + bitmap_bytes <= r.end().min(BOOT_DIRECT_MAP) {
            if !overlaps(s, s + bitmap_bytes, &busy) {
                bitmap_at = Some(s);
                break 'find;
            }
            s += FRAME_SIZE;
        }
    }
    let Some(bitmap_at) = bitmap_at else {
        return Err("no room for the frame bitmap below 4 GiB");
    };
    // SAFETY: the range is usable RAM no one else uses (checked above),
    // mapped by the boot direct map, and handed to the allocator for good.
    let bits = unsafe { core::slice::from_raw_parts_mut(phys_to_virt(bitmap_at) as *mut u64, words) };
    let mut fa = FrameAllocator::new(bits);
    for r in bi.regions.iter().filter(|r| r.kind == RegionKind::Usable) {
        fa.add_free(r.start, r.end());
    }
    // Firmware areas and the AP trampoline live below 1 MiB.
    fa.reserve(0, 1 << 20);
    for &(s, e) in &busy {
        fa.reserve(s, e);
    }
    fa.reserve(bitmap_at, bitmap_at + bitmap_bytes);
    USABLE_BYTES.store(fa.managed_frames() * FRAME_SIZE, Ordering::Relaxed);
    log::info!(
        "mm: {} MiB usable in {} regions, {} frames free, bitmap at {:#x}",
        (fa.managed_frames() * FRAME_SIZE) >> 20,
        bi.regions.len(),
        fa.free_frames(),
        bitmap_at
    );

    let root = build_kernel_tables(&mut fa, top);
    *FRAMES.lock() = Some(fa);
    // SAFETY: the new tables map the kernel image, the direct map and the
    // stack we are running on exactly as the boot tables did (upper half).
    unsafe {
        cpu::write_cr3(root);
        // CR0.WP: the kernel honours read-only pages too. CR4.PGE: global pages.
        let mut cr0: u64;
        core::arch::asm!("mov {}, cr0", out(reg) cr0);
        cr0 |= 1 << 16;
        core::arch::asm!("mov cr0, {}", in(reg) cr0);
        let mut cr4: u64;
        core::arch::asm!("mov {}, cr4", out(reg) cr4);
        cr4 |= 1 << 7;
        core::arch::asm!("mov cr4, {}", in(reg) cr4);
    }
    KERNEL_PML4.store(root, Ordering::Release);
    heap::init();
    Ok(())
}

fn build_kernel_tables(fa: &mut FrameAllocator, top: u64) -> u64 {
    let mut t = KernelTables(fa);
    let root = t.alloc_table().expect("no frame for the kernel PML4");
    let direct_end = top.max(BOOT_DIRECT_MAP).next_multiple_of(1 << 30);
    let gb_pages = cpu::cpuid(0x8000_0001, 0).edx & (1 << 26) != 0;
    paging::map_range(&mut t, root, PHYS_OFFSET, 0, direct_end, WRITABLE | NO_EXECUTE | GLOBAL, gb_pages)
        .expect("direct map");
    DIRECT_MAP_END.store(direct_end, Ordering::Relaxed);
    // SAFETY: taking the addresses of linker-script symbols.
    let (text, text_end, ro, ro_end, data, end) = unsafe {
        (
            sym(&__text_start),
            sym(&__text_end),
            sym(&__rodata_start),
            sym(&__rodata_end),
            sym(&__data_start),
            sym(&__kernel_end),
        )
    };
    let sections = [(text, text_end, GLOBAL), (ro, ro_end, GLOBAL | NO_EXECUTE), (data, end, GLOBAL | WRITABLE | NO_EXECUTE)];
    for (s, e, flags) in sections {
        let mut v = s;
        while v < e {
            paging::map(&mut t, root, v, v - KERNEL_VMA, paging::PageSize::Size4K, flags).expect("kernel image map");
            v += FRAME_SIZE;
        }
    }
    root
}

pub fn kernel_pml4() -> u64 {
    KERNEL_PML4.load(Ordering::Acquire)
}

/// Whether `[virt, virt+len)` is mapped in the kernel's tables (used by the
/// backtrace walker, which must not fault while reporting a fault).
pub fn is_kernel_readable(virt: u64, len: u64) -> bool {
    let root = kernel_pml4();
    if root == 0 {
        return virt >= PHYS_OFFSET && virt + len <= PHYS_OFFSET + BOOT_DIRECT_MAP || virt >= KERNEL_VMA;
    }
    let t = Tables;
    let mut v = virt & !(FRAME_SIZE - 1);
    while v < virt + len {
        if paging::translate(&t, root, v).is_none() {
            return false;
        }
        v += FRAME_SIZE;
    }
    true
}

/// Allocates one zeroed frame (framework-internal: the services own
/// memory through [`UserFrame`]).
pub(crate) fn alloc_frame() -> Option<u64> {
    let f = FRAMES.lock().as_mut()?.alloc()?;
    // SAFETY: fresh frame, ours, page-aligned in the direct map.
    unsafe { zero_page(phys_to_virt(f) as *mut u8) };
    Some(f)
}

/// Frames kept back from user worlds and guests so the kernel's own heap
/// can always grow: a process or VM that runs the host out of memory gets
/// ENOMEM (or its fault fails), and the kernel carries on.
fn kernel_reserve_frames() -> u64 {
    (usable_bytes() / FRAME_SIZE / 32).clamp(2048, 16384)
}

/// Frames promised to guest RAM but not yet allocated: a VM reserves all
/// of its RAM when it is created and takes frames from that promise as
/// the guest first touches its pages (`hv::guest_memory`), so a touch
/// never finds the host out of memory. User worlds, and further VMs, get
/// only what is free beyond the kernel's reserve and these promises.
static PROMISED: AtomicU64 = AtomicU64::new(0);

/// Frames promised to guest RAM and not yet allocated.
pub fn promised_frames() -> u64 {
    PROMISED.load(Ordering::Acquire)
}

/// Reserves `n` frames for guest RAM: false (nothing reserved) when fewer
/// than `n` are free beyond the kernel's reserve and earlier promises.
pub(crate) fn promise_frames(n: u64) -> bool {
    // Under the allocator's lock, so two VMs cannot both take the last frames.
    let fa = FRAMES.lock();
    let Some(free) = fa.as_ref().map(|f| f.free_frames()) else { return false };
    let taken = kernel_reserve_frames() + PROMISED.load(Ordering::Acquire);
    if free < taken.saturating_add(n) {
        return false;
    }
    PROMISED.fetch_add(n, Ordering::AcqRel);
    true
}

/// Gives back `n` promised frames that were never allocated.
pub(crate) fn unpromise_frames(n: u64) {
    let _ = PROMISED.fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| Some(p.saturating_sub(n)));
}

/// A zeroed frame out of a guest's promise (the promise shrinks by one).
pub(crate) fn alloc_promised_frame() -> Option<u64> {
    let f = alloc_frame()?;
    unpromise_frames(1);
    Some(f)
}

/// A zeroed, 2 MiB-aligned run of 512 frames out of a guest's promise
/// (one large nested page); None when no whole aligned block is free.
pub(crate) fn alloc_promised_block_2m() -> Option<u64> {
    let b = FRAMES.lock().as_mut()?.alloc_block((FRAMES_PER_2M / 64) as usize)?;
    // SAFETY: a fresh block of frames, ours, inside the direct map (the
    // allocator only manages RAM the direct map covers).
    unsafe { core::ptr::write_bytes(phys_to_virt(b) as *mut u8, 0, (FRAMES_PER_2M * FRAME_SIZE) as usize) };
    unpromise_frames(FRAMES_PER_2M);
    Some(b)
}

/// Frees a frame (or a 2 MiB block) of guest RAM back into its VM's
/// promise: the guest may touch the page again.
pub(crate) fn free_promised(phys: u64, large: bool) {
    let (r, n) = if large { (free_block_2m(phys), FRAMES_PER_2M) } else { (free_frame(phys), 1) };
    if r.is_ok() {
        PROMISED.fetch_add(n, Ordering::AcqRel);
    }
}

/// Allocates a zeroed frame for user memory (and nested page tables),
/// refusing when only the kernel's reserve and guests' promises are left.
pub(crate) fn alloc_user_frame() -> Option<u64> {
    if free_frames() <= kernel_reserve_frames() + promised_frames() {
        return None;
    }
    alloc_frame()
}

/// Frames user worlds and new VMs can still have: free beyond the kernel's
/// reserve and guests' promises (`MemAvailable`).
pub fn available_user_frames() -> u64 {
    free_frames().saturating_sub(kernel_reserve_frames() + promised_frames())
}

/// Whether user memory is (nearly) exhausted: fewer than `margin` frames
/// above the kernel's reserve and guests' promises.
pub fn user_frames_low(margin: u64) -> bool {
    free_frames() <= kernel_reserve_frames() + promised_frames() + margin
}

/// Frames in a 2 MiB large page.
pub const FRAMES_PER_2M: u64 = 512;

/// A fresh (zeroed) user frame holding `data` (at most a page) at its
/// start; None when memory is short or `data` is longer than a page.
pub(crate) fn alloc_user_frame_with(data: &[u8]) -> Option<u64> {
    if data.len() > 4096 {
        return None;
    }
    let frame = alloc_user_frame()?;
    // SAFETY: the frame was just allocated, so nothing else refers to it,
    // and the direct map covers it; `data` fits in it.
    unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), phys_to_virt(frame) as *mut u8, data.len()) };
    Some(frame)
}

/// A user frame with stale content, for a caller that overwrites all of
/// it at once (`UserFrame::copy_of`); None as for [`alloc_user_frame`].
fn alloc_user_frame_uninit() -> Option<u64> {
    if free_frames() <= kernel_reserve_frames() + promised_frames() {
        return None;
    }
    FRAMES.lock().as_mut()?.alloc()
}

/// Copies one 4 KiB page with 16-byte SSE moves, 128 bytes per pass (the
/// kernel is built for baseline x86-64, whose SSE registers compiled
/// code may clobber anyway: a system call saves the user's first).
///
/// # Safety
/// Both pages are valid, 16-byte aligned, 4 KiB long and do not overlap.
unsafe fn copy_page(dst: *mut u8, src: *const u8) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        core::arch::asm!(
            "mov ecx, 32",
            "2:",
            "movaps xmm0, [rsi]",
            "movaps xmm1, [rsi + 16]",
            "movaps xmm2, [rsi + 32]",
            "movaps xmm3, [rsi + 48]",
            "movaps xmm4, [rsi + 64]",
            "movaps xmm5, [rsi + 80]",
            "movaps xmm6, [rsi + 96]",
            "movaps xmm7, [rsi + 112]",
            "movaps [rdi], xmm0",
            "movaps [rdi + 16], xmm1",
            "movaps [rdi + 32], xmm2",
            "movaps [rdi + 48], xmm3",
            "movaps [rdi + 64], xmm4",
            "movaps [rdi + 80], xmm5",
            "movaps [rdi + 96], xmm6",
            "movaps [rdi + 112], xmm7",
            "add rsi, 128",
            "add rdi, 128",
            "dec ecx",
            "jnz 2b",
            inout("rdi") dst => _,
            inout("rsi") src => _,
            out("ecx") _,
            out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _,
            out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _,
            options(nostack)
        );
    }
}

/// Zeroes one 4 KiB page with 16-byte SSE stores, 128 bytes per pass.
///
/// # Safety
/// The page is valid for writes, 16-byte aligned and 4 KiB long.
unsafe fn zero_page(dst: *mut u8) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        core::arch::asm!(
            "xorps xmm0, xmm0",
            "mov ecx, 32",
            "2:",
            "movaps [rdi], xmm0",
            "movaps [rdi + 16], xmm0",
            "movaps [rdi + 32], xmm0",
            "movaps [rdi + 48], xmm0",
            "movaps [rdi + 64], xmm0",
            "movaps [rdi + 80], xmm0",
            "movaps [rdi + 96], xmm0",
            "movaps [rdi + 112], xmm0",
            "add rdi, 128",
            "dec ecx",
            "jnz 2b",
            inout("rdi") dst => _,
            out("ecx") _,
            out("xmm0") _,
            options(nostack)
        );
    }
}

/// Returns a block from `alloc_promised_block_2m`.
pub(crate) fn free_block_2m(phys: u64) -> Result<(), vmkernel::frames::FrameError> {
    match FRAMES.lock().as_mut() {
        Some(fa) => fa.free_contiguous(phys, FRAMES_PER_2M),
        None => Err(vmkernel::frames::FrameError::OutOfRange(phys)),
    }
}

pub fn free_frames() -> u64 {
    FRAMES.lock().as_ref().map_or(0, |f| f.free_frames())
}

/// RAM the kernel manages (the figure in the ready line).
pub fn usable_bytes() -> u64 {
    USABLE_BYTES.load(Ordering::Relaxed)
}

/// Maps `[phys, phys+len)` of device memory uncached into the direct map
/// if it lies above what the direct map covers. Below that it is already
/// reachable at `phys_to_virt(phys)`.
pub fn direct_map_covers(phys: u64, len: u64) -> bool {
    phys + len <= DIRECT_MAP_END.load(Ordering::Relaxed)
}

pub(crate) fn free_frame(phys: u64) -> Result<(), vmkernel::frames::FrameError> {
    match FRAMES.lock().as_mut() {
        Some(fa) => fa.free_frame(phys),
        None => Err(vmkernel::frames::FrameError::OutOfRange(phys)),
    }
}

/// A frame of user memory its holder owns: zeroed (or holding the bytes
/// it was made with) when allocated, freed when dropped unless it was
/// handed to an address space ([`AddressSpace::map`]), which then owns
/// it. Its physical address never leaves the framework, so safe code can
/// neither free nor map memory it does not own.
pub struct UserFrame {
    phys: u64,
}

impl UserFrame {
    /// A zeroed frame, or None when only the kernel's reserve is left.
    pub fn alloc() -> Option<Self> {
        alloc_user_frame().map(|phys| Self { phys })
    }

    /// A frame holding `data` (at most a page) at its start, zeroed after
    /// it; None when memory is short or `data` is longer than a page.
    pub fn alloc_with(data: &[u8]) -> Option<Self> {
        alloc_user_frame_with(data).map(|phys| Self { phys })
    }

    /// A zeroed frame whose first content `fill` writes (it may leave
    /// zeros); None when memory is short or `fill` fails.
    pub fn alloc_filled(fill: impl FnOnce(&mut [u8; 4096]) -> bool) -> Option<Self> {
        let frame = Self::alloc()?;
        // SAFETY: the frame was just allocated, so nothing else refers to
        // it while `fill` runs; the direct map covers the whole page.
        let page = unsafe { &mut *(phys_to_virt(frame.phys) as *mut [u8; 4096]) };
        fill(page).then_some(frame)
    }

    /// A private copy of a shared frame's page; None when memory is short.
    pub fn copy_of(src: &SharedFrame) -> Option<Self> {
        let phys = alloc_user_frame_uninit()?;
        // SAFETY: `phys` is fresh and ours, `src` is a live frame (its
        // handle holds a reference); both lie in the direct map and the
        // copy overwrites the whole of the new page.
        unsafe { copy_page(phys_to_virt(phys) as *mut u8, phys_to_virt(src.phys) as *const u8) };
        Some(Self { phys })
    }

    /// Gives up ownership (to a page table).
    fn into_phys(self) -> u64 {
        let phys = self.phys;
        core::mem::forget(self);
        phys
    }
}

impl Drop for UserFrame {
    fn drop(&mut self) {
        let _ = free_frame(self.phys);
    }
}

/// A user frame with counted owners: a page of an executable's page
/// cache, mapped read-only and copy-on-write into the processes running
/// it ([`AddressSpace::map_shared`]). Each handle and each mapping holds
/// one reference; the frame is freed when the last lets go. Its content
/// never changes while it is shared (a write fault copies it first).
pub struct SharedFrame {
    phys: u64,
}

impl SharedFrame {
    /// Shares a frame its holder owns (one owner so far: this handle).
    pub fn new(frame: UserFrame) -> Self {
        Self { phys: frame.into_phys() }
    }
}

impl Clone for SharedFrame {
    fn clone(&self) -> Self {
        add_user_frame_ref(self.phys);
        Self { phys: self.phys }
    }
}

impl Drop for SharedFrame {
    fn drop(&mut self) {
        release_user_frame(self.phys);
    }
}

/// A user frame just taken out of an address space
/// ([`AddressSpace::unmap_deferred`]): its reference is dropped (the frame
/// freed when it was the last owner) when this is dropped — after the
/// other CPUs have dropped stale TLB entries for it.
pub struct UnmappedFrame {
    phys: u64,
}

impl Drop for UnmappedFrame {
    fn drop(&mut self) {
        release_user_frame(self.phys);
    }
}

/// Top of usable RAM (exclusive).
pub fn usable_top() -> u64 {
    USABLE_TOP.load(Ordering::Relaxed)
}

static USABLE_TOP: AtomicU64 = AtomicU64::new(0);

/// Translates a kernel virtual address through the kernel's tables.
pub fn translate_kernel(virt: u64) -> Option<paging::Translation> {
    paging::translate(&Tables, kernel_pml4(), virt)
}

/// An address space: a PML4 whose upper half is the kernel's (shared) and
/// whose lower half is its own. User worlds and tests build on it.
pub struct AddressSpace {
    pml4: u64,
    /// Serializes changes to the tables: threads of one process fault and
    /// map concurrently on different CPUs, and two CPUs filling the same
    /// empty slot with new tables would lose one of them.
    lock: Mutex<()>,
}

impl AddressSpace {
    /// An address space with no tables (a process that has exited).
    pub fn empty() -> Self {
        Self { pml4: 0, lock: Mutex::new(()) }
    }

    pub fn new() -> Option<Self> {
        let pml4 = alloc_user_frame()?;
        let kernel = kernel_pml4();
        for i in 256..512 {
            // SAFETY: both tables are page-table frames mapped by the direct map.
            unsafe {
                let e = core::ptr::read_volatile((phys_to_virt(kernel) as *const u64).add(i));
                core::ptr::write_volatile((phys_to_virt(pml4) as *mut u64).add(i), e);
            }
        }
        Some(Self { pml4, lock: Mutex::new(()) })
    }

    pub(crate) fn root(&self) -> u64 {
        self.pml4
    }

    /// Maps `frame` as one 4 KiB page at `virt` in the lower half; the
    /// address space owns the frame from then on. On failure (`virt`
    /// already mapped, no memory for a table) the frame is freed.
    pub fn map(&self, virt: u64, frame: UserFrame, flags: u64) -> Result<(), paging::MapError> {
        if virt >= 1 << 47 || self.pml4 == 0 {
            return Err(paging::MapError::NonCanonical(virt));
        }
        let _g = self.lock.lock();
        paging::map(&mut Tables, self.pml4, virt, frame.phys, paging::PageSize::Size4K, flags)?;
        frame.into_phys();
        Ok(())
    }

    /// Maps a shared frame at `virt` as one more owner of it: read-only
    /// and copy-on-write whatever `flags` say, so neither a write nor
    /// `protect` can change the page the other owners see.
    pub fn map_shared(&self, virt: u64, frame: &SharedFrame, flags: u64) -> Result<(), paging::MapError> {
        if virt >= 1 << 47 || self.pml4 == 0 {
            return Err(paging::MapError::NonCanonical(virt));
        }
        let flags = (flags & !paging::WRITABLE) | paging::COPY_ON_WRITE;
        let _g = self.lock.lock();
        add_user_frame_ref(frame.phys);
        let r = paging::map(&mut Tables, self.pml4, virt, frame.phys, paging::PageSize::Size4K, flags);
        if r.is_err() {
            release_user_frame(frame.phys);
        }
        r
    }

    /// Whether nothing is mapped at `virt`.
    pub fn is_unmapped(&self, virt: u64) -> bool {
        self.pml4 != 0 && virt < 1 << 47 && paging::slot_is_free(&Tables, self.pml4, virt, paging::PageSize::Size4K)
    }

    pub fn translate(&self, virt: u64) -> Option<paging::Translation> {
        if self.pml4 == 0 {
            return None;
        }
        paging::translate(&Tables, self.pml4, virt)
    }

    /// The frame behind `virt` if it is mapped user-accessible (and
    /// writable, for `write`): the only frames the safe user-memory copies
    /// below touch, so they can do nothing ring 3 could not do itself.
    fn user_frame(&self, virt: u64, write: bool) -> Option<u64> {
        let t = self.translate(virt)?;
        let ok = t.flags & paging::USER != 0 && (!write || t.flags & paging::WRITABLE != 0);
        ok.then_some(t.phys & !0xfff)
    }

    /// Copies user memory at `virt` into `buf`, which must not cross a page
    /// boundary. False (nothing copied) unless the page is mapped
    /// user-accessible.
    pub fn read_user_page(&self, virt: u64, buf: &mut [u8]) -> bool {
        let off = virt & 0xfff;
        if off + buf.len() as u64 > 4096 {
            return false;
        }
        let Some(frame) = self.user_frame(virt, false) else { return false };
        // SAFETY: `frame` is a user page of this address space, mapped by the
        // direct map; the range stays inside it. User code may write it
        // concurrently: the bytes are copied, never referenced.
        unsafe { core::ptr::copy_nonoverlapping((phys_to_virt(frame) + off) as *const u8, buf.as_mut_ptr(), buf.len()) };
        true
    }

    /// Copies `data` to user memory at `virt` (not crossing a page
    /// boundary). False (nothing copied) unless the page is mapped
    /// user-writable.
    pub fn write_user_page(&self, virt: u64, data: &[u8]) -> bool {
        let off = virt & 0xfff;
        if off + data.len() as u64 > 4096 {
            return false;
        }
        let Some(frame) = self.user_frame(virt, true) else { return false };
        // SAFETY: as in `read_user_page`; the page is user-writable, so
        // this writes nothing ring 3 could not write itself.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), (phys_to_virt(frame) + off) as *mut u8, data.len()) };
        true
    }

    /// Reads the aligned 32-bit user word at `virt` (futexes) with one
    /// load. None unless it is mapped user-accessible.
    pub fn read_user_u32(&self, virt: u64) -> Option<u32> {
        if !virt.is_multiple_of(4) {
            return None;
        }
        let frame = self.user_frame(virt, false)?;
        // SAFETY: an aligned word inside a user page of this address space,
        // mapped by the direct map.
        Some(unsafe { core::ptr::read_volatile((phys_to_virt(frame) + (virt & 0xfff)) as *const u32) })
    }

    /// The first mapped page in `[from, end)`: loops over a range visit
    /// only its mapped pages with it, whatever the range's length (see
    /// `paging::next_present_4k`).
    pub fn next_mapped(&self, from: u64, end: u64) -> Option<u64> {
        if self.pml4 == 0 {
            return None;
        }
        let _g = self.lock.lock();
        paging::next_present_4k(&Tables, self.pml4, from, end)
    }

    /// The mapped pages of `[start, end)`, in address order.
    pub fn mapped_pages(&self, start: u64, end: u64) -> impl Iterator<Item = u64> + '_ {
        let mut at = Some(start);
        core::iter::from_fn(move || {
            let p = self.next_mapped(at?, end)?;
            at = p.checked_add(4096);
            Some(p)
        })
    }

    /// Removes the mapping at `virt` and returns its frame without releasing
    /// it: the caller drops it after other CPUs dropped stale TLB entries.
    pub fn unmap_deferred(&self, virt: u64) -> Option<UnmappedFrame> {
        if self.pml4 == 0 {
            return None;
        }
        let _g = self.lock.lock();
        let phys = paging::unmap_4k(&mut Tables, self.pml4, virt)?;
        invalidate_page(virt);
        Some(UnmappedFrame { phys })
    }

    /// Makes a present page writable and not copy-on-write (shared
    /// mappings after fork: both processes write the same frame).
    pub fn make_shared_writable(&self, virt: u64) {
        if self.pml4 == 0 {
            return;
        }
        let _g = self.lock.lock();
        let mut t = Tables;
        if let Some((table, i)) = paging::leaf_slot(&t, self.pml4, virt) {
            let e = t.read(table, i);
            if e & paging::PRESENT != 0 {
                t.write(table, i, (e & !paging::COPY_ON_WRITE) | paging::WRITABLE);
                invalidate_page(virt);
            }
        }
    }

    /// Moves the 4 KiB page at `from` to `to` (mremap): the same frame and
    /// flags, copy-on-write state included. False if nothing is mapped at
    /// `from` or `to` is taken (nothing changes then). The caller flushes
    /// other CPUs' TLBs.
    pub fn move_page(&self, from: u64, to: u64) -> bool {
        if self.pml4 == 0 || to >= 1 << 47 {
            return false;
        }
        let _g = self.lock.lock();
        let mut t = Tables;
        let Some((table, i)) = paging::leaf_slot(&t, self.pml4, from) else { return false };
        let e = t.read(table, i);
        if e & paging::PRESENT == 0 {
            return false;
        }
        if paging::map(&mut Tables, self.pml4, to, e & paging::ADDR_MASK, paging::PageSize::Size4K, e & !paging::ADDR_MASK).is_err() {
            return false;
        }
        // Mapping `to` only added tables: the slot of `from` is unchanged.
        t.write(table, i, 0);
        invalidate_page(from);
        true
    }

    /// Rewrites the protection bits of the 4 KiB page at `virt`, keeping
    /// copy-on-write pages read-only until they are copied.
    pub fn protect(&self, virt: u64, flags: u64) {
        if self.pml4 == 0 {
            return;
        }
        let _g = self.lock.lock();
        let mut t = Tables;
        if let Some((table, i)) = paging::leaf_slot(&t, self.pml4, virt) {
            let e = t.read(table, i);
            if e & paging::PRESENT != 0 {
                let cow = e & paging::COPY_ON_WRITE;
                let mut nf = flags | paging::USER | paging::PRESENT | cow;
                if cow != 0 {
                    nf &= !paging::WRITABLE;
                }
                t.write(table, i, (e & paging::ADDR_MASK) | nf);
                invalidate_page(virt);
            }
        }
    }

    /// Runs `f` with this address space loaded in CR3, then restores the
    /// kernel's tables. The kernel runs with interrupts off, so nothing else
    /// runs on this CPU meanwhile.
    pub fn with_active<R>(&self, f: impl FnOnce() -> R) -> R {
        if self.pml4 == 0 {
            return f();
        }
        // SAFETY: the upper half (kernel, stacks, direct map) is identical.
        unsafe { cpu::write_cr3(self.pml4) };
        let r = f();
        // SAFETY: restoring the kernel's own tables.
        unsafe { cpu::write_cr3(kernel_pml4()) };
        r
    }
}

/// Makes the kernel's own tables the calling CPU's address space (before a
/// process's address space is dropped).
pub(crate) fn activate_kernel_tables() {
    // SAFETY: the kernel's tables map everything the kernel uses.
    unsafe { cpu::write_cr3(kernel_pml4()) };
}

impl Drop for AddressSpace {
    /// Frees the lower half's page-table frames (not the pages they map:
    /// their owner frees those) and the PML4.
    fn drop(&mut self) {
        fn free_level(fa: &mut FrameAllocator, table: u64, level: u32, range: core::ops::Range<usize>) {
            for i in range {
                // SAFETY: page-table frames are mapped by the direct map.
                let e = unsafe { core::ptr::read_volatile((phys_to_virt(table) as *const u64).add(i)) };
                if e & paging::PRESENT == 0 || e & paging::HUGE != 0 || level == 1 {
                    continue;
                }
                let next = e & paging::ADDR_MASK;
                free_level(fa, next, level - 1, 0..512);
                let _ = fa.free_frame(next);
            }
        }
        if self.pml4 == 0 {
            return;
        }
        // Never free the tables this CPU runs on.
        if cpu::read_cr3() == self.pml4 {
            activate_kernel_tables();
        }
        let mut guard = FRAMES.lock();
        if let Some(fa) = guard.as_mut() {
            free_level(fa, self.pml4, 4, 0..256);
            let _ = fa.free_frame(self.pml4);
        }
    }
}

/// Owners of user frames shared copy-on-write after fork, for frames with
/// two or more (a frame absent from the map has exactly one owner).
/// Separate from the frame allocator's lock: the map allocates from the heap.
static SHARED_FRAMES: Mutex<alloc::collections::BTreeMap<u64, u32>> = Mutex::new(alloc::collections::BTreeMap::new());

/// Adds one owner to a user frame.
fn add_user_frame_ref(frame: u64) {
    *SHARED_FRAMES.lock().entry(frame).or_insert(1) += 1;
}

/// Drops one reference to a user frame; frees it when none are left.
fn release_user_frame(frame: u64) {
    let mut shared = SHARED_FRAMES.lock();
    match shared.get_mut(&frame) {
        Some(n) if *n > 2 => *n -= 1,
        // Down to one owner: it is no longer shared.
        Some(_) => {
            shared.remove(&frame);
        }
        None => {
            drop(shared);
            let _ = free_frame(frame);
        }
    }
}

impl AddressSpace {
    /// Frees every 4 KiB page mapped in the lower half (dropping shared
    /// frames' references). The tables themselves go in `drop`.
    pub fn free_user_frames(&self) {
        fn walk(table: u64, level: u32, range: core::ops::Range<usize>) {
            for i in range {
                // SAFETY: page-table frames are mapped by the direct map.
                let slot = unsafe { (phys_to_virt(table) as *mut u64).add(i) };
                // SAFETY: as above.
                let e = unsafe { core::ptr::read_volatile(slot) };
                if e & paging::PRESENT == 0 {
                    continue;
                }
                if level == 1 {
                    // SAFETY: as above; the entry no longer maps anything.
                    unsafe { core::ptr::write_volatile(slot, 0) };
                    release_user_frame(e & paging::ADDR_MASK);
                } else if e & paging::HUGE == 0 {
                    walk(e & paging::ADDR_MASK, level - 1, 0..512);
                }
            }
        }
        if self.pml4 != 0 {
            let _g = self.lock.lock();
            walk(self.pml4, 4, 0..256);
        }
    }

    /// A copy-on-write duplicate of this address space (fork).
    pub fn fork(&self) -> Option<AddressSpace> {
        if self.pml4 == 0 {
            return None;
        }
        let _g = self.lock.lock();
        let child = AddressSpace::new()?;
        let mut shared = alloc::vec::Vec::new();
        let r = paging::fork_lower_half(&mut Tables, self.pml4, child.pml4, |f| shared.push(f));
        {
            let mut map = SHARED_FRAMES.lock();
            for f in &shared {
                *map.entry(*f).or_insert(1) += 1;
            }
        }
        // The parent's writable pages just became read-only.
        flush_tlb();
        match r {
            Ok(()) => Some(child),
            Err(_) => {
                child.free_user_frames();
                None
            }
        }
    }

    /// Resolves a write fault on a copy-on-write page: the last owner gets
    /// the page back writable, others get a private copy. Returns false if
    /// `virt` is not a copy-on-write page (a real protection fault) or
    /// memory ran out.
    pub fn resolve_cow(&self, virt: u64) -> bool {
        if self.pml4 == 0 {
            return false;
        }
        let _g = self.lock.lock();
        let mut t = Tables;
        let Some((table, i)) = paging::leaf_slot(&t, self.pml4, virt & !0xfff) else { return false };
        let e = t.read(table, i);
        if e & paging::PRESENT == 0 || e & paging::COPY_ON_WRITE == 0 || e & paging::USER == 0 {
            return false;
        }
        let frame = e & paging::ADDR_MASK;
        let flags = (e & !paging::ADDR_MASK & !paging::COPY_ON_WRITE) | paging::WRITABLE;
        let sole_owner = {
            let shared = SHARED_FRAMES.lock();
            // Two or more owners are in the map; absent means ours alone.
            !shared.contains_key(&frame)
        };
        if sole_owner {
            t.write(table, i, frame | flags);
        } else {
            let Some(copy) = alloc_user_frame() else { return false };
            // SAFETY: both frames are mapped by the direct map; `copy` is new.
            unsafe {
                core::ptr::copy_nonoverlapping(phys_to_virt(frame) as *const u8, phys_to_virt(copy) as *mut u8, 4096)
            };
            t.write(table, i, copy | flags);
            release_user_frame(frame);
        }
        invalidate_page(virt);
        true
    }
}

/// Invalidates one page's TLB entry on this CPU.
pub fn invalidate_page(virt: u64) {
    // SAFETY: INVLPG only drops a cached translation.
    unsafe { core::arch::asm!("invlpg [{}]", in(reg) virt, options(nostack, preserves_flags)) };
}

/// Flushes this CPU's non-global TLB entries.
pub fn flush_tlb() {
    // SAFETY: reloading CR3 with its current value only flushes the TLB.
    unsafe { cpu::write_cr3(cpu::read_cr3()) };
}
