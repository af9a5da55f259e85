//! Tiny test guests, assembled here byte by byte (no cross toolchain is
//! needed): Multiboot v1 kernels using the header's address fields (the
//! "a.out kludge"), loaded at 1 MiB and entered in 32-bit protected mode.
//! QEMU's own Multiboot loader boots them too (`-kernel`).

const LOAD: u32 = 0x10_0000;
const HEADER_LEN: u32 = 32;

/// A Multiboot image: header (flags bit 16: address fields) then `code`,
/// whose first byte is the entry point. `code` may refer to its own
/// offsets through [`code_addr`].
fn multiboot_image(code: &[u8]) -> Vec<u8> {
    const MAGIC: u32 = 0x1bad_b002;
    const FLAGS: u32 = 1 << 16;
    let mut v = Vec::new();
    for w in [MAGIC, FLAGS, 0u32.wrapping_sub(MAGIC.wrapping_add(FLAGS)), LOAD, LOAD, 0, 0, LOAD + HEADER_LEN] {
        v.extend_from_slice(&w.to_le_bytes());
    }
    v.extend_from_slice(code);
    v
}

/// The guest-physical address of byte `off` of the code.
fn code_addr(off: usize) -> u32 {
    LOAD + HEADER_LEN + off as u32
}

/// Prints a line on COM1 (polling the LSR like a real driver), then reports
/// exit code 0x10 through the QEMU-compatible debug-exit port and halts.
pub fn hello() -> Vec<u8> {
    let msg = b"hello from a Mantle guest\n\0";
    let mut c: Vec<u8> = Vec::new();
    // mov esi, msg (patched below)
    c.extend_from_slice(&[0xbe, 0, 0, 0, 0]);
    // next: lodsb; test al, al; jz done
    let next = c.len();
    c.extend_from_slice(&[0xac, 0x84, 0xc0, 0x74, 0x00]);
    let jz_at = c.len() - 1;
    // mov bl, al; wait: mov dx, 0x3fd; in al, dx; test al, 0x20; jz wait
    c.extend_from_slice(&[0x88, 0xc3]);
    let wait = c.len();
    c.extend_from_slice(&[0x66, 0xba, 0xfd, 0x03, 0xec, 0xa8, 0x20, 0x74]);
    c.push((wait as i32 - (c.len() as i32 + 1)) as u8);
    // mov al, bl; mov dx, 0x3f8; out dx, al; jmp next
    c.extend_from_slice(&[0x88, 0xd8, 0x66, 0xba, 0xf8, 0x03, 0xee, 0xeb]);
    c.push((next as i32 - (c.len() as i32 + 1)) as u8);
    // done: mov dx, 0xf4; mov eax, 0x10; out dx, eax; hlt; jmp hlt
    let done = c.len();
    c[jz_at] = (done - (jz_at + 1)) as u8;
    c.extend_from_slice(&[0x66, 0xba, 0xf4, 0x00, 0xb8, 0x10, 0x00, 0x00, 0x00, 0xef, 0xf4, 0xeb, 0xfd]);
    let msg_at = c.len();
    c.extend_from_slice(msg);
    c[1..5].copy_from_slice(&code_addr(msg_at).to_le_bytes());
    multiboot_image(&c)
}

/// Loads an empty IDT and raises an exception: a triple fault.
pub fn triple_fault() -> Vec<u8> {
    let mut c: Vec<u8> = Vec::new();
    // lidt [idt_desc]; int3; hlt
    c.extend_from_slice(&[0x0f, 0x01, 0x1d, 0, 0, 0, 0, 0xcc, 0xf4]);
    let desc = c.len();
    c.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // limit 0, base 0
    c[3..7].copy_from_slice(&code_addr(desc).to_le_bytes());
    multiboot_image(&c)
}

/// Spins forever with interrupts off: only the host's timer can take the
/// CPU back.
pub fn spin() -> Vec<u8> {
    multiboot_image(&[0xfa, 0xeb, 0xfe]) // cli; jmp $
}

/// A flat real-mode binary (no header: `--format flat --load-address 0x7c00
/// --entry-mode real`): writes 0x42 to the debug-exit port with a 16-bit
/// OUT and halts.
pub fn real_mode_flat() -> Vec<u8> {
    vec![0xba, 0xf4, 0x00, 0xb8, 0x42, 0x00, 0xef, 0xf4, 0xeb, 0xfd] // mov dx, 0xf4; mov ax, 0x42; out dx, ax; hlt; jmp hlt
}

/// Idles with interrupts on and nothing to wake it: a VM that costs no CPU
/// (for benchmarks that count VMs rather than work).
pub fn idle() -> Vec<u8> {
    multiboot_image(&[0xfb, 0xf4, 0xeb, 0xfd]) // sti; hlt; jmp hlt
}

/// Two CPU-bound vCPUs: the BSP puts `jmp $` at 0x8000, starts the AP
/// there with INIT + START-UP (vector 8) through its LAPIC's ICR, and both
/// spin with interrupts off.
pub fn smp_spin() -> Vec<u8> {
    let c: Vec<u8> = [
        &[0xfa][..],                                                   // cli
        &[0x66, 0xc7, 0x05, 0x00, 0x80, 0x00, 0x00, 0xeb, 0xfe],      // mov word [0x8000], 0xfeeb (jmp $)
        &[0xc7, 0x05, 0x10, 0x03, 0xe0, 0xfe, 0x00, 0x00, 0x00, 0x01], // mov dword [0xfee00310], 1 << 24 (APIC ID 1)
        &[0xc7, 0x05, 0x00, 0x03, 0xe0, 0xfe, 0x00, 0x45, 0x00, 0x00], // mov dword [0xfee00300], 0x4500 (INIT)
        &[0xc7, 0x05, 0x00, 0x03, 0xe0, 0xfe, 0x08, 0x46, 0x00, 0x00], // mov dword [0xfee00300], 0x4608 (SIPI 8)
        &[0xeb, 0xfe],                                                 // jmp $
    ]
    .concat();
    multiboot_image(&c)
}

/// Touches the LAPIC page through MMIO (a read with a ModRM operand, a
/// store of an immediate, a read back) and reports
/// `(TPR << 8) | (version & 0xff)` through debug-exit: 0x2014 on a model
/// with version 0x14 once TPR = 0x20 stuck.
pub fn lapic_mmio() -> Vec<u8> {
    let c: Vec<u8> = [
        &[0x8b, 0x1d, 0x30, 0x00, 0xe0, 0xfe][..], // mov ebx, [0xfee00030]   (version)
        &[0xc7, 0x05, 0x80, 0x00, 0xe0, 0xfe, 0x20, 0x00, 0x00, 0x00], // mov dword [0xfee00080], 0x20 (TPR)
        &[0x8b, 0x0d, 0x80, 0x00, 0xe0, 0xfe], // mov ecx, [0xfee00080]
        &[0x81, 0xe3, 0xff, 0x00, 0x00, 0x00], // and ebx, 0xff
        &[0xc1, 0xe1, 0x08],                   // shl ecx, 8
        &[0x09, 0xcb],                         // or ebx, ecx
        &[0x89, 0xd8],                         // mov eax, ebx
        &[0x66, 0xba, 0xf4, 0x00, 0xef, 0xf4, 0xeb, 0xfd], // mov dx, 0xf4; out dx, eax; hlt; jmp $-1
    ]
    .concat();
    multiboot_image(&c)
}

/// Enables SSE, puts `pattern` in XMM5, then makes 20000 port-I/O exits,
/// checking after each that XMM5 still holds the pattern: debug-exit 0x10
/// if it always did, 0x11 if the VMM (or another guest) clobbered it.
pub fn fpu(pattern: u32) -> Vec<u8> {
    let p = pattern.to_le_bytes();
    let mut c: Vec<u8> = vec![
        0x0f, 0x20, 0xe0, // mov eax, cr4
        0x0d, 0x00, 0x06, 0x00, 0x00, // or eax, 0x600 (OSFXSR, OSXMMEXCPT)
        0x0f, 0x22, 0xe0, // mov cr4, eax
        0x0f, 0x20, 0xc0, // mov eax, cr0
        0x83, 0xe0, 0xfb, // and eax, ~4 (EM)
        0x83, 0xc8, 0x02, // or eax, 2 (MP)
        0x0f, 0x22, 0xc0, // mov cr0, eax
        0xb8, p[0], p[1], p[2], p[3], // mov eax, pattern
        0x66, 0x0f, 0x6e, 0xe8, // movd xmm5, eax
        0xb9, 0x20, 0x4e, 0x00, 0x00, // mov ecx, 20000
    ];
    let top = c.len();
    c.extend_from_slice(&[0x66, 0xba, 0x80, 0x00, 0xee]); // mov dx, 0x80; out dx, al
    c.extend_from_slice(&[0x66, 0x0f, 0x7e, 0xeb]); // movd ebx, xmm5
    c.extend_from_slice(&[0x81, 0xfb, p[0], p[1], p[2], p[3]]); // cmp ebx, pattern
    c.extend_from_slice(&[0x75, 0x00]); // jne fail
    let jne = c.len() - 1;
    c.push(0x49); // dec ecx
    c.extend_from_slice(&[0x75, 0x00]); // jnz top
    let jnz = c.len() - 1;
    c[jnz] = (top as i32 - c.len() as i32) as u8;
    c.extend_from_slice(&[0xb8, 0x10, 0, 0, 0, 0xeb, 0x05]); // mov eax, 0x10; jmp report
    let fail = c.len();
    c[jne] = (fail - (jne + 1)) as u8;
    c.extend_from_slice(&[0xb8, 0x11, 0, 0, 0]); // fail: mov eax, 0x11
    c.extend_from_slice(&[0x66, 0xba, 0xf4, 0x00, 0xef, 0xf4, 0xeb, 0xfd]); // report
    multiboot_image(&c)
}

/// Assembles `image-builder/guests/<src>` once per `(mode, name)` with the
/// host's binutils as 32-bit code (`as --32 --defsym MODE=n`, `ld -m
/// elf_i386`: no cross toolchain) into Multiboot ELF32 kernels linked at
/// 1 MiB, which Mantle's loader and QEMU's `-kernel` both boot.
fn assemble(src: &str, modes: &[(u32, &'static str)]) -> Result<Vec<(&'static str, Vec<u8>)>, String> {
    let src = crate::kernel::workspace_root().join("image-builder/guests").join(src);
    let dir = crate::out_dir().join("guests");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let run = |cmd: &mut std::process::Command| -> Result<(), String> {
        let o = cmd.output().map_err(|e| format!("cannot run {:?} (binutils missing?): {e}", cmd.get_program()))?;
        if o.status.success() { Ok(()) } else { Err(format!("{:?} failed: {}", cmd.get_program(), String::from_utf8_lossy(&o.stderr))) }
    };
    let mut out = Vec::new();
    for &(mode, name) in modes {
        let obj = dir.join(format!("{name}.o"));
        let elf = dir.join(name);
        run(std::process::Command::new("as").args(["--32", "--defsym", &format!("MODE={mode}"), "-o"]).arg(&obj).arg(&src))?;
        // -N: one RWX segment at 1 MiB (no ELF headers loaded below it).
        run(std::process::Command::new("ld")
            .args(["-N", "--no-warn-rwx-segments", "-m", "elf_i386", "-Ttext=0x100000", "-e", "_start", "--build-id=none", "-o"])
            .arg(&elf)
            .arg(&obj))?;
        out.push((name, std::fs::read(&elf).map_err(|e| format!("reading {}: {e}", elf.display()))?));
    }
    Ok(out)
}

/// The hostile guests (`image-builder/guests/hostile.S`, one per mode).
pub fn hostile() -> Result<Vec<(&'static str, Vec<u8>)>, String> {
    assemble("hostile.S", &[(1, "hostile-ports.elf"), (2, "hostile-msrs.elf"), (3, "hostile-memory.elf"), (4, "hostile-apic.elf"), (5, "hostile-xstate-a.elf"), (6, "hostile-xstate-b.elf"), (7, "hostile-xstate-c.elf"), (8, "hostile-insns.elf"), (9, "hostile-debug.elf")])
}

/// The benchmark guests (`image-builder/guests/bench.S`).
pub fn bench() -> Result<Vec<(&'static str, Vec<u8>)>, String> {
    assemble("bench.S", &[(1, "bench-cpuid.elf"), (2, "bench-work.elf")])
}

/// The guest that shuts down on its ACPI power button
/// (`image-builder/guests/power-button.S`).
pub fn power_button() -> Result<Vec<(&'static str, Vec<u8>)>, String> {
    assemble("power-button.S", &[(1, "power-button.elf")])
}

/// The guest whose console counts forever (`image-builder/guests/ticker.S`).
pub fn ticker() -> Result<Vec<(&'static str, Vec<u8>)>, String> {
    assemble("ticker.S", &[(1, "ticker.elf")])
}

/// The guest fuzzer (`image-builder/guests/guestfuzz.S`).
pub fn fuzz() -> Result<Vec<(&'static str, Vec<u8>)>, String> {
    assemble("guestfuzz.S", &[(1, "guestfuzz.elf")])
}

/// The guests in every image, under /usr/lib/mantle/guests/.
pub fn all() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("hello.bin", hello()),
        ("triple-fault.bin", triple_fault()),
        ("spin.bin", spin()),
        ("smp-spin.bin", smp_spin()),
        ("idle.bin", idle()),
        ("real-mode.flat", real_mode_flat()),
        ("lapic-mmio.bin", lapic_mmio()),
        ("fpu-a.bin", fpu(0x1234_5678)),
        ("fpu-b.bin", fpu(0x0bad_f00d)),
        ("fpu-c.bin", fpu(0x5a5a_a5a5)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiboot_header_checksums() {
        for (name, img) in all().into_iter().filter(|(n, _)| !n.ends_with(".flat")) {
            let w = |i: usize| u32::from_le_bytes(img[i * 4..i * 4 + 4].try_into().unwrap());
            assert_eq!(w(0).wrapping_add(w(1)).wrapping_add(w(2)), 0, "{name}");
            assert_eq!(w(7), LOAD + HEADER_LEN, "{name} entry");
        }
    }

    #[test]
    fn assembled_guests_are_multiboot_elf32() {
        for (name, img) in hostile().unwrap().into_iter().chain(bench().unwrap()).chain(fuzz().unwrap()).chain(power_button().unwrap()).chain(ticker().unwrap()) {
            assert_eq!(&img[..5], b"\x7fELF\x01", "{name}: ELF32");
            let at = (0..8192).step_by(4).find(|&i| img[i..i + 4] == 0x1bad_b002u32.to_le_bytes()).expect("Multiboot header");
            let w = |i: usize| u32::from_le_bytes(img[at + i * 4..at + i * 4 + 4].try_into().unwrap());
            assert_eq!(w(0).wrapping_add(w(1)).wrapping_add(w(2)), 0, "{name}");
        }
    }

    #[test]
    fn hello_points_at_its_message() {
        let img = hello();
        let msg_addr = u32::from_le_bytes(img[33..37].try_into().unwrap());
        let off = (msg_addr - LOAD) as usize;
        assert!(img[off..].starts_with(b"hello from a Mantle guest\n"));
    }
}
