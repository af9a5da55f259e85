//! Firmware-table tests: every table is parsed back here with its checksum
//! verified, and the ACPI set is also handed to the `acpi` crate (the parser
//! the VMkernel itself uses) so an independent reader accepts it.

use super::*;
use crate::vmm::loader::testmem::VecMemory;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

#[test]
fn e820_small_guest() {
    let l = GuestLayout::new(128 * MIB);
    let map = l.e820();
    assert_eq!(
        map,
        std::vec![
            E820Entry { addr: 0, size: 0xA0000, kind: E820Type::Ram },
            E820Entry { addr: 0xA0000, size: 0x60000, kind: E820Type::Reserved },
            E820Entry { addr: MIB, size: 127 * MIB, kind: E820Type::Ram },
            E820Entry { addr: 0xFEC0_0000, size: 0x1000, kind: E820Type::Reserved },
            E820Entry { addr: 0xFEE0_0000, size: 0x1000, kind: E820Type::Reserved },
        ]
    );
    assert_eq!(l.mem_lower_kib(), 640);
    assert_eq!(l.mem_upper_kib(), 127 * 1024);
    assert!(l.is_ram(0, 0x1000));
    assert!(l.is_ram(0x9F000, 0x1000));
    assert!(!l.is_ram(0x9F000, 0x1001));
    assert!(!l.is_ram(0xE0000, 1));
    assert!(l.is_ram(MIB, 127 * MIB));
    assert!(!l.is_ram(MIB, 127 * MIB + 1));
    assert!(!l.is_ram(u64::MAX, 2));
}

#[test]
fn e820_large_guest_splits_around_the_hole() {
    let l = GuestLayout::new(4 * GIB);
    let map = l.e820();
    assert_eq!(map[2], E820Entry { addr: MIB, size: 3 * GIB - MIB, kind: E820Type::Ram });
    assert_eq!(*map.last().unwrap(), E820Entry { addr: 4 * GIB, size: GIB, kind: E820Type::Ram });
    assert_eq!(l.mem_upper_kib() as u64, (3 * GIB - MIB) / 1024);
    // Sorted and disjoint.
    for w in map.windows(2) {
        assert!(w[0].addr + w[0].size <= w[1].addr);
    }
    // RAM entries add up to the RAM size minus the BIOS area.
    let ram: u64 = map.iter().filter(|e| e.kind == E820Type::Ram).map(|e| e.size).sum();
    assert_eq!(ram, 4 * GIB - 0x60000);
    // Tiny guest: no RAM above 1 MiB.
    let t = GuestLayout::new(512 * 1024).e820();
    assert_eq!(t[0].size, 512 * 1024);
    assert!(t.iter().all(|e| e.kind != E820Type::Ram || e.addr == 0));
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// Reads a whole SDT at `addr`, checking signature and checksum.
fn table<'a>(m: &'a VecMemory, addr: u64, sig: &[u8; 4]) -> &'a [u8] {
    let hdr = m.slice(addr, 36);
    assert_eq!(&hdr[..4], sig);
    let len = u32_at(hdr, 4) as usize;
    let t = m.slice(addr, len);
    assert_eq!(sum(t), 0, "{} checksum", std::str::from_utf8(sig).unwrap());
    t
}

#[test]
fn acpi_tables_parse_back() {
    let mut m = VecMemory::new(64 * MIB);
    let cfg = FirmwareTablesConfig::new(4);
    let info = build_acpi(&mut m, &cfg).unwrap();
    assert!(info.end <= MP_BASE);
    // RSDP: 16-byte aligned in the BIOS area, both checksums.
    assert!(info.rsdp >= 0xE0000 && info.rsdp < 0x100000 && info.rsdp.is_multiple_of(16));
    let r = m.slice(info.rsdp, 36);
    assert_eq!(&r[..8], b"RSD PTR ");
    assert_eq!(sum(&r[..20]), 0);
    assert_eq!(sum(r), 0);
    assert_eq!(r[15], 2);
    assert_eq!(u32_at(r, 20), 36);
    let rsdt = table(&m, u32_at(r, 16) as u64, b"RSDT");
    let xsdt = table(&m, u64_at(r, 24), b"XSDT");
    assert_eq!(rsdt.len(), 36 + 8);
    assert_eq!(xsdt.len(), 36 + 16);
    let entries: std::vec::Vec<u64> = (0..2).map(|i| u64_at(xsdt, 36 + 8 * i)).collect();
    assert_eq!(entries, [u32_at(rsdt, 36) as u64, u32_at(rsdt, 40) as u64]);
    // FADT.
    let f = table(&m, entries[0], b"FACP");
    assert_eq!((f.len(), f[8]), (276, 6));
    assert_eq!(u32_at(f, 40) as u64, info.dsdt);
    assert_eq!(u64_at(f, 140), info.dsdt);
    assert_eq!(u64_at(f, 132), info.facs);
    assert_eq!(u16_at(f, 46), 9);
    assert_eq!(u32_at(f, 48), 0, "SMI_CMD 0: hardware is always in ACPI mode");
    assert_eq!((u32_at(f, 56), u32_at(f, 64), u32_at(f, 76)), (0x600, 0x604, 0x608));
    assert_eq!((f[88], f[89], f[91]), (4, 2, 4));
    assert_eq!(u16_at(f, 109), 3);
    assert_ne!(u32_at(f, 112) & (1 << 8), 0);
    assert_eq!(u32_at(f, 112) & (1 << 20), 0, "not HW_REDUCED_ACPI");
    assert_eq!((f[116], u64_at(f, 120), f[128]), (1, 0x64, 0xFE));
    // FACS: 64-byte aligned, no checksum.
    assert_eq!(info.facs % 64, 0);
    assert_eq!(m.slice(info.facs, 4), b"FACS");
    assert_eq!(m.u32(info.facs + 4), 64);
    // DSDT: the kernel's own `\_S5` finder reads our package.
    let d = table(&m, info.dsdt, b"DSDT");
    let s5 = crate::acpi_s5::find_s5(&d[36..]).unwrap();
    assert_eq!((s5.slp_typ_a, s5.slp_typ_b), (5, 5));
    // MADT.
    let a = table(&m, entries[1], b"APIC");
    assert_eq!(u32_at(a, 36), 0xFEE0_0000);
    assert_eq!(u32_at(a, 40), 1);
    let mut at = 44;
    let mut lapics = std::vec::Vec::new();
    let mut ioapic = None;
    let mut overrides = std::vec::Vec::new();
    while at < a.len() {
        let (ty, len) = (a[at], a[at + 1] as usize);
        match ty {
            0 => lapics.push((a[at + 2], a[at + 3], u32_at(a, at + 4))),
            1 => ioapic = Some((a[at + 2], u32_at(a, at + 4), u32_at(a, at + 8))),
            2 => overrides.push((a[at + 3], u32_at(a, at + 4), u16_at(a, at + 8))),
            4 => assert_eq!((a[at + 2], a[at + 5]), (0xFF, 1)),
            _ => panic!("unexpected MADT entry {ty}"),
        }
        at += len;
    }
    assert_eq!(at, a.len());
    assert_eq!(lapics, [(0, 0, 1), (1, 1, 1), (2, 2, 1), (3, 3, 1)]);
    assert_eq!(ioapic, Some((4, 0xFEC0_0000, 0)));
    assert_eq!(overrides, [(0, 2, 0), (9, 9, 0x0D)]);
}

#[test]
fn acpi_rejects_bad_cpu_counts() {
    let mut m = VecMemory::new(64 * MIB);
    assert_eq!(build_acpi(&mut m, &FirmwareTablesConfig::new(0)), Err(FirmwareError::BadCpuCount(0)));
    assert_eq!(build_acpi(&mut m, &FirmwareTablesConfig::new(255)), Err(FirmwareError::BadCpuCount(255)));
    let mut c = FirmwareTablesConfig::new(4);
    c.ioapic_id = 2;
    assert_eq!(build_acpi(&mut m, &c), Err(FirmwareError::BadCpuCount(4)));
    assert_eq!(build_mp_table(&mut m, &c), Err(FirmwareError::BadCpuCount(4)));
    // 254 vCPUs fit in both windows.
    let big = FirmwareTablesConfig::new(254);
    assert!(build_acpi(&mut m, &big).is_ok());
    assert!(build_mp_table(&mut m, &big).is_ok());
}

#[test]
fn mp_table_parses_back() {
    let mut m = VecMemory::new(64 * MIB);
    let cfg = FirmwareTablesConfig::new(2);
    let info = build_mp_table(&mut m, &cfg).unwrap();
    let fp = m.slice(info.floating_pointer, 16);
    assert_eq!(&fp[..4], b"_MP_");
    assert_eq!(sum(fp), 0);
    assert_eq!((fp[8], fp[9], fp[11]), (1, 4, 0));
    assert!(info.floating_pointer.is_multiple_of(16) && (0xF0000..0x100000).contains(&info.floating_pointer));
    let t_at = u32_at(fp, 4) as u64;
    let hdr = m.slice(t_at, 44);
    assert_eq!(&hdr[..4], b"PCMP");
    let len = u16_at(hdr, 4) as usize;
    let t = m.slice(t_at, len);
    assert_eq!(sum(t), 0);
    assert_eq!(t[6], 4);
    assert_eq!(u32_at(t, 36), 0xFEE0_0000);
    let count = u16_at(t, 34) as usize;
    let mut at = 44;
    let mut cpus = std::vec::Vec::new();
    let mut buses = 0;
    let mut ioapics = std::vec::Vec::new();
    let mut ints = std::vec::Vec::new();
    let mut locals = std::vec::Vec::new();
    for _ in 0..count {
        match t[at] {
            0 => {
                cpus.push((t[at + 1], t[at + 3]));
                at += 20;
            }
            1 => {
                assert_eq!(&t[at + 2..at + 8], b"ISA   ");
                buses += 1;
                at += 8;
            }
            2 => {
                ioapics.push((t[at + 1], t[at + 3], u32_at(t, at + 4)));
                at += 8;
            }
            3 => {
                ints.push((t[at + 1], u16_at(t, at + 2), t[at + 5], t[at + 6], t[at + 7]));
                at += 8;
            }
            4 => {
                locals.push((t[at + 1], t[at + 6], t[at + 7]));
                at += 8;
            }
            e => panic!("entry type {e}"),
        }
    }
    assert_eq!(at, len);
    assert_eq!(cpus, [(0, 3), (1, 1)]); // BSP flagged
    assert_eq!(buses, 1);
    assert_eq!(ioapics, [(2, 1, 0xFEC0_0000)]);
    assert_eq!(ints[0], (3, 0, 0, 2, 0)); // ExtINT -> INTIN0
    assert_eq!(ints[1], (0, 0, 0, 2, 2)); // IRQ0 -> INTIN2
    assert!(!ints.iter().any(|i| i.0 == 0 && i.2 == 2), "no entry for the cascade IRQ2");
    assert!(ints.contains(&(0, 0x0D, 9, 2, 9)));
    assert_eq!(ints.len(), 1 + 15);
    assert_eq!(locals, [(3, 0xFF, 0), (1, 0xFF, 1)]);
}

/// The `acpi` crate maps tables through a handler; this one points into the
/// test's guest memory. The crate's interface is `unsafe`, so this test-only
/// module opts out of the library's `deny(unsafe_code)`.
#[allow(unsafe_code)]
mod acpi_crate {
    use super::*;
    use acpi::madt::{Madt, MadtEntry};
    use acpi::{AcpiHandler, AcpiTables, PhysicalMapping, fadt::Fadt};
    use core::ptr::NonNull;

    #[derive(Clone, Copy)]
    struct Handler {
        base: NonNull<u8>,
        len: usize,
    }

    impl AcpiHandler for Handler {
        unsafe fn map_physical_region<T>(&self, phys: usize, size: usize) -> PhysicalMapping<Self, T> {
            assert!(phys + size <= self.len, "acpi crate read outside guest RAM");
            // SAFETY: in bounds of the live test buffer (checked above).
            unsafe { PhysicalMapping::new(phys, NonNull::new_unchecked(self.base.as_ptr().add(phys).cast()), size, size, *self) }
        }
        fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
    }

    #[test]
    fn acpi_crate_accepts_our_tables() {
        for cpus in [1u32, 3, 64] {
            let mut m = VecMemory::new(32 * MIB);
            let cfg = FirmwareTablesConfig::new(cpus);
            let info = build_acpi(&mut m, &cfg).unwrap();
            let h = Handler { base: NonNull::new(m.bytes.as_mut_ptr()).unwrap(), len: m.bytes.len() };
            // SAFETY: the handler maps the test buffer, which outlives `t`.
            let t = unsafe { AcpiTables::from_rsdp(h, info.rsdp as usize) }.expect("RSDP accepted");
            assert_eq!(t.revision(), 2);
            let fadt = t.find_table::<Fadt>().expect("FADT accepted");
            assert_eq!(fadt.dsdt_address().unwrap() as u64, info.dsdt);
            assert_eq!(fadt.facs_address().unwrap() as u64, info.facs);
            let flags = fadt.flags;
            assert!(flags.pm_timer_is_32_bit());
            assert!(flags.supports_system_reset_via_fadt());
            assert_eq!(fadt.pm1a_event_block().unwrap().address, 0x600);
            assert_eq!(fadt.pm1a_control_block().unwrap().address, 0x604);
            assert_eq!(fadt.pm_timer_block().unwrap().unwrap().address, 0x608);
            assert_eq!(fadt.reset_register().unwrap().address, 0x64);
            let sci = fadt.sci_interrupt;
            assert_eq!(sci, 9);
            let dsdt = t.dsdt().expect("DSDT accepted");
            assert_eq!(dsdt.address as u64, info.dsdt + 36);
            let madt = t.find_table::<Madt>().expect("MADT accepted");
            assert!(madt.get().supports_8259());
            let mut lapics = 0;
            let mut ioapics = 0;
            let mut isos = std::vec::Vec::new();
            for e in madt.get().entries() {
                match e {
                    MadtEntry::LocalApic(l) => {
                        assert_eq!(l.apic_id as u32, lapics);
                        let flags = l.flags;
                        assert_eq!(flags & 1, 1);
                        lapics += 1;
                    }
                    MadtEntry::IoApic(io) => {
                        let addr = io.io_apic_address;
                        let gsi = io.global_system_interrupt_base;
                        assert_eq!((io.io_apic_id as u32, addr, gsi), (cpus, 0xFEC0_0000, 0));
                        ioapics += 1;
                    }
                    MadtEntry::InterruptSourceOverride(o) => {
                        let gsi = o.global_system_interrupt;
                        isos.push((o.irq, gsi));
                    }
                    MadtEntry::LocalApicNmi(_) => {}
                    _ => panic!("unexpected entry"),
                }
            }
            assert_eq!((lapics, ioapics), (cpus, 1));
            assert_eq!(isos, [(0, 2), (9, 9)]);
            // Both roots list the same tables.
            assert_eq!(t.headers().count(), 2);
        }
    }
}

/// Decodes a PkgLength at `b[0..]`: (value, bytes it took).
fn decode_pkg_length(b: &[u8]) -> (usize, usize) {
    let n = (b[0] >> 6) as usize;
    if n == 0 {
        return ((b[0] & 0x3f) as usize, 1);
    }
    let mut v = (b[0] & 0xf) as usize;
    for i in 0..n {
        v |= (b[1 + i] as usize) << (4 + 8 * i);
    }
    (v, n + 1)
}

#[test]
fn aml_pkg_length_boundaries() {
    for body in [0usize, 1, 62, 63, 64, 200, 4093, 4094, 5000, 1 << 20] {
        let enc = aml::pkg_length(body);
        let (v, n) = decode_pkg_length(&enc);
        assert_eq!(n, enc.len(), "{body}");
        assert_eq!(v, body + n, "the length counts its own bytes ({body})");
    }
    assert_eq!(aml::pkg_length(62), [63]);
    assert_eq!(aml::pkg_length(63).len(), 2);
    assert_eq!(aml::integer(0), [0]);
    assert_eq!(aml::integer(5), [0x0a, 5]);
    assert_eq!(aml::integer(0x1234), [0x0b, 0x34, 0x12]);
    assert_eq!(aml::integer(0xfeb0_0000), [0x0c, 0, 0, 0xb0, 0xfe]);
}

/// Walks `\_SB`'s devices in the DSDT body: (NameSeg, _HID, _UID, _CRS bytes).
fn sb_devices(body: &[u8]) -> std::vec::Vec<([u8; 4], std::string::String, u64, std::vec::Vec<u8>)> {
    // Skip `Name (\_S5_, Package ...)`.
    assert_eq!(&body[..6], b"\x08\\_S5_");
    let (plen, _) = decode_pkg_length(&body[7..]);
    let mut at = 7 + plen;
    let mut out = std::vec::Vec::new();
    if at == body.len() {
        return out;
    }
    assert_eq!(body[at], 0x10, "ScopeOp");
    let (slen, sn) = decode_pkg_length(&body[at + 1..]);
    assert_eq!(at + 1 + slen, body.len(), "the scope runs to the end");
    assert_eq!(&body[at + 1 + sn..at + 1 + sn + 5], b"\\_SB_");
    at += 1 + sn + 5;
    while at < body.len() {
        assert_eq!(&body[at..at + 2], [0x5b, 0x82], "DeviceOp");
        let (dlen, dn) = decode_pkg_length(&body[at + 2..]);
        let end = at + 2 + dlen;
        let seg: [u8; 4] = body[at + 2 + dn..at + 6 + dn].try_into().unwrap();
        let mut p = at + 6 + dn;
        let (mut hid, mut uid, mut crs) = (std::string::String::new(), u64::MAX, std::vec::Vec::new());
        while p < end {
            assert_eq!(body[p], 0x08, "NameOp");
            let n = &body[p + 1..p + 5];
            p += 5;
            match n {
                b"_HID" => {
                    assert_eq!(body[p], 0x0d);
                    let z = body[p + 1..].iter().position(|&c| c == 0).unwrap();
                    hid = std::string::String::from_utf8(body[p + 1..p + 1 + z].to_vec()).unwrap();
                    p += z + 2;
                }
                b"_UID" => match body[p] {
                    0 | 1 => {
                        uid = body[p] as u64;
                        p += 1;
                    }
                    0x0a => {
                        uid = body[p + 1] as u64;
                        p += 2;
                    }
                    o => panic!("UID op {o:#x}"),
                },
                b"_CRS" => {
                    assert_eq!(body[p], 0x11, "BufferOp");
                    let (blen, bn) = decode_pkg_length(&body[p + 1..]);
                    let bend = p + 1 + blen;
                    let q = p + 1 + bn;
                    let (size, sz) = match body[q] {
                        0x0a => (body[q + 1] as usize, 2),
                        o => panic!("size op {o:#x}"),
                    };
                    crs = body[q + sz..bend].to_vec();
                    assert_eq!(crs.len(), size);
                    p = bend;
                }
                other => panic!("unexpected name {other:?}"),
            }
        }
        assert_eq!(p, end);
        out.push((seg, hid, uid, crs));
        at = end;
    }
    out
}

#[test]
fn dsdt_declares_occupied_virtio_mmio_slots() {
    let mut cfg = FirmwareTablesConfig::new(2);
    assert!(sb_devices(&dsdt_aml(&cfg)).is_empty(), "no slots: no \\_SB scope");
    cfg.virtio_mmio_slots = 0b1000_0101;
    let mut m = VecMemory::new(32 * MIB);
    let info = build_acpi(&mut m, &cfg).unwrap();
    let d = table(&m, info.dsdt, b"DSDT");
    let devs = sb_devices(&d[36..]);
    assert_eq!(devs.len(), 3);
    for ((seg, hid, uid, crs), slot) in devs.iter().zip([0u32, 2, 7]) {
        assert_eq!(std::str::from_utf8(seg).unwrap(), std::format!("VR{slot:02X}"));
        assert_eq!((hid.as_str(), *uid), ("LNRO0005", slot as u64));
        // Memory32Fixed RW base/len, Extended IRQ consumer level high GSI, End.
        let base = 0xfeb0_0000 + slot * 0x1000;
        assert_eq!(&crs[..4], [0x86, 9, 0, 1]);
        assert_eq!((u32_at(crs, 4), u32_at(crs, 8)), (base, 0x1000));
        assert_eq!(&crs[12..17], [0x89, 6, 0, 0x01, 1]);
        assert_eq!(u32_at(crs, 17), 16 + slot);
        assert_eq!(&crs[21..], [0x79, 0]);
    }
    // Still the kernel's `\_S5` finder reads the package.
    let s5 = crate::acpi_s5::find_s5(&d[36..]).unwrap();
    assert_eq!((s5.slp_typ_a, s5.slp_typ_b), (5, 5));
    // The FADT's power button is the fixed feature (PWR_BUTTON clear).
    let fadt_at = u64_at(table(&m, info.xsdt, b"XSDT"), 36);
    assert_eq!(u32_at(table(&m, fadt_at, b"FACP"), 112) & (1 << 4), 0);
}
