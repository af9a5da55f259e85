//! The hardware-free half of the guest test suite: result bookkeeping and
//! formatting, the command line, and parsers for what firmware and the
//! boot loader leave in memory (Multiboot information, ACPI tables, the MP
//! table, CMOS clock fields). All of it works on byte slices, so it is
//! unit-tested on the host; `main.rs` only reads guest memory into slices.
#![cfg_attr(not(test), no_std)]
// Errors are fixed-size messages (no allocator in the guest); passing them
// by value is the point.
#![allow(clippy::result_large_err)]

use core::fmt::{self, Write};

// --- results -------------------------------------------------------------------

/// A short message in a fixed buffer (the guest has no allocator); longer
/// text is cut, never an error.
#[derive(Clone, Copy)]
pub struct Msg {
    buf: [u8; 200],
    len: usize,
}

impl Msg {
    pub const fn new() -> Msg {
        Msg { buf: [0; 200], len: 0 }
    }
    pub fn as_str(&self) -> &str {
        // Only whole UTF-8 sequences are ever appended (see write_str).
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("<bad utf-8>")
    }
}

impl Default for Msg {
    fn default() -> Self {
        Msg::new()
    }
}

impl Write for Msg {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for (i, c) in s.char_indices() {
            let n = c.len_utf8();
            if self.len + n > self.buf.len() {
                break;
            }
            self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[i..i + n]);
            self.len += n;
        }
        Ok(())
    }
}

impl PartialEq for Msg {
    fn eq(&self, o: &Msg) -> bool {
        self.as_str() == o.as_str()
    }
}

impl fmt::Debug for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// `format!` into a [`Msg`].
#[macro_export]
macro_rules! msg {
    ($($arg:tt)*) => {{
        let mut m = $crate::Msg::new();
        let _ = core::fmt::Write::write_fmt(&mut m, format_args!($($arg)*));
        m
    }};
}

/// How one test ended.
#[derive(Debug)]
pub enum Outcome {
    Pass,
    Fail(Msg),
    /// The check does not apply here (e.g. a Mantle-only check under plain
    /// QEMU); counted apart from passes and failures.
    Skip(Msg),
}

/// Pass/fail/skip counts and the report line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub passed: u32,
    pub failed: u32,
    pub skipped: u32,
}

/// The QEMU-compatible debug-exit values the suite reports.
pub const EXIT_ALL_PASSED: u32 = 0x10;
pub const EXIT_SOME_FAILED: u32 = 0x11;

impl Tally {
    pub fn record(&mut self, o: &Outcome) {
        match o {
            Outcome::Pass => self.passed += 1,
            Outcome::Fail(_) => self.failed += 1,
            Outcome::Skip(_) => self.skipped += 1,
        }
    }

    /// Debug-exit code: 0x10 when nothing failed (and something passed),
    /// 0x11 otherwise.
    pub fn exit_code(&self) -> u32 {
        if self.failed == 0 && self.passed > 0 { EXIT_ALL_PASSED } else { EXIT_SOME_FAILED }
    }
}

/// The line for one test: `test <name> ... ok`, `... FAIL <why>` or
/// `... skipped (<why>)`.
pub fn write_outcome(w: &mut dyn Write, name: &str, o: &Outcome) -> fmt::Result {
    write_test_start(w, name)?;
    write_status(w, o)
}

/// The first half of a test's line, printed before the test runs (so a
/// test that hangs the machine is named in the log).
pub fn write_test_start(w: &mut dyn Write, name: &str) -> fmt::Result {
    write!(w, "test {name} ... ")
}

/// The second half: `ok`, `FAIL <why>`, `skipped (<why>)`.
pub fn write_status(w: &mut dyn Write, o: &Outcome) -> fmt::Result {
    match o {
        Outcome::Pass => writeln!(w, "ok"),
        Outcome::Fail(m) => writeln!(w, "FAIL {}", m.as_str()),
        Outcome::Skip(m) => writeln!(w, "skipped ({})", m.as_str()),
    }
}

/// `suite: N passed, M failed, K skipped`.
pub fn write_summary(w: &mut dyn Write, t: &Tally) -> fmt::Result {
    writeln!(w, "suite: {} passed, {} failed, {} skipped", t.passed, t.failed, t.skipped)
}

// --- command line -----------------------------------------------------------

/// The Multiboot command line, "<kernel path> <args>" as QEMU and Mantle
/// pass it; options are `key=value` words among the args.
#[derive(Clone, Copy, Debug)]
pub struct Cmdline<'a> {
    pub whole: &'a str,
}

impl<'a> Cmdline<'a> {
    pub fn new(whole: &'a str) -> Self {
        Cmdline { whole }
    }
    /// The first word: the kernel's path.
    pub fn kernel_path(&self) -> &'a str {
        self.whole.split(' ').next().unwrap_or("")
    }
    /// Everything after the first space ("" when there is none).
    pub fn args(&self) -> &'a str {
        self.whole.split_once(' ').map_or("", |(_, a)| a)
    }
    /// The value of the first `key=value` word after the path.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.args().split_whitespace().find_map(|w| w.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v))
    }
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(parse_u64)
    }
}

/// Decimal or `0x` hexadecimal.
pub fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

// --- little-endian reads ---------------------------------------------------------

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

// --- Multiboot v1 information -------------------------------------------------------

pub const MB_BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;
pub const MB_INFO_MEMORY: u32 = 1 << 0;
pub const MB_INFO_CMDLINE: u32 = 1 << 2;
pub const MB_INFO_MODS: u32 = 1 << 3;
pub const MB_INFO_MEM_MAP: u32 = 1 << 6;
/// Bytes of the information structure the suite reads.
pub const MB_INFO_LEN: usize = 52;

/// The fields of the Multiboot information structure the suite checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MbInfo {
    pub flags: u32,
    pub mem_lower: u32,
    pub mem_upper: u32,
    pub cmdline: u32,
    pub mods_count: u32,
    pub mods_addr: u32,
    pub mmap_length: u32,
    pub mmap_addr: u32,
}

impl MbInfo {
    pub fn parse(b: &[u8]) -> Option<MbInfo> {
        Some(MbInfo {
            flags: u32_at(b, 0)?,
            mem_lower: u32_at(b, 4)?,
            mem_upper: u32_at(b, 8)?,
            cmdline: u32_at(b, 16)?,
            mods_count: u32_at(b, 20)?,
            mods_addr: u32_at(b, 24)?,
            mmap_length: u32_at(b, 44)?,
            mmap_addr: u32_at(b, 48)?,
        })
    }
    pub fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }
}

/// One module list entry: [start, end) and the address of its string.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MbModule {
    pub start: u32,
    pub end: u32,
    pub string: u32,
}

impl MbModule {
    pub fn parse(b: &[u8]) -> Option<MbModule> {
        Some(MbModule { start: u32_at(b, 0)?, end: u32_at(b, 4)?, string: u32_at(b, 8)? })
    }
}

/// One memory-map entry (type 1 = available RAM).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmapEntry {
    pub base: u64,
    pub len: u64,
    pub kind: u32,
}

/// Walks a Multiboot memory map: each entry is `size` (not counting
/// itself), base, length, type. Err on an entry that runs past the map or
/// is shorter than 20 bytes.
pub fn mmap_entries(b: &[u8], mut f: impl FnMut(MmapEntry)) -> Result<usize, Msg> {
    let mut at = 0;
    let mut n = 0;
    while at < b.len() {
        let size = u32_at(b, at).ok_or_else(|| msg!("entry at offset {at} cut off"))? as usize;
        if size < 20 || at + 4 + size > b.len() {
            return Err(msg!("entry at offset {at} has size {size} (map length {})", b.len()));
        }
        f(MmapEntry { base: u64_at(b, at + 4).unwrap(), len: u64_at(b, at + 12).unwrap(), kind: u32_at(b, at + 20).unwrap() });
        n += 1;
        at += 4 + size;
    }
    Ok(n)
}

// --- ACPI ------------------------------------------------------------------------------

/// Sum of all bytes modulo 256 (0 for a valid ACPI/MP structure).
pub fn checksum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |s, &x| s.wrapping_add(x))
}

/// The Root System Description Pointer (ACPI §5.2.5.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rsdp {
    pub revision: u8,
    pub rsdt: u32,
    /// Revision ≥ 2 only.
    pub xsdt: Option<u64>,
    pub length: u32,
}

impl Rsdp {
    /// Parses and validates an RSDP at the start of `b` (20 bytes for
    /// revision 0, `length` bytes with the extended checksum after).
    pub fn parse(b: &[u8]) -> Result<Rsdp, Msg> {
        if b.get(..8) != Some(b"RSD PTR ") {
            return Err(msg!("no RSDP signature"));
        }
        let first = b.get(..20).ok_or_else(|| msg!("RSDP cut off"))?;
        if checksum(first) != 0 {
            return Err(msg!("RSDP checksum (first 20 bytes) sums to {:#x}", checksum(first)));
        }
        let revision = b[15];
        let rsdt = u32_at(b, 16).unwrap();
        if revision < 2 {
            return Ok(Rsdp { revision, rsdt, xsdt: None, length: 20 });
        }
        let length = u32_at(b, 20).ok_or_else(|| msg!("RSDP v2 cut off"))?;
        let all = b.get(..length as usize).filter(|_| length >= 36).ok_or_else(|| msg!("RSDP v2 length {length}"))?;
        if checksum(all) != 0 {
            return Err(msg!("RSDP extended checksum sums to {:#x}", checksum(all)));
        }
        Ok(Rsdp { revision, rsdt, xsdt: Some(u64_at(b, 24).unwrap()), length })
    }
}

/// An ACPI table header: signature and length; `check` validates the whole
/// table's checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SdtHeader {
    pub signature: [u8; 4],
    pub length: u32,
    pub revision: u8,
}

pub const SDT_HEADER_LEN: usize = 36;

impl SdtHeader {
    pub fn parse(b: &[u8]) -> Option<SdtHeader> {
        Some(SdtHeader { signature: b.get(..4)?.try_into().ok()?, length: u32_at(b, 4)?, revision: *b.get(8)? })
    }
}

/// Validates a whole table (`b` is exactly `length` bytes) with signature `sig`.
pub fn check_table(b: &[u8], sig: &[u8; 4]) -> Result<(), Msg> {
    let h = SdtHeader::parse(b).ok_or_else(|| msg!("table header cut off"))?;
    if &h.signature != sig {
        return Err(msg!("signature {:?}, expected {:?}", Sig(&h.signature), Sig(sig)));
    }
    if (h.length as usize) < SDT_HEADER_LEN || h.length as usize != b.len() {
        return Err(msg!("{:?} length {} (have {} bytes)", Sig(sig), h.length, b.len()));
    }
    if checksum(b) != 0 {
        return Err(msg!("{:?} checksum sums to {:#x}", Sig(sig), checksum(b)));
    }
    Ok(())
}

/// The table pointers of an RSDT (4-byte) or XSDT (8-byte entries).
pub fn sdt_entries(b: &[u8], wide: bool, mut f: impl FnMut(u64)) {
    let step = if wide { 8 } else { 4 };
    let mut at = SDT_HEADER_LEN;
    while at + step <= b.len() {
        f(if wide { u64_at(b, at).unwrap() } else { u32_at(b, at).unwrap() as u64 });
        at += step;
    }
}

/// A four-byte signature for messages.
pub struct Sig<'a>(pub &'a [u8]);

impl fmt::Debug for Sig<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        for &c in self.0 {
            f.write_char(if c.is_ascii_graphic() || c == b' ' { c as char } else { '?' })?;
        }
        f.write_char('"')
    }
}

pub const MAX_CPUS: usize = 16;

/// What the suite needs from the MADT (ACPI §5.2.12).
#[derive(Clone, Copy, Debug, Default)]
pub struct Madt {
    pub lapic_addr: u32,
    /// APIC IDs of the enabled processors, in table order.
    pub cpus: [u8; MAX_CPUS],
    pub ncpus: usize,
    pub ioapic: Option<(u8, u32, u32)>,
    pub nioapics: usize,
    /// Interrupt source overrides: (ISA source, GSI).
    pub overrides: [(u8, u32); 16],
    pub noverrides: usize,
}

impl Madt {
    /// Parses a checksum-validated MADT.
    pub fn parse(b: &[u8]) -> Result<Madt, Msg> {
        check_table(b, b"APIC")?;
        let mut m = Madt { lapic_addr: u32_at(b, 36).ok_or_else(|| msg!("MADT cut off"))?, ..Default::default() };
        let mut at = 44;
        while at + 2 <= b.len() {
            let (kind, len) = (b[at], b[at + 1] as usize);
            if len < 2 || at + len > b.len() {
                return Err(msg!("MADT entry type {kind} at offset {at} has length {len}"));
            }
            let e = &b[at..at + len];
            let min = match kind {
                0 => 8,
                1 => 12,
                2 => 10,
                _ => 2,
            };
            if len < min {
                return Err(msg!("MADT entry type {kind} too short ({len})"));
            }
            match kind {
                // Processor local APIC: flags bit 0 enabled, bit 1 online capable.
                0 if u32_at(e, 4).unwrap() & 1 != 0 && m.ncpus < MAX_CPUS => {
                    m.cpus[m.ncpus] = e[3];
                    m.ncpus += 1;
                }
                1 => {
                    m.nioapics += 1;
                    if m.ioapic.is_none() {
                        m.ioapic = Some((e[2], u32_at(e, 4).unwrap(), u32_at(e, 8).unwrap()));
                    }
                }
                2 if m.noverrides < m.overrides.len() => {
                    m.overrides[m.noverrides] = (e[3], u32_at(e, 4).unwrap());
                    m.noverrides += 1;
                }
                _ => {}
            }
            at += len;
        }
        Ok(m)
    }

    pub fn cpus(&self) -> &[u8] {
        &self.cpus[..self.ncpus]
    }

    /// The GSI of ISA IRQ `irq` (identity unless overridden).
    pub fn gsi_for_isa(&self, irq: u8) -> u32 {
        self.overrides[..self.noverrides].iter().find(|o| o.0 == irq).map_or(irq as u32, |o| o.1)
    }
}

// --- MP specification 1.4 --------------------------------------------------------------

/// The MP floating pointer structure (16 bytes, "_MP_").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MpFloating {
    pub config: u32,
    pub spec_rev: u8,
    pub feature1: u8,
}

impl MpFloating {
    pub fn parse(b: &[u8]) -> Result<MpFloating, Msg> {
        let b = b.get(..16).ok_or_else(|| msg!("MP floating pointer cut off"))?;
        if &b[..4] != b"_MP_" {
            return Err(msg!("no _MP_ signature"));
        }
        if b[8] != 1 {
            return Err(msg!("MP floating pointer length {} paragraphs, expected 1", b[8]));
        }
        if checksum(b) != 0 {
            return Err(msg!("MP floating pointer checksum sums to {:#x}", checksum(b)));
        }
        Ok(MpFloating { config: u32_at(b, 4).unwrap(), spec_rev: b[9], feature1: b[11] })
    }
}

/// What the suite checks in the MP configuration table ("PCMP").
#[derive(Clone, Copy, Debug, Default)]
pub struct MpConfig {
    pub cpus: [u8; MAX_CPUS],
    pub ncpus: usize,
    pub bsps: usize,
    pub ioapic_addr: Option<u32>,
}

impl MpConfig {
    /// `b` starts at the table; its base length is in the header.
    pub fn parse(b: &[u8]) -> Result<MpConfig, Msg> {
        if b.get(..4) != Some(b"PCMP") {
            return Err(msg!("no PCMP signature"));
        }
        let len = u16_at(b, 4).unwrap() as usize;
        let t = b.get(..len).filter(|_| len >= 44).ok_or_else(|| msg!("MP table length {len}"))?;
        if checksum(t) != 0 {
            return Err(msg!("MP table checksum sums to {:#x}", checksum(t)));
        }
        let count = u16_at(t, 34).unwrap() as usize;
        let mut c = MpConfig::default();
        let mut at = 44;
        for i in 0..count {
            let kind = *t.get(at).ok_or_else(|| msg!("MP entry {i} of {count} past the table"))?;
            let elen = if kind == 0 { 20 } else { 8 };
            let e = t.get(at..at + elen).ok_or_else(|| msg!("MP entry {i} (type {kind}) cut off"))?;
            match kind {
                0 => {
                    if e[3] & 1 != 0 && c.ncpus < MAX_CPUS {
                        c.cpus[c.ncpus] = e[1];
                        c.ncpus += 1;
                    }
                    if e[3] & 2 != 0 {
                        c.bsps += 1;
                    }
                }
                2 => {
                    if e[3] & 1 != 0 && c.ioapic_addr.is_none() {
                        c.ioapic_addr = Some(u32_at(e, 4).unwrap());
                    }
                }
                1 | 3 | 4 => {}
                k => return Err(msg!("MP entry {i} has unknown type {k}")),
            }
            at += elen;
        }
        Ok(c)
    }

    pub fn cpus(&self) -> &[u8] {
        &self.cpus[..self.ncpus]
    }
}

// --- CMOS clock ---------------------------------------------------------------------------

/// A BCD byte's value, None if a digit is not decimal.
pub fn from_bcd(v: u8) -> Option<u8> {
    let (hi, lo) = (v >> 4, v & 0xf);
    (hi <= 9 && lo <= 9).then_some(hi * 10 + lo)
}

/// The CMOS date and time as read from registers 0, 2, 4, 7, 8, 9 and the
/// century (0x32), decoded per status register B (bit 2: binary, bit 1:
/// 24-hour; in 12-hour mode bit 7 of the hour is PM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtcTime {
    pub year: u32,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

/// `raw` = [sec, min, hour, day, month, year, century].
pub fn decode_rtc(raw: [u8; 7], reg_b: u8) -> Result<RtcTime, Msg> {
    let binary = reg_b & 4 != 0;
    let h24 = reg_b & 2 != 0;
    let names = ["seconds", "minutes", "hours", "day", "month", "year", "century"];
    let mut v = [0u8; 7];
    for i in 0..7 {
        let mut r = raw[i];
        let pm = i == 2 && !h24 && r & 0x80 != 0;
        if i == 2 && !h24 {
            r &= 0x7f;
        }
        v[i] = if binary { r } else { from_bcd(r).ok_or_else(|| msg!("{} {:#04x} is not BCD", names[i], raw[i]))? };
        if i == 2 && !h24 {
            if !(1..=12).contains(&v[i]) {
                return Err(msg!("12-hour hours {:#04x}", raw[i]));
            }
            v[i] = (v[i] % 12) + if pm { 12 } else { 0 };
        }
    }
    let t = RtcTime { second: v[0], minute: v[1], hour: v[2], day: v[3], month: v[4], year: v[6] as u32 * 100 + v[5] as u32 };
    if t.second > 59 || t.minute > 59 || t.hour > 23 || !(1..=31).contains(&t.day) || !(1..=12).contains(&t.month) || v[5] > 99 {
        return Err(msg!("out of range: {t:?} (raw {raw:02x?}, B={reg_b:#04x})"));
    }
    if !(2000..=2099).contains(&t.year) {
        return Err(msg!("year {} (century {:#04x}) outside 2000-2099", t.year, raw[6]));
    }
    Ok(t)
}

/// A timer sample bracketed by the guest's own clock: the TSC-derived
/// time (µs) just before and just after the reads that sampled `count`.
/// A vCPU (or the emulator's thread) may be descheduled between a device
/// read and the guest's next RDTSC, so the device's moment is known only
/// to lie inside the bracket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bracketed {
    pub before_us: u64,
    pub after_us: u64,
    pub count: u64,
}

impl Bracketed {
    pub fn width_us(&self) -> u64 {
        self.after_us.saturating_sub(self.before_us)
    }
}

/// Does a counter that advanced `ticks` (at `hz`) between samples `a` and
/// `b` agree with the guest clock within `pct` percent? The true interval
/// between the two samples lies between `b.before - a.after` (shortest)
/// and `b.after - a.before` (longest); the counter's interval must fall in
/// that range widened by `pct` on each side. With narrow brackets this is
/// the plain ±`pct` check; a sample that was delayed widens only its own
/// side, by exactly the time the guest could not see.
pub fn ticks_agree(what: &str, ticks: u64, hz: u64, a: Bracketed, b: Bracketed, pct: u64) -> Result<(), Msg> {
    let shortest = b.before_us.saturating_sub(a.after_us);
    let longest = b.after_us.saturating_sub(a.before_us);
    let lo = shortest * hz / 1_000_000 * (100 - pct.min(100)) / 100;
    let hi = longest * hz / 1_000_000 * (100 + pct) / 100;
    if (lo..=hi).contains(&ticks) {
        Ok(())
    } else {
        Err(msg!("{what}: {ticks} ticks, expected {lo}..={hi} ({shortest}..{longest} µs by the TSC ±{pct}%)"))
    }
}

/// Minimal Ethernet/ARP/IPv4/UDP framing for the guest's uplink check
/// (the guest has no network stack; it talks to QEMU's user network).
pub mod frames {
    pub const ETH_ARP: u16 = 0x0806;
    pub const ETH_IPV4: u16 = 0x0800;
    /// The longest frame built here.
    pub const MAX: usize = 128;

    fn eth(f: &mut [u8; MAX], dst: [u8; 6], src: [u8; 6], ty: u16) {
        f[0..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&src);
        f[12..14].copy_from_slice(&ty.to_be_bytes());
    }

    /// An ARP request (`op` 1) or reply (2): sender `sha`/`spa`, target `tha`/`tpa`;
    /// requests go to broadcast. Returns the frame and its length (60).
    pub fn arp(op: u16, sha: [u8; 6], spa: [u8; 4], tha: [u8; 6], tpa: [u8; 4]) -> ([u8; MAX], usize) {
        let mut f = [0u8; MAX];
        eth(&mut f, if op == 1 { [0xff; 6] } else { tha }, sha, ETH_ARP);
        f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, op as u8]);
        f[22..28].copy_from_slice(&sha);
        f[28..32].copy_from_slice(&spa);
        f[32..38].copy_from_slice(&tha);
        f[38..42].copy_from_slice(&tpa);
        (f, 60)
    }

    /// What the uplink check reads from an ARP packet.
    #[derive(Debug, PartialEq, Eq)]
    pub struct Arp {
        pub op: u16,
        pub sender_mac: [u8; 6],
        pub sender_ip: [u8; 4],
        pub target_ip: [u8; 4],
    }

    /// What the uplink check reads from a UDP datagram.
    #[derive(Debug, PartialEq, Eq)]
    pub struct Udp<'a> {
        pub src: [u8; 4],
        pub sport: u16,
        pub dst: [u8; 4],
        pub dport: u16,
        pub payload: &'a [u8],
    }

    pub fn parse_arp(f: &[u8]) -> Option<Arp> {
        if f.len() < 42 || u16::from_be_bytes([f[12], f[13]]) != ETH_ARP || f[14..20] != [0, 1, 8, 0, 6, 4] {
            return None;
        }
        Some(Arp {
            op: u16::from_be_bytes([f[20], f[21]]),
            sender_mac: f[22..28].try_into().ok()?,
            sender_ip: f[28..32].try_into().ok()?,
            target_ip: f[38..42].try_into().ok()?,
        })
    }

    /// The Internet checksum of `b`.
    pub fn inet_checksum(b: &[u8]) -> u16 {
        let mut sum = 0u32;
        for c in b.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    /// A UDP datagram in IPv4 in Ethernet (UDP checksum 0: none). The
    /// payload is cut to fit `MAX`.
    #[allow(clippy::too_many_arguments)]
    pub fn udp(dst_mac: [u8; 6], src_mac: [u8; 6], src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> ([u8; MAX], usize) {
        let mut f = [0u8; MAX];
        eth(&mut f, dst_mac, src_mac, ETH_IPV4);
        let p = &payload[..payload.len().min(MAX - 42)];
        let ip_len = 20 + 8 + p.len();
        f[14] = 0x45;
        f[16..18].copy_from_slice(&(ip_len as u16).to_be_bytes());
        f[22] = 64;
        f[23] = 17;
        f[26..30].copy_from_slice(&src);
        f[30..34].copy_from_slice(&dst);
        let c = inet_checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f[38..40].copy_from_slice(&((8 + p.len()) as u16).to_be_bytes());
        f[42..42 + p.len()].copy_from_slice(p);
        (f, (14 + ip_len).max(60))
    }

    /// The UDP datagram in `f`, if it is one with a valid IP header.
    pub fn parse_udp(f: &[u8]) -> Option<Udp<'_>> {
        if f.len() < 42 || u16::from_be_bytes([f[12], f[13]]) != ETH_IPV4 || f[14] >> 4 != 4 || f[23] != 17 {
            return None;
        }
        let ihl = usize::from(f[14] & 0xf) * 4;
        let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
        if ihl < 20 || total < ihl + 8 || f.len() < 14 + total || inet_checksum(&f[14..14 + ihl]) != 0 {
            return None;
        }
        let u = &f[14 + ihl..14 + total];
        let ulen = usize::from(u16::from_be_bytes([u[4], u[5]]));
        if ulen < 8 || ulen > u.len() {
            return None;
        }
        Some(Udp {
            src: f[26..30].try_into().ok()?,
            sport: u16::from_be_bytes([u[0], u[1]]),
            dst: f[30..34].try_into().ok()?,
            dport: u16::from_be_bytes([u[2], u[3]]),
            payload: &u[8..ulen],
        })
    }

    /// Parses "a.b.c.d".
    pub fn parse_ipv4(s: &str) -> Option<[u8; 4]> {
        let mut out = [0u8; 4];
        let mut parts = s.split('.');
        for o in &mut out {
            *o = parts.next()?.parse().ok()?;
        }
        parts.next().is_none().then_some(out)
    }
}

#[cfg(test)]
mod frame_tests {
    use super::frames::*;

    #[test]
    fn udp_round_trips_with_a_valid_header_checksum() {
        let (f, n) = udp([1; 6], [2; 6], [10, 0, 2, 30], [10, 0, 2, 2], 4000, 5000, b"hello");
        assert_eq!(n, 60);
        // RFC 1071: a header with its checksum sums to zero.
        assert_eq!(inet_checksum(&f[14..34]), 0);
        let u = parse_udp(&f[..n]).unwrap();
        assert_eq!(u, Udp { src: [10, 0, 2, 30], sport: 4000, dst: [10, 0, 2, 2], dport: 5000, payload: b"hello" });
        let mut bad = f;
        bad[20] ^= 1;
        assert!(parse_udp(&bad[..n]).is_none());
    }

    #[test]
    fn arp_request_and_reply_parse() {
        let (f, n) = arp(1, [2; 6], [10, 0, 2, 30], [0; 6], [10, 0, 2, 2]);
        assert_eq!(&f[..6], &[0xff; 6]);
        assert_eq!(parse_arp(&f[..n]), Some(Arp { op: 1, sender_mac: [2; 6], sender_ip: [10, 0, 2, 30], target_ip: [10, 0, 2, 2] }));
        assert_eq!(parse_ipv4("10.0.2.30"), Some([10, 0, 2, 30]));
        assert_eq!(parse_ipv4("10.0.2"), None);
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn ticks_agree_uses_the_brackets() {
        let hz = 1_000_000; // one tick per µs
        let at = |b, a| Bracketed { before_us: b, after_us: a, count: 0 };
        // Narrow brackets: the plain ±30% check around 10 ms.
        assert!(ticks_agree("x", 10_000, hz, at(0, 10), at(10_010, 10_020), 30).is_ok());
        assert!(ticks_agree("x", 13_500, hz, at(0, 10), at(10_010, 10_020), 30).is_err());
        assert!(ticks_agree("x", 6_000, hz, at(0, 10), at(10_010, 10_020), 30).is_err());
        // The first sample's read was delayed 6 ms: 16 ms of counter time
        // fit, 25 ms do not.
        assert!(ticks_agree("x", 16_000, hz, at(0, 6_000), at(16_000, 16_010), 30).is_ok());
        assert!(ticks_agree("x", 25_000, hz, at(0, 6_000), at(16_000, 16_010), 30).is_err());
        assert_eq!(at(5, 9).width_us(), 4);
    }
    use super::*;

    fn text(f: impl FnOnce(&mut String) -> fmt::Result) -> String {
        let mut s = String::new();
        f(&mut s).unwrap();
        s
    }

    #[test]
    fn outcome_lines_and_summary() {
        assert_eq!(text(|w| write_outcome(w, "cpuid-vendor", &Outcome::Pass)), "test cpuid-vendor ... ok\n");
        assert_eq!(text(|w| write_outcome(w, "x", &Outcome::Fail(msg!("got {:#x}", 255)))), "test x ... FAIL got 0xff\n");
        assert_eq!(text(|w| write_outcome(w, "h", &Outcome::Skip(msg!("not Mantle")))), "test h ... skipped (not Mantle)\n");
        let mut t = Tally::default();
        assert_eq!(t.exit_code(), EXIT_SOME_FAILED, "nothing passed is not success");
        t.record(&Outcome::Pass);
        t.record(&Outcome::Skip(Msg::new()));
        assert_eq!(t.exit_code(), EXIT_ALL_PASSED);
        t.record(&Outcome::Fail(Msg::new()));
        assert_eq!(text(|w| write_summary(w, &t)), "suite: 1 passed, 1 failed, 1 skipped\n");
        assert_eq!(t.exit_code(), EXIT_SOME_FAILED);
    }

    #[test]
    fn msg_truncates_on_char_boundaries() {
        let long = "é".repeat(150);
        let m = msg!("{long}");
        assert_eq!(m.as_str().len(), 200);
        assert!(m.as_str().chars().all(|c| c == 'é'));
    }

    #[test]
    fn command_line() {
        let c = Cmdline::new("/vm/suite.elf suite-args x=1 expect-modules=1 mem=0x20");
        assert_eq!(c.kernel_path(), "/vm/suite.elf");
        assert_eq!(c.args(), "suite-args x=1 expect-modules=1 mem=0x20");
        assert_eq!(c.get("x"), Some("1"));
        assert_eq!(c.get_u64("expect-modules"), Some(1));
        assert_eq!(c.get_u64("mem"), Some(32));
        assert_eq!(c.get("suite-args"), None);
        assert_eq!(Cmdline::new("/k").args(), "");
        assert_eq!(Cmdline::new("/k").get("x"), None);
    }

    #[test]
    fn multiboot_info_and_memory_map() {
        let mut b = [0u8; 52];
        b[0..4].copy_from_slice(&0x45u32.to_le_bytes());
        b[8..12].copy_from_slice(&31744u32.to_le_bytes());
        b[44..48].copy_from_slice(&48u32.to_le_bytes());
        let i = MbInfo::parse(&b).unwrap();
        assert!(i.has(MB_INFO_MEMORY) && i.has(MB_INFO_CMDLINE) && !i.has(MB_INFO_MODS));
        assert_eq!((i.mem_upper, i.mmap_length), (31744, 48));
        let mut map = Vec::new();
        for (base, len, kind) in [(0u64, 0x9fc00u64, 1u32), (0x100000, 0x1f00000, 1)] {
            map.extend_from_slice(&20u32.to_le_bytes());
            map.extend_from_slice(&base.to_le_bytes());
            map.extend_from_slice(&len.to_le_bytes());
            map.extend_from_slice(&kind.to_le_bytes());
        }
        let mut seen = Vec::new();
        assert_eq!(mmap_entries(&map, |e| seen.push(e)), Ok(2));
        assert_eq!(seen[1], MmapEntry { base: 0x100000, len: 0x1f00000, kind: 1 });
        assert!(mmap_entries(&map[..30], |_| {}).is_err());
        map[24] = 8; // second entry's size too small
        assert!(mmap_entries(&map, |_| {}).is_err());
    }

    fn fix_checksum(b: &mut [u8], at: usize) {
        b[at] = 0;
        b[at] = 0u8.wrapping_sub(checksum(b));
    }

    fn table(sig: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut t = vec![0u8; SDT_HEADER_LEN];
        t[..4].copy_from_slice(sig);
        t.extend_from_slice(body);
        let len = t.len() as u32;
        t[4..8].copy_from_slice(&len.to_le_bytes());
        t[8] = 1;
        fix_checksum(&mut t, 9);
        t
    }

    #[test]
    fn rsdp_versions_and_checksums() {
        let mut r = vec![0u8; 36];
        r[..8].copy_from_slice(b"RSD PTR ");
        r[16..20].copy_from_slice(&0x1ffe0000u32.to_le_bytes());
        fix_checksum(&mut r[..20], 8);
        assert_eq!(Rsdp::parse(&r), Ok(Rsdp { revision: 0, rsdt: 0x1ffe0000, xsdt: None, length: 20 }));
        r[15] = 2;
        fix_checksum(&mut r[..20], 8);
        r[20..24].copy_from_slice(&36u32.to_le_bytes());
        r[24..32].copy_from_slice(&0xe0100u64.to_le_bytes());
        fix_checksum(&mut r, 32);
        assert_eq!(Rsdp::parse(&r).unwrap().xsdt, Some(0xe0100));
        r[33] = 1; // reserved byte breaks only the extended checksum
        assert!(Rsdp::parse(&r).unwrap_err().as_str().contains("extended"));
        r[0] = b'X';
        assert!(Rsdp::parse(&r).is_err());
    }

    #[test]
    fn madt_cpus_ioapic_overrides() {
        let mut body = Vec::new();
        body.extend_from_slice(&0xfee00000u32.to_le_bytes());
        body.extend_from_slice(&1u32.to_le_bytes());
        body.extend_from_slice(&[0, 8, 0, 0, 1, 0, 0, 0]); // CPU 0 enabled
        body.extend_from_slice(&[0, 8, 1, 1, 1, 0, 0, 0]); // CPU 1 enabled
        body.extend_from_slice(&[0, 8, 2, 2, 0, 0, 0, 0]); // CPU 2 disabled
        body.extend_from_slice(&[1, 12, 0, 0, 0, 0, 0xc0, 0xfe, 0, 0, 0, 0]); // IOAPIC 0
        body.extend_from_slice(&[2, 10, 0, 0, 2, 0, 0, 0, 0, 0]); // IRQ0 -> GSI2
        body.extend_from_slice(&[4, 6, 0xff, 0, 0, 1]); // LAPIC NMI: ignored
        let t = table(b"APIC", &body);
        let m = Madt::parse(&t).unwrap();
        assert_eq!(m.cpus(), [0, 1]);
        assert_eq!(m.ioapic, Some((0, 0xfec00000, 0)));
        assert_eq!((m.gsi_for_isa(0), m.gsi_for_isa(4)), (2, 4));
        let mut bad = t.clone();
        bad[20] ^= 1;
        assert!(Madt::parse(&bad).unwrap_err().as_str().contains("checksum"));
        let mut short = table(b"APIC", &body[..8 + 4]);
        short[45] = 0; // entry length 0
        fix_checksum(&mut short, 9);
        assert!(Madt::parse(&short).is_err());
        assert!(Madt::parse(&table(b"FACP", &body)).is_err());
        let mut sdt = table(b"RSDT", &[0x00, 0x10, 0, 0, 0x00, 0x20, 0, 0]);
        let mut seen = Vec::new();
        sdt_entries(&sdt, false, |a| seen.push(a));
        assert_eq!(seen, [0x1000, 0x2000]);
        assert!(check_table(&sdt, b"RSDT").is_ok());
        sdt.push(0);
        assert!(check_table(&sdt, b"RSDT").is_err());
    }

    #[test]
    fn mp_table() {
        let mut f = [0u8; 16];
        f[..4].copy_from_slice(b"_MP_");
        f[4..8].copy_from_slice(&0xf0010u32.to_le_bytes());
        f[8] = 1;
        f[9] = 4;
        fix_checksum(&mut f, 10);
        assert_eq!(MpFloating::parse(&f), Ok(MpFloating { config: 0xf0010, spec_rev: 4, feature1: 0 }));
        let mut t = vec![0u8; 44];
        t[..4].copy_from_slice(b"PCMP");
        let mut e = vec![0u8; 20];
        e[1] = 0;
        e[3] = 3; // enabled, BSP
        t.extend_from_slice(&e);
        e[1] = 1;
        e[3] = 1;
        t.extend_from_slice(&e);
        t.extend_from_slice(&[1, 0, b'I', b'S', b'A', b' ', b' ', b' ']);
        t.extend_from_slice(&[2, 0, 0x11, 1, 0, 0, 0xc0, 0xfe]);
        let len = t.len() as u16;
        t[4..6].copy_from_slice(&len.to_le_bytes());
        t[34..36].copy_from_slice(&4u16.to_le_bytes());
        fix_checksum(&mut t, 7);
        let c = MpConfig::parse(&t).unwrap();
        assert_eq!((c.cpus(), c.bsps, c.ioapic_addr), (&[0u8, 1][..], 1, Some(0xfec00000)));
        t[34] = 5; // one entry more than there is
        fix_checksum(&mut t, 7);
        assert!(MpConfig::parse(&t).is_err());
    }

    #[test]
    fn rtc_decoding() {
        // 2026-11-03 23:59:58, BCD, 24-hour.
        let bcd = [0x58, 0x59, 0x23, 0x03, 0x11, 0x26, 0x20];
        let t = decode_rtc(bcd, 0x02).unwrap();
        assert_eq!((t.year, t.month, t.day, t.hour, t.minute, t.second), (2026, 11, 3, 23, 59, 58));
        assert_eq!(decode_rtc([58, 59, 23, 3, 11, 26, 20], 0x06).unwrap(), t);
        // 12-hour BCD: 11 PM is 0x91, 12 AM is 0x12.
        assert_eq!(decode_rtc([0x58, 0x59, 0x91, 0x03, 0x11, 0x26, 0x20], 0x00).unwrap().hour, 23);
        assert_eq!(decode_rtc([0, 0, 0x12, 0x03, 0x11, 0x26, 0x20], 0x00).unwrap().hour, 0);
        assert!(decode_rtc([0x5a, 0x59, 0x23, 0x03, 0x11, 0x26, 0x20], 0x02).is_err());
        assert!(decode_rtc([0x58, 0x59, 0x24, 0x03, 0x11, 0x26, 0x20], 0x02).is_err());
        assert!(decode_rtc([0x58, 0x59, 0x23, 0x03, 0x13, 0x26, 0x20], 0x02).is_err());
        assert!(decode_rtc([0x58, 0x59, 0x23, 0x03, 0x11, 0x26, 0x19], 0x02).is_err());
        assert_eq!(from_bcd(0x99), Some(99));
        assert_eq!(from_bcd(0xa0), None);
    }
}
