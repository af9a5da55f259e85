//! The boot-information parser (`vmkernel::bootinfo`): Multiboot2 tag lists
//! and PVH start-info structures as a loader might leave them, valid ones
//! mutated and random ones, anywhere in a window of physical memory whose
//! bytes outside the window read as a fixed pattern.

use vmkernel::bootinfo::{BootInfo, MULTIBOOT2_MAGIC, PVH_MAGIC, PhysRead};

use crate::{Rng, mutate};

const WINDOW: usize = 16 * 1024;

struct Window {
    base: u64,
    bytes: Vec<u8>,
}

impl PhysRead for Window {
    fn read(&self, phys: u64, buf: &mut [u8]) {
        for (i, b) in buf.iter_mut().enumerate() {
            let a = phys.wrapping_add(i as u64);
            *b = match a.checked_sub(self.base) {
                Some(o) if o < self.bytes.len() as u64 => self.bytes[o as usize],
                // Outside: a fixed pattern with NULs now and then.
                _ => (a.wrapping_mul(0x9e37_79b9) >> 24) as u8 & 0x7f,
            };
        }
    }
}

fn put(buf: &mut Vec<u8>, at: usize, data: &[u8]) {
    if buf.len() < at + data.len() {
        buf.resize(at + data.len(), 0);
    }
    buf[at..at + data.len()].copy_from_slice(data);
}

fn cstr(rng: &mut Rng) -> Vec<u8> {
    let n = if rng.chance(1, 8) { rng.range(1000, 2000) } else { rng.below(64) } as usize;
    let mut s: Vec<u8> = (0..n).map(|_| if rng.chance(15, 16) { b'a' + rng.below(26) as u8 } else { rng.u8() }).collect();
    if rng.chance(7, 8) {
        s.push(0);
    }
    s
}

/// A Multiboot2 information structure (tags cmdline, module, memory map,
/// RSDP copies, unknown ones, end) whose addresses point into the window.
fn multiboot2(rng: &mut Rng, base: u64) -> Vec<u8> {
    let mut b = vec![0u8; 8];
    for _ in 0..rng.below(12) {
        let at = b.len();
        let other = rng.u32();
        let ty = *rng.pick(&[1u32, 1, 3, 3, 6, 6, 14, 15, 2, 4, 5, 21, other]);
        let mut body = Vec::new();
        match ty {
            1 => body = cstr(rng),
            3 => {
                let s = base as u32 + rng.below(WINDOW as u64) as u32;
                body.extend(s.to_le_bytes());
                body.extend((s.wrapping_add(rng.below(1 << 20) as u32)).to_le_bytes());
                body.extend(cstr(rng));
            }
            6 => {
                let esz = *rng.pick(&[24u32, 24, 32, 0, 8, 100]);
                body.extend(esz.to_le_bytes());
                body.extend(0u32.to_le_bytes());
                for _ in 0..rng.below(200) {
                    let mut e = vec![0u8; esz.max(24) as usize];
                    e[0..8].copy_from_slice(&rng.interesting_u64().to_le_bytes());
                    e[8..16].copy_from_slice(&rng.interesting_u64().to_le_bytes());
                    e[16..20].copy_from_slice(&(rng.below(6) as u32).to_le_bytes());
                    body.extend(e);
                }
            }
            14 | 15 => {
                let n = *rng.pick(&[20, 24, 36, 40, 12]);
                body = rng.bytes(n);
            }
            _ => {
                let n = rng.below(40) as usize;
                body = rng.bytes(n);
            }
        }
        let size = if rng.chance(15, 16) { 8 + body.len() as u32 } else { rng.interesting_u64() as u32 };
        put(&mut b, at, &ty.to_le_bytes());
        put(&mut b, at + 4, &size.to_le_bytes());
        put(&mut b, at + 8, &body);
        b.resize((b.len() + 7) & !7, 0);
    }
    let at = b.len();
    put(&mut b, at, &[0, 0, 0, 0, 8, 0, 0, 0]);
    let total = if rng.chance(15, 16) { b.len() as u32 } else { rng.interesting_u64() as u32 };
    b[0..4].copy_from_slice(&total.to_le_bytes());
    b
}

/// An `hvm_start_info` with its module list, command line and memory map
/// laid out after it in the window (or pointing anywhere).
fn pvh(rng: &mut Rng, base: u64, at: usize) -> Vec<u8> {
    let mut b = vec![0u8; 56];
    let ptr = |rng: &mut Rng, off: usize| if rng.chance(7, 8) { base + (at + off) as u64 } else { rng.interesting_u64() };
    b[0..4].copy_from_slice(&PVH_MAGIC.to_le_bytes());
    b[4..8].copy_from_slice(&(rng.below(3) as u32).to_le_bytes());
    let nr_modules = if rng.chance(7, 8) { rng.below(20) as u32 } else { rng.u32() };
    b[12..16].copy_from_slice(&nr_modules.to_le_bytes());
    let modlist = ptr(rng, 56);
    b[16..24].copy_from_slice(&modlist.to_le_bytes());
    for _ in 0..nr_modules.min(20) {
        let mut m = [0u8; 32];
        m[0..8].copy_from_slice(&rng.interesting_u64().to_le_bytes());
        m[8..16].copy_from_slice(&rng.interesting_u64().to_le_bytes());
        m[16..24].copy_from_slice(&ptr(rng, 0).to_le_bytes());
        b.extend(m);
    }
    let cmd_at = b.len();
    b.extend(cstr(rng));
    let cmd = if rng.bool() { ptr(rng, cmd_at) } else { 0 };
    b[24..32].copy_from_slice(&cmd.to_le_bytes());
    b[32..40].copy_from_slice(&rng.interesting_u64().to_le_bytes());
    let map_at = b.len();
    let entries = if rng.chance(7, 8) { rng.below(200) as u32 } else { rng.u32() };
    for _ in 0..entries.min(200) {
        b.extend(rng.interesting_u64().to_le_bytes());
        b.extend(rng.interesting_u64().to_le_bytes());
        b.extend((rng.below(6) as u32).to_le_bytes());
        b.extend([0u8; 4]);
    }
    b[40..48].copy_from_slice(&ptr(rng, map_at).to_le_bytes());
    b[48..52].copy_from_slice(&entries.to_le_bytes());
    b
}

pub fn one(rng: &mut Rng) {
    // Loaders pass a 32-bit pointer (EBX); the window sits below 4 GiB.
    let base = *rng.pick(&[0u64, 0x1_0000, 0x10_0000, 0xffff_0000]);
    let at = (rng.below(WINDOW as u64 / 2) & !7) as usize;
    let multiboot = rng.bool();
    let mut info = if multiboot { multiboot2(rng, base) } else { pvh(rng, base, at) };
    if rng.chance(1, 2) {
        let max = info.len() + 64;
        mutate(rng, &mut info, max);
    }
    let mut bytes = if rng.chance(1, 8) { rng.bytes(WINDOW) } else { vec![0u8; WINDOW] };
    let n = info.len().min(WINDOW - at);
    bytes[at..at + n].copy_from_slice(&info[..n]);
    let mem = Window { base, bytes };
    let magic = match rng.below(8) {
        0 => rng.u32(),
        _ if multiboot => MULTIBOOT2_MAGIC,
        _ => PVH_MAGIC,
    };
    if let Ok(bi) = BootInfo::parse(magic, base + at as u64, &mem) {
        assert!(!bi.regions.is_empty());
        let _ = bi.usable_bytes();
        let _ = vmkernel::rootfs::archive_module(&bi.modules);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fuzz_boot_info() {
        crate::run("bootinfo", super::one);
    }
}
