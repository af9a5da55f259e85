//! The VM kernel loaders (`vmm::loader`): the file a `vmkcli vm create`
//! names is loaded as a Multiboot kernel (header address fields, ELF32 or
//! ELF64), a flat image, or an ELF64 entered in long mode, with modules.
//! Images are synthetic valid kernels, mutated, and random bytes; guest RAM
//! is sparse so that any RAM size costs only the pages written.

use std::collections::BTreeMap;

use vmkernel::vmm::firmware::{GuestLayout, HIGH_RAM_BASE};
use vmkernel::vmm::loader::multiboot::{self, HEADER_MAGIC, Module};
use vmkernel::vmm::loader::{GuestMemory, MemError, elf, flat, long_mode};

use crate::elf::synthetic_elf64;
use crate::{Rng, mutate};

/// Guest RAM with the VMM's layout (low RAM below the hole, the rest above
/// 4 GiB), holding only written pages.
struct SparseRam {
    size: u64,
    layout: GuestLayout,
    pages: BTreeMap<u64, Box<[u8; 4096]>>,
}

impl SparseRam {
    fn check(&self, gpa: u64, len: u64) -> Result<(), MemError> {
        let err = MemError { gpa, len };
        let end = gpa.checked_add(len).ok_or(err)?;
        if end <= self.layout.low_ram_end() || (gpa >= HIGH_RAM_BASE && end <= self.layout.high_ram_end()) {
            Ok(())
        } else {
            Err(err)
        }
    }
}

impl GuestMemory for SparseRam {
    fn ram_size(&self) -> u64 {
        self.size
    }
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemError> {
        self.check(gpa, data.len() as u64)?;
        let mut done = 0usize;
        while done < data.len() {
            let a = gpa + done as u64;
            let off = (a & 0xfff) as usize;
            let n = (4096 - off).min(data.len() - done);
            let page = self.pages.entry(a >> 12).or_insert_with(|| Box::new([0; 4096]));
            page[off..off + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
        Ok(())
    }
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.check(gpa, buf.len() as u64)?;
        for (i, b) in buf.iter_mut().enumerate() {
            let a = gpa + i as u64;
            *b = self.pages.get(&(a >> 12)).map_or(0, |p| p[(a & 0xfff) as usize]);
        }
        Ok(())
    }
    fn zero(&mut self, gpa: u64, len: u64) -> Result<(), MemError> {
        self.check(gpa, len)?;
        let (first, last) = (gpa >> 12, (gpa + len) >> 12);
        if last.saturating_sub(first) < 64 {
            for a in gpa..gpa + len {
                if let Some(p) = self.pages.get_mut(&(a >> 12)) {
                    p[(a & 0xfff) as usize] = 0;
                }
            }
        } else {
            let keys: Vec<u64> = self.pages.range(first..=last).map(|(k, _)| *k).collect();
            for k in keys {
                self.pages.remove(&k);
            }
        }
        Ok(())
    }
}

/// A Multiboot kernel: the header (sometimes with address fields) in the
/// first 8 KiB of an ELF32/ELF64 or a plain binary.
fn multiboot_image(rng: &mut Rng) -> Vec<u8> {
    let mut img = match rng.below(3) {
        0 => synthetic_elf64(rng, false, 3),
        1 => synthetic_elf64(rng, true, 62),
        _ => {
            let n = rng.range(64, 8192) as usize;
            rng.bytes(n)
        }
    };
    let at = (rng.below(img.len().min(8192) as u64) & !3) as usize;
    let flags = (rng.next_u64() & 0x0001_0007) as u32 | if rng.chance(1, 16) { rng.u32() } else { 0 };
    let base = 0x10_0000u32 + rng.below(16) as u32 * 0x1000;
    let mut h = vec![];
    for v in [HEADER_MAGIC, flags, 0u32.wrapping_sub(HEADER_MAGIC).wrapping_sub(flags)] {
        h.extend(v.to_le_bytes());
    }
    let addr = |rng: &mut Rng, v: u32| if rng.chance(7, 8) { v } else { rng.interesting_u64() as u32 };
    let (bss, entry) = (rng.below(1 << 20) as u32, rng.below(img.len() as u64) as u32);
    let fields = [
        addr(rng, base + at as u32),
        addr(rng, base),
        addr(rng, base + img.len() as u32),
        addr(rng, base + img.len() as u32 + bss),
        addr(rng, base + entry),
    ];
    for v in fields {
        h.extend(v.to_le_bytes());
    }
    if img.len() < at + h.len() {
        img.resize(at + h.len(), 0);
    }
    img[at..at + h.len()].copy_from_slice(&h);
    img
}

pub fn one(rng: &mut Rng) {
    let ram = *rng.pick(&[4u64 << 20, 16 << 20, 64 << 20, 4000 << 20, 5 << 30]);
    let mut mem = SparseRam { size: ram, layout: GuestLayout::new(ram), pages: BTreeMap::new() };
    let mut img = if rng.chance(1, 8) {
        let n = rng.below(4096) as usize;
        rng.bytes(n)
    } else {
        multiboot_image(rng)
    };
    if rng.chance(1, 2) {
        let max = img.len() + 256;
        mutate(rng, &mut img, max);
    }
    match rng.below(6) {
        0..=2 => {
            let mods: Vec<Vec<u8>> = (0..rng.below(4)).map(|_| rng.bytes_upto(5000)).collect();
            let strings: Vec<String> = (0..mods.len()).map(|i| format!("/mod{i} {}", "x".repeat(i * 150))).collect();
            let modules: Vec<Module> = mods.iter().zip(&strings).map(|(m, s)| Module { image: m, string: s }).collect();
            let args = "a".repeat(rng.below(5000) as usize);
            if let Ok((_, loaded)) = multiboot::load(&mut mem, &img, "/k", &args, &modules) {
                assert!(loaded.kernel.0 <= loaded.kernel.1);
                assert!(loaded.info_addr <= loaded.info_end);
            }
        }
        3 => {
            if elf::is_elf(&img)
                && let Ok(e) = elf::parse(&img)
            {
                let _ = (e.physical_entry(), e.physical_range());
                let _ = e.load(&img, &mut mem, &GuestLayout::new(ram));
            }
            let _ = long_mode::load_elf64(&mut mem, &img, rng.bool().then(|| rng.interesting_u64()));
        }
        4 => {
            let (load, entry, esp) = (rng.interesting_u64() as u32, rng.interesting_u64() as u32, rng.interesting_u64() as u32);
            let _ = flat::load_protected32(&mut mem, &img, load, entry, esp);
        }
        _ => {
            let (cs, ip, sp) = (rng.u32() as u16, rng.u32() as u16, rng.u32() as u16);
            let _ = flat::load_real(&mut mem, &img, cs, ip, sp);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fuzz_guest_kernel_loaders() {
        crate::run("guest_loader", super::one);
    }
}
