//! In-kernel tests: run on the real (emulated) hardware by a test build of
//! the boot, selected with `test=<prefix>` (`test=all` runs everything).
//!
//! Output: `ktest: running N tests (selector "...")`, then one line each:
//! `ktest: <name> ... ok`, `ktest: <name> ... FAILED: <why>` or
//! `ktest: <name> ... skipped (<why>)` (a test whose hardware is missing,
//! e.g. the VMM tests without a virtualization backend), then
//! `ktest: N passed, M failed, K skipped`. The image test decides whether
//! a skip is acceptable on the machine it boots (it is not where the
//! emulator offers SVM).
//! With `debug_exit` the result becomes QEMU's exit status. A panic inside
//! a test stops the kernel through the panic handler, which reports failure.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use crate::arch::{cpu, gdt, trap};
use crate::{kprintln, mm, time};
use vmkernel::paging;

type TestResult = Result<(), String>;

/// How a test says it did not run (see `skip`).
const SKIP_MARK: &str = "\u{0}skip:";

/// The result of a test that cannot run on this machine.
fn skip(why: &str) -> TestResult {
    Err(format!("{SKIP_MARK}{why}"))
}

macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        let holds: bool = $cond;
        if !holds {
            return Err(format!($($arg)*));
        }
    };
}

/// A named in-kernel test.
type Test = (&'static str, fn() -> TestResult);

const TESTS: &[Test] = &[
    ("mm.frames_distinct_zeroed_and_returned", mm_frames),
    ("mm.heap_grows_and_reuses", mm_heap),
    ("mm.kernel_image_protections", mm_protections),
    ("mm.page_tables_map_lower_half", mm_lower_half_mapping),
    ("time.monotonic", time_monotonic),
    ("time.tsc_matches_pit", time_tsc_vs_pit),
    ("time.delay_lasts_at_least_requested", time_delay),
    ("cpu.percpu_block", percpu_block),
    ("trap.breakpoint_returns", trap_breakpoint),
    ("acpi.platform_tables", acpi_tables),
    ("world.ping_pong_wait_queue", world_ping_pong),
    ("world.exit_frees_worlds", world_exit_reaps),
    ("world.group_shares_2_to_1", world_group_shares),
    ("user.syscalls_from_ring3", user_syscalls),
    ("user.faults_kill_only_the_process", user_faults),
    ("user.extended_state_survives_switches", user_fpu_state),
    ("timer.ticks_at_100hz_on_every_cpu", timer_rates),
    ("sched.user_shares_2_to_1", sched_user_shares),
    ("sched.user_limit_25_percent", sched_user_limit),
    ("sched.user_reservation_40_percent", sched_user_reservation),
    ("vmm.flat_guest_runs_and_exits", vmm_flat_guest),
    ("vmm.guest_ram_in_large_pages", vmm_large_pages),
    ("nic.arp_reply_by_interrupt", crate::nic::ktest::arp_reply_by_interrupt),
    ("nic.rings_wrap_without_allocation", crate::nic::ktest::rings_wrap_without_allocation),
];

/// Runs the scheduler from the test (idle) context until `done()` or a
/// timeout; returns whether `done()` became true.
fn run_worlds_until(timeout_ms: u64, mut done: impl FnMut() -> bool) -> bool {
    let end = time::uptime_ns() + timeout_ms * 1_000_000;
    while time::uptime_ns() < end {
        if done() {
            return true;
        }
        crate::world::schedule();
    }
    done()
}

/// Runs the selected tests; returns true if all passed.
pub fn run(selector: &str) -> bool {
    let selected: Vec<_> = TESTS.iter().filter(|(n, _)| selector == "all" || n.starts_with(selector)).collect();
    kprintln!("ktest: running {} tests (selector \"{}\")", selected.len(), selector);
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for (name, f) in &selected {
        match f() {
            Ok(()) => {
                passed += 1;
                kprintln!("ktest: {name} ... ok");
            }
            Err(e) if e.starts_with(SKIP_MARK) => {
                skipped += 1;
                kprintln!("ktest: {name} ... skipped ({})", &e[SKIP_MARK.len()..]);
            }
            Err(e) => {
                failed += 1;
                kprintln!("ktest: {name} ... FAILED: {e}");
            }
        }
    }
    kprintln!("ktest: {passed} passed, {failed} failed, {skipped} skipped");
    failed == 0 && !selected.is_empty()
}

fn mm_frames() -> TestResult {
    let before = mm::free_frames();
    let mut frames = Vec::new();
    for i in 0..256u64 {
        let f = mm::alloc_frame().ok_or("out of frames")?;
        ensure!(f % 4096 == 0, "frame {f:#x} not aligned");
        ensure!(f >= 1 << 20, "frame {f:#x} below 1 MiB was handed out");
        // SAFETY: the frame is ours; it is mapped by the direct map.
        let page = unsafe { core::slice::from_raw_parts_mut(mm::phys_to_virt(f) as *mut u64, 512) };
        ensure!(page.iter().all(|&w| w == 0), "frame {f:#x} not zeroed");
        page.fill(0x5a5a_0000 + i);
        frames.push(f);
    }
    for (i, &f) in frames.iter().enumerate() {
        // SAFETY: as above.
        let w = unsafe { core::ptr::read_volatile(mm::phys_to_virt(f) as *const u64) };
        ensure!(w == 0x5a5a_0000 + i as u64, "frame {f:#x} aliased by another allocation");
    }
    ensure!(mm::free_frames() == before - 256, "free count did not drop by 256");
    for f in frames {
        mm::free_frame(f).map_err(|e| format!("free {f:#x}: {e:?}"))?;
    }
    ensure!(mm::free_frames() == before, "free count not restored");
    Ok(())
}

fn mm_heap() -> TestResult {
    let (claimed0, _) = mm::heap::stats();
    // Larger than everything claimed so far: the heap must grow.
    let big: Vec<u8> = alloc::vec![0xa5; claimed0 + (1 << 20)];
    ensure!(big.iter().all(|&b| b == 0xa5), "big allocation corrupted");
    let (claimed1, used1) = mm::heap::stats();
    ensure!(claimed1 > claimed0, "heap did not grow ({claimed0} -> {claimed1})");
    ensure!(used1 >= big.len(), "allocated-bytes counter too small");
    drop(big);
    let mut map = alloc::collections::BTreeMap::new();
    for i in 0..10_000u32 {
        map.insert(i, format!("value {i}"));
    }
    ensure!(map.get(&4242).map(String::as_str) == Some("value 4242"), "BTreeMap lookup failed");
    drop(map);
    let (claimed2, _) = mm::heap::stats();
    ensure!(claimed2 == claimed1, "heap grew although freed memory was enough");
    Ok(())
}

fn mm_protections() -> TestResult {
    let text = mm_protections as *const () as u64;
    let t = mm::translate_kernel(text).ok_or("kernel text not mapped")?;
    ensure!(t.flags & paging::WRITABLE == 0, "kernel text is writable");
    ensure!(t.flags & paging::NO_EXECUTE == 0, "kernel text is not executable");
    ensure!(t.phys == text - mm::KERNEL_VMA, "text maps to {:#x}, expected {:#x}", t.phys, text - mm::KERNEL_VMA);
    let ro = TESTS.as_ptr() as u64;
    let r = mm::translate_kernel(ro).ok_or("rodata not mapped")?;
    ensure!(r.flags & (paging::WRITABLE) == 0 && r.flags & paging::NO_EXECUTE != 0, "rodata flags {:#x}", r.flags);
    let data = &crate::mm::FRAMES as *const _ as u64;
    let d = mm::translate_kernel(data).ok_or("data not mapped")?;
    ensure!(d.flags & paging::WRITABLE != 0 && d.flags & paging::NO_EXECUTE != 0, "data flags {:#x}", d.flags);
    ensure!(mm::translate_kernel(0x1000).is_none(), "lower half mapped in the kernel's tables");
    // The direct map reaches the top of RAM.
    let last = mm::usable_top() - 4096;
    let dm = mm::translate_kernel(mm::phys_to_virt(last)).ok_or("top of RAM not in the direct map")?;
    ensure!(dm.phys == last, "direct map is not 1:1");
    Ok(())
}

fn mm_lower_half_mapping() -> TestResult {
    // A fresh address space sharing the kernel half; one user-style page at
    // 4 MiB. Switch to it, touch the page through both mappings, switch back.
    let space = mm::AddressSpace::new().ok_or("no memory for a PML4")?;
    let frame = mm::alloc_frame().ok_or("no frame")?;
    let va = 0x40_0000u64;
    space.map(va, frame, paging::WRITABLE | paging::NO_EXECUTE).map_err(|e| format!("{e:?}"))?;
    let seen = space.with_active(|| {
        // SAFETY: `va` is mapped writable in the active address space.
        unsafe {
            core::ptr::write_volatile(va as *mut u64, 0x1234_5678_9abc_def0);
            core::ptr::read_volatile(va as *const u64)
        }
    });
    ensure!(seen == 0x1234_5678_9abc_def0, "read back {seen:#x}");
    // SAFETY: the frame is ours and mapped by the direct map.
    let direct = unsafe { core::ptr::read_volatile(mm::phys_to_virt(frame) as *const u64) };
    ensure!(direct == seen, "direct map sees {direct:#x}");
    ensure!(cpu::read_cr3() == mm::kernel_pml4(), "CR3 not restored");
    drop(space);
    mm::free_frame(frame).map_err(|e| format!("{e:?}"))?;
    Ok(())
}

fn time_monotonic() -> TestResult {
    let mut last = time::uptime_ns();
    for _ in 0..100_000 {
        let now = time::uptime_ns();
        ensure!(now >= last, "time went backwards: {last} -> {now}");
        last = now;
    }
    Ok(())
}

fn time_tsc_vs_pit() -> TestResult {
    let hz = time::tsc_hz();
    let again = time::measure_tsc_hz(50).ok_or("PIT did not count")?;
    let diff = hz.abs_diff(again) * 100 / hz;
    // Emulators jitter; 10% still catches a wrong PIT divisor or units.
    ensure!(diff <= 10, "calibrated {hz} Hz, re-measured {again} Hz ({diff}% apart)");
    Ok(())
}

fn time_delay() -> TestResult {
    let start = time::uptime_ns();
    time::delay_us(20_000);
    let took = time::uptime_ns() - start;
    ensure!(took >= 20_000_000, "20 ms delay took {took} ns");
    ensure!(took < 2_000_000_000, "20 ms delay took {took} ns");
    Ok(())
}

fn percpu_block() -> TestResult {
    let c = gdt::this_cpu().ok_or("no per-CPU block")?;
    ensure!(c.index == gdt::cpu_index(), "index mismatch");
    // SAFETY: IA32_GS_BASE exists on x86-64.
    let gs = unsafe { cpu::rdmsr(0xc000_0101) };
    ensure!(gs == c as *const _ as u64, "GS base {gs:#x} is not the per-CPU block");
    ensure!(gdt::cpus_online() >= 1, "no CPU online");
    Ok(())
}

fn trap_breakpoint() -> TestResult {
    let before = trap::BREAKPOINTS.load(Ordering::Relaxed);
    // SAFETY: int3 is handled by the kernel's #BP handler, which returns.
    unsafe { core::arch::asm!("int3") };
    let after = trap::BREAKPOINTS.load(Ordering::Relaxed);
    ensure!(after == before + 1, "breakpoint count {before} -> {after}");
    Ok(())
}

fn acpi_tables() -> TestResult {
    let p = crate::acpi::platform().ok_or("ACPI not initialised")?;
    ensure!(!p.cpu_apic_ids.is_empty(), "MADT lists no CPU");
    ensure!(!p.ioapics.is_empty(), "MADT lists no IOAPIC");
    ensure!(p.lapic_address == 0xfee0_0000, "LAPIC at {:#x}", p.lapic_address);
    ensure!(p.pm1a_control.is_some(), "no PM1a control block");
    ensure!(p.s5.is_some(), "no \\_S5 package");
    Ok(())
}

// ---- worlds ----

use core::sync::atomic::AtomicU64;
use crate::world::{self, WaitQueue};

static PING: WaitQueue = WaitQueue::new();
static PONG: WaitQueue = WaitQueue::new();
static BALL: AtomicU64 = AtomicU64::new(0);
const ROUNDS: u64 = 500;

fn pinger(_: usize) {
    for i in 0..ROUNDS {
        PING.wait_until(|| BALL.load(Ordering::Acquire) == 2 * i);
        BALL.store(2 * i + 1, Ordering::Release);
        PONG.wake_one();
    }
}

fn ponger(_: usize) {
    for i in 0..ROUNDS {
        PONG.wait_until(|| BALL.load(Ordering::Acquire) == 2 * i + 1);
        BALL.store(2 * i + 2, Ordering::Release);
        PING.wake_one();
    }
}

fn world_ping_pong() -> TestResult {
    BALL.store(0, Ordering::Release);
    let base = world::count();
    world::spawn_system("ping", world::default_group(), || pinger(0)).map_err(|e| format!("{e}"))?;
    world::spawn_system("pong", world::default_group(), || ponger(0)).map_err(|e| format!("{e}"))?;
    let ok = run_worlds_until(10_000, || BALL.load(Ordering::Acquire) == 2 * ROUNDS && world::count() == base);
    ensure!(ok, "ball at {} of {}, {} worlds left", BALL.load(Ordering::Acquire), 2 * ROUNDS, world::count() - base);
    Ok(())
}

static EXITED: AtomicU64 = AtomicU64::new(0);

fn short_lived(n: usize) {
    EXITED.fetch_add(n as u64, Ordering::AcqRel);
}

fn world_exit_reaps() -> TestResult {
    let base = world::count();
    // Warm up allocator caches, then measure.
    EXITED.store(0, Ordering::Release);
    world::spawn_system("warm", world::default_group(), || short_lived(1)).map_err(|e| format!("{e}"))?;
    ensure!(run_worlds_until(5_000, || world::count() == base), "warm-up world not reaped");
    let (_, used_before) = mm::heap::stats();
    for _ in 0..50 {
        world::spawn_system("short", world::default_group(), || short_lived(1)).map_err(|e| format!("{e}"))?;
    }
    ensure!(run_worlds_until(10_000, || world::count() == base), "{} worlds not reaped", world::count() - base);
    ensure!(EXITED.load(Ordering::Acquire) == 51, "only {} worlds ran", EXITED.load(Ordering::Acquire));
    let (_, used_after) = mm::heap::stats();
    ensure!(used_after <= used_before + 4096, "heap grew by {} bytes over 50 worlds", used_after as i64 - used_before as i64);
    Ok(())
}

static SPIN_UNTIL: AtomicU64 = AtomicU64::new(0);
static SPINNERS: AtomicU64 = AtomicU64::new(0);

/// CPU-bound system world until a deadline: burns CPU in 1 ms steps,
/// yielding between them (system worlds run with interrupts off, so they
/// yield explicitly; the idle-context test driver runs only when no world
/// is runnable, hence the deadline).
fn spinner(_: usize) {
    while time::uptime_ns() < SPIN_UNTIL.load(Ordering::Acquire) {
        time::delay_us(1000);
        world::yield_now();
    }
    SPINNERS.fetch_sub(1, Ordering::AcqRel);
}

fn world_group_shares() -> TestResult {
    use vmkernel::sched::{GroupParams, ROOT_GROUP};
    let (a, b) = world::with_policy(|p| {
        let a = p.create_group(ROOT_GROUP, "ktest-a", GroupParams { shares: 2000, ..Default::default() });
        let b = p.create_group(ROOT_GROUP, "ktest-b", GroupParams { shares: 1000, ..Default::default() });
        (a, b)
    });
    let (a, b) = (a.map_err(|e| format!("{e}"))?, b.map_err(|e| format!("{e}"))?);
    let start = time::uptime_ns();
    SPIN_UNTIL.store(start + 600_000_000, Ordering::Release);
    SPINNERS.store(2, Ordering::Release);
    world::spawn_system("spin-a", a, || spinner(0)).map_err(|e| format!("{e}"))?;
    world::spawn_system("spin-b", b, || spinner(0)).map_err(|e| format!("{e}"))?;
    // They compete for 600 ms (on a multi-CPU boot they may run in
    // parallel, so the ratio is checked only when they share one CPU).
    ensure!(run_worlds_until(5_000, || SPINNERS.load(Ordering::Acquire) == 0), "spinners did not stop");
    let elapsed = time::uptime_ns() - start;
    let (ua, ub) = world::with_policy(|p| (p.group_stats(a).unwrap().used_ns, p.group_stats(b).unwrap().used_ns));
    world::with_policy(|p| {
        let _ = p.destroy_group(a);
        let _ = p.destroy_group(b);
    });
    kprintln!("ktest: shares 2:1 -> used {} ms vs {} ms over {} ms", ua / 1_000_000, ub / 1_000_000, elapsed / 1_000_000);
    if gdt::cpus_online() == 1 {
        let ratio = ua as f64 / ub.max(1) as f64;
        ensure!((ratio - 2.0).abs() <= 0.2, "ratio {ratio:.2}, expected 2.0 +- 10%");
    }
    Ok(())
}

// ---- user worlds ----

use crate::uw::process::{ExitStatus, Process};

core::arch::global_asm!(
    r#"
    .section .rodata.ktest_user, "a"
    .global ktest_user_ok_start, ktest_user_ok_end
ktest_user_ok_start:
    mov eax, 1
    mov edi, 1
    lea rsi, [rip + 9f]
    mov edx, 25 /* length of the message at 9: */
    syscall
    cmp rax, 25
    jne 8f
    /* a kernel address and an unmapped one: EFAULT, not a crash */
    mov eax, 1
    mov edi, 1
    movabs rsi, 0xffffffff80100000
    mov edx, 4
    syscall
    cmp rax, -14
    jne 8f
    mov eax, 1
    mov edi, 1
    mov esi, 0xdead0000
    mov edx, 4
    syscall
    cmp rax, -14
    jne 8f
    /* unknown call */
    mov eax, 9999
    syscall
    cmp rax, -38
    jne 8f
    /* registers other than rax, rcx, r11 survive a system call */
    mov ebx, 0x1234
    mov r12d, 0x5678
    mov r15d, 0x9abc
    mov eax, 39
    syscall
    test rax, rax
    jle 8f
    cmp ebx, 0x1234
    jne 8f
    cmp r12d, 0x5678
    jne 8f
    cmp r15d, 0x9abc
    jne 8f
    mov eax, 231
    mov edi, 42
    syscall
    ud2
8:
    mov eax, 231
    mov edi, 1
    syscall
9:
    .ascii "ktest: hello from ring 3\n"
10:
ktest_user_ok_end:

    .global ktest_user_spin_start, ktest_user_spin_end
ktest_user_spin_start:
    /* burn CPU in user mode until the TSC passes rdi, then exit(0) */
1:
    rdtsc
    shl rdx, 32
    or rax, rdx
    cmp rax, rdi
    jb 1b
    mov eax, 231
    xor edi, edi
    syscall
ktest_user_spin_end:

    .global ktest_user_fpu_start, ktest_user_fpu_end
ktest_user_fpu_start:
    /* xmm7 and ymm-free state must survive 200 system calls and switches */
    movq xmm7, rdi
    mov r12d, 200
1:
    mov eax, 24 /* sched_yield */
    syscall
    movq rax, xmm7
    cmp rax, rdi
    jne 2f
    dec r12d
    jnz 1b
    mov eax, 231
    xor edi, edi
    syscall
2:
    mov eax, 231
    mov edi, 1
    syscall
ktest_user_fpu_end:

    .global ktest_user_null_start, ktest_user_null_end
ktest_user_null_start:
    xor eax, eax
    mov rax, [rax]
    ud2
ktest_user_null_end:

    .global ktest_user_priv_start, ktest_user_priv_end
ktest_user_priv_start:
    cli
    hlt
ktest_user_priv_end:

    .global ktest_user_int_start, ktest_user_int_end
ktest_user_int_start:
    int 0x80
    ud2
ktest_user_int_end:
    "#
);

unsafe extern "C" {
    static ktest_user_ok_start: u8;
    static ktest_user_ok_end: u8;
    static ktest_user_spin_start: u8;
    static ktest_user_spin_end: u8;
    static ktest_user_fpu_start: u8;
    static ktest_user_fpu_end: u8;
    static ktest_user_null_start: u8;
    static ktest_user_null_end: u8;
    static ktest_user_priv_start: u8;
    static ktest_user_priv_end: u8;
    static ktest_user_int_start: u8;
    static ktest_user_int_end: u8;
}

fn blob(start: &u8, end: &u8) -> &'static [u8] {
    let (s, e) = (start as *const u8, end as *const u8);
    // SAFETY: both symbols delimit bytes in the kernel's rodata.
    unsafe { core::slice::from_raw_parts(s, e as usize - s as usize) }
}

/// Loads `code` at 0x400000 with a one-page stack below 0x800000, runs it
/// to its end and returns how it ended.
fn run_user_blob(name: &str, code: &[u8]) -> Result<ExitStatus, String> {
    let p = Process::new(name).ok_or("no memory for a process")?;
    crate::uw::exec::attach_console(&p);
    p.map_bytes(0x40_0000, code, 0)?;
    p.map_bytes(0x7f_f000, &[], paging::WRITABLE | paging::NO_EXECUTE)?;
    p.start(world::default_group(), 0x40_0000, 0x80_0000)?;
    let done = run_worlds_until(10_000, || p.exit_status().is_some());
    ensure!(done, "{name} did not finish");
    Ok(p.exit_status().unwrap())
}

fn user_syscalls() -> TestResult {
    let free = mm::free_frames();
    // SAFETY: taking addresses of the blob symbols.
    let code = unsafe { blob(&ktest_user_ok_start, &ktest_user_ok_end) };
    let st = run_user_blob("ring3-ok", code)?;
    ensure!(st == ExitStatus::Exited(42), "user program ended with {st:?} (1 = a check failed)");
    ensure!(run_worlds_until(2_000, || mm::free_frames() == free), "{} frames leaked", free - mm::free_frames());
    Ok(())
}

fn user_faults() -> TestResult {
    let free = mm::free_frames();
    // SAFETY: taking addresses of the blob symbols.
    let cases = unsafe {
        [
            ("null-deref", blob(&ktest_user_null_start, &ktest_user_null_end), 11),
            ("privileged", blob(&ktest_user_priv_start, &ktest_user_priv_end), 11),
            ("int-0x80", blob(&ktest_user_int_start, &ktest_user_int_end), 11),
        ]
    };
    for (name, code, sig) in cases {
        let st = run_user_blob(name, code)?;
        ensure!(st == ExitStatus::Signaled(sig), "{name}: ended with {st:?}, expected signal {sig}");
    }
    ensure!(run_worlds_until(2_000, || mm::free_frames() == free), "{} frames leaked", free - mm::free_frames());
    Ok(())
}

fn timer_rates() -> TestResult {
    let rates = crate::arch::apic::measure_tick_rates(300);
    ensure!(rates.len() == gdt::cpus_online() as usize, "measured {} CPUs", rates.len());
    for (i, hz) in rates.iter().enumerate() {
        // One tick of slack in a 300 ms window, plus emulator jitter.
        ensure!((80..=120).contains(hz), "cpu{i} ticks at {hz} Hz");
    }
    kprintln!("ktest: timer rates {:?} Hz", rates);
    Ok(())
}

/// Runs CPU-bound user worlds, one per `(group params)`, all pinned to
/// CPU 0, for `secs` seconds of TSC time; returns each group's CPU share as
/// measured by the kernel's own accounting.
fn compete(params: &[vmkernel::sched::GroupParams], secs: u64) -> Result<Vec<f64>, String> {
    use vmkernel::sched::ROOT_GROUP;
    // SAFETY: taking addresses of the blob symbols.
    let code = unsafe { blob(&ktest_user_spin_start, &ktest_user_spin_end) };
    let deadline = cpu::rdtsc() + time::tsc_hz() * secs;
    let start = time::uptime_ns();
    let mut groups = Vec::new();
    let mut procs = Vec::new();
    for (i, gp) in params.iter().enumerate() {
        let g = world::with_policy(|p| p.create_group(ROOT_GROUP, &format!("ktest-{i}"), *gp)).map_err(|e| format!("{e}"))?;
        let p = Process::new("spin").ok_or("no memory")?;
        p.map_bytes(0x40_0000, code, 0)?;
        let frame = crate::arch::trap::TrapFrame { rip: 0x40_0000, rsp: 0x80_0000, rflags: 0x202, rdi: deadline, ..Default::default() };
        let w = p.start_with(g, frame)?;
        world::with_policy(|pol| pol.set_affinity(w, Some(0))).map_err(|e| format!("{e}"))?;
        groups.push(g);
        procs.push(p);
    }
    let done = run_worlds_until(secs * 1000 + 5_000, || procs.iter().all(|p| p.exit_status().is_some()));
    let elapsed = (time::uptime_ns() - start) as f64;
    ensure!(done, "spinners did not finish");
    let used: Vec<u64> = groups.iter().map(|&g| world::with_policy(|p| p.group_stats(g).map(|s| s.used_ns).unwrap_or(0))).collect();
    for g in groups {
        ensure!(run_worlds_until(1_000, || world::with_policy(|p| p.destroy_group(g).is_ok())), "group {g} not destroyed");
    }
    Ok(used.iter().map(|&u| u as f64 / elapsed).collect())
}

fn sched_user_shares() -> TestResult {
    use vmkernel::sched::GroupParams;
    let s = compete(&[GroupParams { shares: 2000, ..Default::default() }, GroupParams { shares: 1000, ..Default::default() }], 2)?;
    let ratio = s[0] / s[1];
    kprintln!("ktest: sched: shares 2:1 -> CPU {:.1}% vs {:.1}% (ratio {:.2})", s[0] * 100.0, s[1] * 100.0, ratio);
    ensure!((ratio - 2.0).abs() <= 0.2, "ratio {ratio:.2} not within 10% of 2:1");
    Ok(())
}

fn sched_user_limit() -> TestResult {
    use vmkernel::sched::GroupParams;
    let s = compete(&[GroupParams { limit_pct: Some(25), ..Default::default() }], 2)?;
    kprintln!("ktest: sched: limit 25% on an idle CPU -> {:.1}%", s[0] * 100.0);
    ensure!((s[0] - 0.25).abs() <= 0.05, "usage {:.1}% not within 5 points of 25%", s[0] * 100.0);
    Ok(())
}

fn sched_user_reservation() -> TestResult {
    use vmkernel::sched::GroupParams;
    let s = compete(&[GroupParams { reservation_pct: 40, ..Default::default() }, GroupParams { shares: 8000, ..Default::default() }], 2)?;
    kprintln!("ktest: sched: reservation 40% vs 8x shares -> {:.1}% vs {:.1}%", s[0] * 100.0, s[1] * 100.0);
    ensure!(s[0] >= 0.38, "reserved group got {:.1}%", s[0] * 100.0);
    Ok(())
}

fn user_fpu_state() -> TestResult {
    // SAFETY: taking addresses of the blob symbols.
    let code = unsafe { blob(&ktest_user_fpu_start, &ktest_user_fpu_end) };
    let mut procs = Vec::new();
    for pattern in [0x1111_2222_3333_4444u64, 0x5555_6666_7777_8888] {
        let p = Process::new("fpu").ok_or("no memory")?;
        p.map_bytes(0x40_0000, code, 0)?;
        let frame = crate::arch::trap::TrapFrame { rip: 0x40_0000, rsp: 0x80_0000, rflags: 0x202, rdi: pattern, ..Default::default() };
        let w = p.start_with(world::default_group(), frame)?;
        world::with_policy(|pol| pol.set_affinity(w, Some(0))).map_err(|e| format!("{e}"))?;
        procs.push(p);
    }
    ensure!(run_worlds_until(20_000, || procs.iter().all(|p| p.exit_status().is_some())), "FPU processes did not finish");
    for p in &procs {
        ensure!(p.exit_status() == Some(ExitStatus::Exited(0)), "xmm7 was clobbered: {:?}", p.exit_status());
    }
    Ok(())
}

// ---- hardware virtualization ----

/// Guest RAM takes 2 MiB nested pages where a whole aligned 2 MiB has no
/// hole, 4 KiB pages elsewhere; reads and writes cross both kinds; all of
/// it returns to the allocator.
fn vmm_large_pages() -> TestResult {
    use vmkernel::paging::PageSize;
    if crate::hv::backend().is_none() {
        return skip("no hardware virtualization backend on this CPU");
    }
    let free = mm::free_frames();
    {
        let size = (8 << 20) + 0x3000;
        let hole = (0x40_0000, 0x40_1000);
        let mem = crate::hv::new_guest_memory(size, &[hole]).ok_or("no memory for the guest")?;
        ensure!(mem.ram_frames() as u64 == (size - 0x1000) / 4096, "{} RAM frames", mem.ram_frames());
        ensure!(mem.large_page_bytes() == 6 << 20, "{:#x} bytes in large pages, want 0-2, 2-4, 6-8 MiB", mem.large_page_bytes());
        let size_at = |gpa| paging::translate(&mm::Tables, mem.root(), gpa).map(|t| t.size);
        ensure!(size_at(0x20_1000) == Some(PageSize::Size2M), "2-4 MiB is not one large page");
        ensure!(size_at(0x40_1000) == Some(PageSize::Size4K), "the 2 MiB with a hole is not in 4 KiB pages");
        ensure!(size_at(0x80_2000) == Some(PageSize::Size4K), "the tail past 8 MiB is not in 4 KiB pages");
        ensure!(size_at(0x40_0000).is_none() && size_at(0x80_3000).is_none(), "the hole or past the end is mapped");
        let pattern: Vec<u8> = (0..64u8).collect();
        for gpa in [0x1f_ffe0, 0x5f_ffe0, 0x7f_ffe0, 0x80_2fc0] {
            ensure!(mem.write(gpa, &pattern), "write at {gpa:#x} failed");
            let mut back = [0u8; 64];
            ensure!(mem.read(gpa, &mut back) && back[..] == pattern[..], "read back at {gpa:#x} differs");
        }
        ensure!(!mem.write(0x3f_fff0, &pattern), "a write running into the hole succeeded");
        let mut page = [1u8; 4096];
        ensure!(mem.read(0x70_0000, &mut page) && page.iter().all(|&b| b == 0), "large-page RAM is not zeroed");
    }
    ensure!(mm::free_frames() == free, "{} frames leaked by guest memory", free as i64 - mm::free_frames() as i64);
    Ok(())
}

fn vmm_flat_guest() -> TestResult {
    use crate::hv::vcpu::{Exit, GuestRegs, RAX, RBX};
    if crate::hv::backend().is_none() {
        return skip("no hardware virtualization backend on this CPU");
    }
    crate::hv::init_this_cpu().map_err(String::from)?;
    let free = mm::free_frames();
    {
        let mem = crate::hv::new_guest_memory(2 << 20, &[]).ok_or("no memory for the guest")?;
        // 32-bit flat code: OUT 'M' to port 0xe9, CPUID, OUT 'K', HLT.
        let code: &[u8] = &[
            0x66, 0xba, 0xe9, 0x00, // mov dx, 0xe9
            0xb0, b'M', // mov al, 'M'
            0xee, // out dx, al
            0x31, 0xc0, // xor eax, eax
            0x0f, 0xa2, // cpuid
            0xb0, b'K', // mov al, 'K'
            0xee, // out dx, al
            0xf4, // hlt
        ];
        ensure!(mem.write(0x1000, code), "cannot write guest memory");
        let mut v = crate::hv::new_vcpu(mem.root())?;
        let mut regs = GuestRegs::default();
        let mut state = vmkernel::vmm::loader::VcpuState::protected32(0x1000, 0x08, 0x10);
        state.regs.gpr[4] = 0x8000;
        v.load_state(&state, &mut regs);
        let mut fpu = crate::arch::context::FpuState::new();
        fpu.reset();
        let (mut out, mut cpuids, mut halted) = (Vec::new(), 0, false);
        for _ in 0..1000 {
            match v.run(&mut regs, &mut fpu) {
                Exit::Io { port: 0xe9, input: false, next_rip, .. } => {
                    out.push(regs.gpr[RAX] as u8);
                    v.set_rip(next_rip);
                }
                Exit::Cpuid => {
                    cpuids += 1;
                    regs.gpr[RAX] = 0x4000_0001;
                    regs.gpr[RBX] = u32::from_le_bytes(*b"Mant") as u64;
                    let rip = v.rip();
                    v.set_rip(rip + 2);
                }
                Exit::Hlt => {
                    halted = true;
                    break;
                }
                Exit::ExternalInterrupt | Exit::Nmi => cpu::take_pending_interrupts(),
                other => return Err(format!("unexpected exit {other:?} at guest rip {:#x}", v.rip())),
            }
        }
        ensure!(halted, "the guest never reached HLT");
        ensure!(out == b"MK", "guest wrote {:?} to port 0xe9", out);
        ensure!(cpuids == 1, "{cpuids} CPUID exits");
        ensure!(regs.gpr[RBX] == u32::from_le_bytes(*b"Mant") as u64, "guest RBX not preserved/set: {:#x}", regs.gpr[RBX]);
        ensure!(regs.gpr[4] == 0x8000, "guest RSP not preserved: {:#x}", regs.gpr[4]);
    }
    ensure!(mm::free_frames() == free, "{} frames leaked by a VM", free as i64 - mm::free_frames() as i64);
    Ok(())
}
