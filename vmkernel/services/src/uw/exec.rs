//! execve: loading a static ELF executable (or a `#!` script's
//! interpreter) into a fresh address space with its initial stack.

use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use spin::Mutex;
use core::sync::atomic::{AtomicU64, Ordering};
use vmkernel::elf::{self, LoadOptions, USER_END};
use vmkernel::linux_abi::flags::mman::{MAP_ANONYMOUS, MAP_FIXED, MAP_GROWSDOWN, MAP_PRIVATE, PROT_READ, PROT_WRITE};
use vmkernel::user_stack::{self, AuxFacts};
use vmkernel::vfs::{Errno, OpenFile};
use vmkernel::vm_regions::MmapFile;

use super::fault::pte_flags;
use super::files;
use super::process::{Mm, Process, Thread};
use crate::arch::trap::TrapFrame;
use crate::mm::{self, SharedFrame};
use crate::world;

/// Initial stack area mapped at exec (it grows down on demand after that).
const STACK_INITIAL: u64 = 128 * 1024;

/// A loaded program, not yet installed in the process.
pub struct Image {
    pub mm: Arc<Mm>,
    pub entry: u64,
    pub rsp: u64,
    pub path: Vec<u8>,
    pub argv: Vec<Vec<u8>>,
}

/// The executable a process image pages in from: its segments are mapped
/// as private areas backed by the open file and each page is read on its
/// first touch (`fault`), so exec costs what the program uses, not the
/// file's size. Opening the file for writing is refused (ETXTBSY) while an
/// image runs from it; the file's size and modification time at exec are
/// kept as well and a page is read only while they are unchanged (a file
/// changed by other means, e.g. replaced through another mount, makes
/// the program fault with SIGSEGV instead of running a mix of two versions).
pub struct ExecImage {
    _executing: vmkernel::vfs::ExecutingFile<'static>,
    file: Arc<OpenFile>,
    size: u64,
    mtime: vmkernel::vfs::Timespec,
    mappings: Vec<elf::Mapping>,
    pages: Arc<FilePages>,
}

/// An executable's page cache: the file's pages as read once, shared by
/// every process running that version of the file (same device, inode,
/// size and modification time). A page wholly inside a segment's file
/// bytes is mapped read-only and copy-on-write from here instead of being
/// read and copied for each process, so an exec of a program already
/// running (a shell's fork + exec of itself, BusyBox's applets) finds most
/// of its pages in memory. The cache lives as long as an image uses it.
pub struct FilePages {
    key: (u64, u64, u64, vmkernel::vfs::Timespec),
    pages: Mutex<Vec<Option<SharedFrame>>>,
}

/// The live caches (dead entries are swept as new ones come).
static FILE_PAGES: Mutex<Vec<Weak<FilePages>>> = Mutex::new(Vec::new());

/// Frames the live caches hold (`Cached:` in /proc/meminfo).
static CACHED_PAGES: AtomicU64 = AtomicU64::new(0);

/// Frames the executables' page caches hold.
pub fn cached_pages() -> u64 {
    CACHED_PAGES.load(Ordering::Relaxed)
}

impl Drop for FilePages {
    fn drop(&mut self) {
        let n = self.pages.get_mut().iter().filter(|p| p.is_some()).count() as u64;
        CACHED_PAGES.fetch_sub(n, Ordering::Relaxed);
    }
}

impl FilePages {
    /// The cache of the file version `st` describes, shared if one is live.
    fn of(st: &vmkernel::vfs::Stat) -> Arc<FilePages> {
        let key = (st.dev, st.ino, st.size, st.mtime);
        let mut all = FILE_PAGES.lock();
        if let Some(live) = all.iter().filter_map(Weak::upgrade).find(|c| c.key == key) {
            return live;
        }
        all.retain(|w| w.strong_count() > 0);
        let pages = Arc::new(FilePages { key, pages: Mutex::new(Vec::new()) });
        all.push(Arc::downgrade(&pages));
        pages
    }

    fn get(&self, index: usize) -> Option<SharedFrame> {
        self.pages.lock().get(index).and_then(|p| p.clone())
    }
}

/// Pages mapped around a fault on an executable's page from its cache
/// (Linux maps 16 as well): a program's first run through its code takes
/// a fault per 64 KiB instead of one per page.
const FAULT_AROUND_PAGES: u64 = 16;

impl ExecImage {
    /// The areas' backing id (the open file's address, unique while the
    /// image lives, as for other file mappings).
    pub fn id(&self) -> u64 {
        Arc::as_ptr(&self.file) as u64
    }

    /// The first content of the page at `page` whose area maps the file
    /// from `file_offset`: file bytes, then zeros past the segment's file
    /// part. False if no segment maps that page from that offset, or the
    /// file changed or cannot be read.
    pub fn fill_page(&self, page: u64, file_offset: u64, buf: &mut [u8; 4096]) -> bool {
        let Some(m) = self.mappings.iter().find(|m| m.start <= page && page < m.end) else { return false };
        if m.file_offset + (page - m.start) != file_offset {
            return false;
        }
        let st = self.file.stat();
        if st.size != self.size || st.mtime != self.mtime {
            log::warn!("an executable changed while it runs: its process cannot page in {page:#x}");
            return false;
        }
        m.fill(&FileReader { file: &self.file, size: self.size }, page - m.start, buf).is_ok()
    }
}

impl ExecImage {
    /// The shared page of the image at `page`, which its area maps from
    /// `file_offset`, when the whole page is file bytes of a segment (read
    /// into the cache on first use): Ok(None) when the page is not one
    /// the cache holds (a segment's last, partly zeroed page: see
    /// `fill_page`), Err when the file changed or cannot be read.
    pub fn shared_page(&self, page: u64, file_offset: u64) -> Result<Option<SharedFrame>, ()> {
        let Some(m) = self.cacheable(page, file_offset) else { return Ok(None) };
        let index = (file_offset / 4096) as usize;
        if let Some(f) = self.pages.get(index) {
            return Ok(Some(f));
        }
        let st = self.file.stat();
        if st.size != self.size || st.mtime != self.mtime {
            log::warn!("an executable changed while it runs: its process cannot page in {page:#x}");
            return Err(());
        }
        // Read without the cache's lock (the file system may sleep).
        let reader = FileReader { file: &self.file, size: self.size };
        let frame = mm::UserFrame::alloc_filled(|buf| m.fill(&reader, page - m.start, buf).is_ok()).ok_or(())?;
        let frame = SharedFrame::new(frame);
        let mut pages = self.pages.pages.lock();
        if pages.len() <= index {
            pages.resize_with(index + 1, || None);
        }
        // Another CPU may have read it meanwhile: keep the first.
        if pages[index].is_none() {
            CACHED_PAGES.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Some(pages[index].get_or_insert(frame).clone()))
    }

    /// The cached page at `page` (mapped from `file_offset`) if it is
    /// already in memory: what a fault maps around the faulting page.
    pub fn cached_page(&self, page: u64, file_offset: u64) -> Option<SharedFrame> {
        self.cacheable(page, file_offset)?;
        self.pages.get((file_offset / 4096) as usize)
    }

    /// The segment whose file bytes fill the whole page at `page`,
    /// mapped from `file_offset`.
    fn cacheable(&self, page: u64, file_offset: u64) -> Option<&elf::Mapping> {
        let m = self.mappings.iter().find(|m| m.start <= page && page < m.end)?;
        let within = page - m.start;
        (m.file_offset + within == file_offset && within + 4096 <= m.file_len && file_offset.is_multiple_of(4096)).then_some(m)
    }
}

/// Maps the cached pages of `image` near `page` (inside `vma`, the
/// faulting area) that `mm` has not mapped yet.
pub fn fault_around(mm: &Mm, image: &ExecImage, vma: &vmkernel::vm_regions::Vma, page: u64, file_offset_of_start: u64) {
    let window = FAULT_AROUND_PAGES * 4096;
    let first = (page & !(window - 1)).max(vma.start);
    let end = (page & !(window - 1)).saturating_add(window).min(vma.end);
    let mut va = first;
    while va < end {
        if va != page
            && mm.space.is_unmapped(va)
            && let Some(f) = image.cached_page(va, file_offset_of_start + (va - vma.start))
        {
            let _ = mm.space.map_shared(va, &f, pte_flags(vma.prot));
        }
        va += 4096;
    }
}

/// The ELF parser's view of an open file: positioned reads.
struct FileReader<'a> {
    file: &'a OpenFile,
    size: u64,
}

impl elf::ReadAt for FileReader<'_> {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), i32> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.pread(offset + done as u64, &mut buf[done..]) {
                Ok(0) => return Err(vmkernel::linux_abi::errno::EIO),
                Ok(n) => done += n,
                Err(e) => return Err(e.0),
            }
        }
        Ok(())
    }
}

/// Loads `path` for process `p` (its credentials and cwd) with `argv` and
/// `envp`. Nothing about `p` changes: the caller installs the image.
pub fn load(p: &Process, path: &[u8], argv: Vec<Vec<u8>>, envp: &[Vec<u8>]) -> Result<Image, Errno> {
    load_depth(p, path, argv, envp, 0)
}

fn load_depth(p: &Process, path: &[u8], argv: Vec<Vec<u8>>, envp: &[Vec<u8>], depth: u32) -> Result<Image, Errno> {
    let vfs = files::vfs().ok_or(Errno::ENOENT)?;
    let cred = p.creds();
    let cwd = p.cwd.lock().clone().unwrap_or_else(|| vfs.root());
    let f = Arc::new(vfs.open_exec(&cred, &cwd, path)?);
    let st = f.stat();
    let mut head = [0u8; 256];
    let head_len = f.pread(0, &mut head)?;
    let head = &head[..head_len];
    if head.starts_with(b"#!") {
        if depth > 2 {
            return Err(Errno::ELOOP);
        }
        // "#!interpreter [one argument]": run the interpreter with the
        // script's path in place of argv[0].
        let line_end = head.iter().position(|&c| c == b'\n').unwrap_or(head.len());
        let line = &head[2..line_end];
        let mut parts = line.splitn(2, |&c| c == b' ' || c == b'\t').map(|s| s.trim_ascii()).filter(|s| !s.is_empty());
        let interp = parts.next().ok_or(Errno::ENOEXEC)?.to_vec();
        let mut nargv = alloc::vec![interp.clone()];
        if let Some(a) = parts.next() {
            nargv.push(a.to_vec());
        }
        nargv.push(path.to_vec());
        nargv.extend(argv.into_iter().skip(1));
        return load_depth(p, &interp, nargv, envp, depth + 1);
    }
    let plan = elf::parse(&FileReader { file: &f, size: st.size }, &LoadOptions::default()).map_err(|e| {
        log::info!("exec {}: {e}", alloc::string::String::from_utf8_lossy(path));
        Errno(e.errno())
    })?;
    let pages = FilePages::of(&st);
    let image = Arc::new(ExecImage { _executing: vfs.deny_write(&f), file: f, size: st.size, mtime: st.mtime, mappings: plan.mappings.clone(), pages });
    let m = Mm::with_image(Some(image.clone())).ok_or(Errno::ENOMEM)?;
    {
        let mut vm = m.vm.lock();
        for seg in &plan.mappings {
            // Private areas backed by the executable: pages come in on
            // first touch (`ExecImage::fill_page`); a segment with no file
            // bytes (all .bss) is plain anonymous memory.
            let (flags, file) = if seg.file_len > 0 {
                (MAP_PRIVATE | MAP_FIXED, Some(MmapFile { id: image.id(), readable: true, writable: false }))
            } else {
                (MAP_PRIVATE | MAP_FIXED | MAP_ANONYMOUS, None)
            };
            vm.mmap(seg.start, seg.len(), seg.prot, flags, file, seg.file_offset).map_err(Errno)?;
        }
        vm.set_initial_brk(plan.brk);
        let top = USER_END;
        vm.mmap(top - STACK_INITIAL, STACK_INITIAL, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED | MAP_ANONYMOUS | MAP_GROWSDOWN, None, 0)
            .map_err(Errno)?;
    }
    // Charge the new image to the process's group (refused if over its limit).
    let group = p.group.load(Ordering::Relaxed);
    m.group.store(group, Ordering::Release);
    let need = super::commit::commit_of(&m.vm.lock());
    let current = p.mm().committed.load(Ordering::Relaxed);
    if !super::commit::may_commit(group, need.saturating_sub(current)) {
        return Err(Errno::ENOMEM);
    }
    super::commit::recharge(&m);
    let ids = p.ids.lock().clone();
    let mut random = [0u8; 16];
    files::fill_random(&mut random);
    let facts = AuxFacts {
        uid: ids.uid,
        euid: ids.euid,
        gid: ids.gid,
        egid: ids.egid,
        hwcap: crate::arch::cpu::cpuid(1, 0).edx as u64,
        ..AuxFacts::from_plan(&plan)
    };
    let argv_refs: Vec<&[u8]> = argv.iter().map(|a| a.as_slice()).collect();
    let envp_refs: Vec<&[u8]> = envp.iter().map(|a| a.as_slice()).collect();
    let st = user_stack::build(USER_END, &argv_refs, &envp_refs, path, &random, &facts).map_err(Errno)?;
    // Populate the stack pages holding the image.
    let base = st.rsp & !0xfff;
    let mut va = base;
    while va < USER_END {
        let frame = mm::UserFrame::alloc().ok_or(Errno::ENOMEM)?;
        m.space.map(va, frame, pte_flags(PROT_READ | PROT_WRITE)).map_err(|_| Errno::ENOMEM)?;
        va += 4096;
    }
    let mut off = 0usize;
    while off < st.image.len() {
        let a = st.rsp + off as u64;
        let n = ((4096 - (a & 0xfff)) as usize).min(st.image.len() - off);
        if !m.space.write_user_page(a, &st.image[off..off + n]) {
            return Err(Errno::EFAULT);
        }
        off += n;
    }
    Ok(Image { mm: m, entry: plan.entry, rsp: st.rsp, path: path.to_vec(), argv })
}

/// Installs `img` as the process image of `t`'s process and sets `frame`
/// to enter it. Other threads of the process are ended.
pub fn commit(t: &Arc<Thread>, img: Image, frame: &mut TrapFrame) {
    let p = &t.process;
    for other in p.threads.lock().iter().filter(|o| o.tid != t.tid) {
        other.sig_pending.fetch_or(1 << 8, Ordering::AcqRel); // SIGKILL
        world::wake(other.world.load(Ordering::Relaxed));
    }
    let space = img.mm.space.clone();
    let old = core::mem::replace(&mut *p.mm.lock(), img.mm);
    if let Some(w) = world::current() {
        w.set_address_space(Some(space));
    }
    world::with_current_user_fpu(|f| f.reset());
    drop(old);
    let closed = p.fds.lock().close_on_exec();
    drop(closed);
    p.sig.lock().reset_for_exec();
    *t.altstack.lock() = (0, 0, 2);
    t.fs_base.store(0, Ordering::Release);
    crate::arch::syscall::set_user_fs_base(0);
    t.clear_child_tid.store(0, Ordering::Release);
    *p.name.lock() = files::name_of(&img.path);
    let mut cmd = Vec::new();
    for a in &img.argv {
        cmd.extend_from_slice(a);
        cmd.push(0);
    }
    *p.cmdline.lock() = cmd;
    *p.exe.lock() = absolute(p, &img.path);
    // A vfork parent may run again now.
    p.vfork_released.store(true, Ordering::Release);
    super::io_wait::notify();
    *frame = TrapFrame { rip: img.entry, rsp: img.rsp, rflags: 0x202, cs: frame.cs, ss: frame.ss, ..Default::default() };
}

fn absolute(p: &Process, path: &[u8]) -> Vec<u8> {
    if path.starts_with(b"/") {
        return path.to_vec();
    }
    let mut v = files::vfs()
        .and_then(|vfs| p.cwd.lock().as_ref().and_then(|c| vfs.path_of(c).ok()))
        .unwrap_or_else(|| b"/".to_vec());
    if !v.ends_with(b"/") {
        v.push(b'/');
    }
    v.extend_from_slice(path);
    v
}

/// Starts `path` as a new process (the kernel starting init).
pub fn spawn(path: &[u8], argv: &[&[u8]], envp: &[&[u8]]) -> Result<Arc<Process>, Errno> {
    let p = Process::new(&files::name_of(path)).ok_or(Errno::ENOMEM)?;
    let argv: Vec<Vec<u8>> = argv.iter().map(|a| a.to_vec()).collect();
    let envp: Vec<Vec<u8>> = envp.iter().map(|a| a.to_vec()).collect();
    let img = match load(&p, path, argv, &envp) {
        Ok(i) => i,
        Err(e) => {
            super::process::reap(&p);
            return Err(e);
        }
    };
    *p.name.lock() = files::name_of(&img.path);
    let mut cmd = Vec::new();
    for a in &img.argv {
        cmd.extend_from_slice(a);
        cmd.push(0);
    }
    *p.cmdline.lock() = cmd;
    *p.exe.lock() = img.path.clone();
    let (entry, rsp) = (img.entry, img.rsp);
    *p.mm.lock() = img.mm;
    attach_console(&p);
    // The kernel-started process leads its session and owns the console.
    if let Some(tty) = files::console_tty() {
        tty.set_session(p.sid.load(Ordering::Relaxed));
        tty.set_foreground_pgrp(p.pgid.load(Ordering::Relaxed));
    }
    p.start(world::default_group(), entry, rsp).map_err(|_| Errno::ENOMEM)?;
    Ok(p)
}

/// Opens /dev/console as descriptors 0, 1 and 2 of `p`.
pub fn attach_console(p: &Process) {
    if let Some(vfs) = files::vfs()
        && let Ok(f) = vfs.open(&p.creds(), &vfs.root(), b"/dev/console", 0o2, 0)
    {
        let f = Arc::new(f);
        let mut fds = p.fds.lock();
        for _ in 0..3 {
            let _ = fds.insert(f.clone(), false);
        }
    }
}
