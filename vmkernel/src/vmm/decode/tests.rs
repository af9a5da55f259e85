//! Decoder tests. The byte sequences of `LENGTH_VECTORS` were produced by
//! an assembler (`llvm-mc --show-encoding`), so lengths are cross-checked
//! against an independent encoder rather than against this decoder's tables.

use super::CpuMode::{Bits16, Bits32, Bits64};
use super::*;
use std::collections::BTreeMap;
use std::vec::Vec;

/// (mode, encoding, assembler text).
const LENGTH_VECTORS: &[(CpuMode, &[u8], &str)] = &[
    (Bits64, &[0x0f, 0xa2], "cpuid"),
    (Bits64, &[0x0f, 0x32], "rdmsr"),
    (Bits64, &[0x0f, 0x30], "wrmsr"),
    (Bits64, &[0xf4], "hlt"),
    (Bits64, &[0xe4, 0x60], "inb $96, %al"),
    (Bits64, &[0xe5, 0x61], "inl $97, %eax"),
    (Bits64, &[0xe6, 0x80], "outb %al, $128"),
    (Bits64, &[0xe7, 0x80], "outl %eax, $128"),
    (Bits64, &[0xec], "inb %dx, %al"),
    (Bits64, &[0x66, 0xed], "inw %dx, %ax"),
    (Bits64, &[0xed], "inl %dx, %eax"),
    (Bits64, &[0xee], "outb %al, %dx"),
    (Bits64, &[0x66, 0xef], "outw %ax, %dx"),
    (Bits64, &[0xef], "outl %eax, %dx"),
    (Bits64, &[0x0f, 0x01, 0xd9], "vmmcall"),
    (Bits64, &[0x0f, 0x01, 0xc1], "vmcall"),
    (Bits64, &[0x0f, 0x01, 0xd8], "vmrun"),
    (Bits64, &[0x0f, 0x31], "rdtsc"),
    (Bits64, &[0x0f, 0x01, 0xf9], "rdtscp"),
    (Bits64, &[0xf3, 0x90], "pause"),
    (Bits64, &[0x0f, 0x01, 0x38], "invlpg (%rax)"),
    (Bits64, &[0x0f, 0x01, 0x3d, 0x78, 0x56, 0x34, 0x12], "invlpg 305419896(%rip)"),
    (Bits64, &[0x0f, 0x01, 0x7c, 0xdc, 0x10], "invlpg 16(%rsp,%rbx,8)"),
    (Bits64, &[0x0f, 0x20, 0xc0], "movq %cr0, %rax"),
    (Bits64, &[0x0f, 0x22, 0xd8], "movq %rax, %cr3"),
    (Bits64, &[0x45, 0x0f, 0x20, 0xc1], "movq %cr8, %r9"),
    (Bits64, &[0x0f, 0x22, 0xe0], "movq %rax, %cr4"),
    (Bits64, &[0x0f, 0x21, 0xf8], "movq %dr7, %rax"),
    (Bits64, &[0x0f, 0x09], "wbinvd"),
    (Bits64, &[0x0f, 0x01, 0xd1], "xsetbv"),
    (Bits64, &[0x0f, 0x01, 0xd0], "xgetbv"),
    (Bits64, &[0xcc], "int3"),
    (Bits64, &[0xcd, 0x80], "int $128"),
    (Bits64, &[0x48, 0xcf], "iretq"),
    (Bits64, &[0xfa], "cli"),
    (Bits64, &[0xfb], "sti"),
    (Bits64, &[0xf3, 0x6c], "rep  insb %dx, %es:(%rdi)"),
    (Bits64, &[0xf3, 0x66, 0x6f], "rep  outsw (%rsi), %dx"),
    (Bits64, &[0x6f], "outsl (%rsi), %dx"),
    (Bits64, &[0xc7, 0x80, 0x80, 0x00, 0x00, 0x00, 0x78, 0x56, 0x34, 0x12], "movl $305419896, 128(%rax)"),
    (Bits64, &[0x48, 0xb8, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11], "movabsq $1234605616436508552, %rax"),
    (Bits64, &[0xa0, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11], "movabsb 1234605616436508552, %al"),
    (Bits64, &[0xa3, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11], "movabsl %eax, 1234605616436508552"),
    (Bits64, &[0xc6, 0x04, 0x25, 0xb0, 0x00, 0xe0, 0xfe, 0x01], "movb $1, 4276093104"),
    (Bits64, &[0x49, 0xc7, 0x04, 0x24, 0xff, 0xff, 0xff, 0xff], "movq $-1, (%r12)"),
    (Bits64, &[0x4b, 0x83, 0x84, 0xb5, 0x78, 0x56, 0x34, 0x12, 0x01], "addq $1, 305419896(%r13,%r14,4)"),
    (Bits64, &[0xf0, 0x81, 0x0f, 0x00, 0x00, 0x00, 0x80], "lock  orl $2147483648, (%rdi)"),
    (Bits64, &[0xf6, 0x40, 0x04, 0x01], "testb $1, 4(%rax)"),
    (Bits64, &[0x66, 0xf7, 0x03, 0x00, 0x80], "testw $32768, (%rbx)"),
    (Bits64, &[0x48, 0xf7, 0x01, 0xfe, 0xff, 0xff, 0xff], "testq $-2, (%rcx)"),
    (Bits64, &[0xf7, 0x10], "notl (%rax)"),
    (Bits64, &[0xff, 0x50, 0x10], "callq *16(%rax)"),
    (Bits64, &[0xe8, 0x00, 0x00, 0x00, 0x00], "callq 0"),
    (Bits64, &[0xeb, 0x00], "jmp 0"),
    (Bits64, &[0x74, 0x00], "je 0"),
    (Bits64, &[0x75, 0x00], "jne .Ltmp0+4096"),
    (Bits64, &[0x0f, 0x05], "syscall"),
    (Bits64, &[0x0f, 0x07], "sysretl"),
    (Bits64, &[0x0f, 0x0b], "ud2"),
    (Bits64, &[0x0f, 0xae, 0xe8], "lfence"),
    (Bits64, &[0x0f, 0xae, 0x38], "clflush (%rax)"),
    (Bits64, &[0x0f, 0x18, 0x06], "prefetchnta (%rsi)"),
    (Bits64, &[0xc7, 0xf8, 0x00, 0x00, 0x00, 0x00], "xbegin .Ltmp1"),
    (Bits64, &[0xc8, 0x08, 0x00, 0x00], "enter $8, $0"),
    (Bits64, &[0xc2, 0x08, 0x00], "retq $8"),
    (Bits64, &[0x90], "nop"),
    (Bits64, &[0x66, 0x0f, 0x1f, 0x04, 0x00], "nopw (%rax,%rax)"),
    (Bits64, &[0x0f, 0x1f, 0x04, 0x00], "nopl (%rax,%rax)"),
    (Bits64, &[0x66, 0x0f, 0x70, 0xd1, 0x1b], "pshufd $27, %xmm1, %xmm2"),
    (Bits64, &[0x66, 0x0f, 0x38, 0x00, 0xd1], "pshufb %xmm1, %xmm2"),
    (Bits64, &[0x66, 0x0f, 0x3a, 0x0f, 0xd1, 0x04], "palignr $4, %xmm1, %xmm2"),
    (Bits64, &[0x0f, 0xa4, 0x03, 0x03], "shldl $3, %eax, (%rbx)"),
    (Bits64, &[0x69, 0xc8, 0xe8, 0x03, 0x00, 0x00], "imull $1000, %eax, %ecx"),
    (Bits64, &[0x6b, 0xc8, 0x0a], "imull $10, %eax, %ecx"),
    (Bits64, &[0x68, 0x00, 0x10, 0x00, 0x00], "pushq $4096"),
    (Bits64, &[0x6a, 0x01], "pushq $1"),
    (Bits64, &[0x0f, 0xa3, 0x02], "btl %eax, (%rdx)"),
    (Bits64, &[0x0f, 0xba, 0x2a, 0x05], "btsl $5, (%rdx)"),
    (Bits64, &[0x0f, 0xb1, 0x0a], "cmpxchgl %ecx, (%rdx)"),
    (Bits64, &[0x87, 0x02], "xchgl %eax, (%rdx)"),
    (Bits64, &[0x0f, 0xb6, 0x40, 0x10], "movzbl 16(%rax), %eax"),
    (Bits64, &[0x48, 0x0f, 0xbf, 0x10], "movswq (%rax), %rdx"),
    (Bits64, &[0x64, 0x8b, 0x00], "fs movl (%rax), %eax"),
    (Bits64, &[0x65, 0x8b, 0x04, 0x25, 0x28, 0x00, 0x00, 0x00], "movl %gs:40, %eax"),
    (Bits64, &[0x48, 0xab], "stosq %rax, %es:(%rdi)"),
    (Bits64, &[0xf3, 0x48, 0xa5], "rep  movsq (%rsi), %es:(%rdi)"),
    (Bits64, &[0x67, 0x8b, 0x08], "movl (%eax), %ecx"),
    (Bits64, &[0x66, 0xc7, 0x40, 0x02, 0x34, 0x12], "movw $4660, 2(%rax)"),
    (Bits64, &[0xf2, 0x0f, 0x38, 0xf0, 0xc0], "crc32b %al, %eax"),
    (Bits64, &[0xf3, 0x0f, 0xb8, 0xc8], "popcntl %eax, %ecx"),
    (Bits64, &[0xf3, 0x0f, 0xbc, 0xc8], "tzcntl %eax, %ecx"),
    (Bits64, &[0x66, 0x90], "xchgw %ax, %ax"),
    (Bits32, &[0x0f, 0xa2], "cpuid"),
    (Bits32, &[0x0f, 0x32], "rdmsr"),
    (Bits32, &[0x0f, 0x30], "wrmsr"),
    (Bits32, &[0xf4], "hlt"),
    (Bits32, &[0xe4, 0x60], "inb $96, %al"),
    (Bits32, &[0xe7, 0x80], "outl %eax, $128"),
    (Bits32, &[0xec], "inb %dx, %al"),
    (Bits32, &[0x66, 0xef], "outw %ax, %dx"),
    (Bits32, &[0x0f, 0x01, 0xd9], "vmmcall"),
    (Bits32, &[0x0f, 0x01, 0xc1], "vmcall"),
    (Bits32, &[0xf3, 0x90], "pause"),
    (Bits32, &[0x0f, 0x01, 0x38], "invlpg (%eax)"),
    (Bits32, &[0x0f, 0x01, 0x3d, 0x78, 0x56, 0x34, 0x12], "invlpg 305419896"),
    (Bits32, &[0x0f, 0x01, 0x7c, 0xdc, 0x10], "invlpg 16(%esp,%ebx,8)"),
    (Bits32, &[0x0f, 0x20, 0xc0], "movl %cr0, %eax"),
    (Bits32, &[0x0f, 0x22, 0xd8], "movl %eax, %cr3"),
    (Bits32, &[0xc7, 0x80, 0x80, 0x00, 0x00, 0x00, 0x78, 0x56, 0x34, 0x12], "movl $305419896, 128(%eax)"),
    (Bits32, &[0xc7, 0x05, 0xb0, 0x00, 0xe0, 0xfe, 0x01, 0x00, 0x00, 0x00], "movl $1, 4276093104"),
    (Bits32, &[0xa1, 0x10, 0x00, 0xc0, 0xfe], "movl 4273995792, %eax"),
    (Bits32, &[0x66, 0xa3, 0x00, 0x00, 0xc0, 0xfe], "movw %ax, 4273995776"),
    (Bits32, &[0x83, 0x45, 0x00, 0x01], "addl $1, (%ebp)"),
    (Bits32, &[0xf0, 0x83, 0x66, 0x08, 0xfe], "lock  andl $-2, 8(%esi)"),
    (Bits32, &[0xe8, 0x00, 0x00, 0x00, 0x00], "calll 0"),
    (Bits32, &[0xeb, 0x00], "jmp 0"),
    (Bits32, &[0x75, 0x00], "jne 0"),
    (Bits32, &[0xea, 0x00, 0x00, 0x10, 0x00, 0x10, 0x00], "ljmpl $16, $1048576"),
    (Bits32, &[0x9a, 0x00, 0x10, 0x00, 0x00, 0x08, 0x00], "lcalll $8, $4096"),
    (Bits32, &[0x06], "pushl %es"),
    (Bits32, &[0x1f], "popl %ds"),
    (Bits32, &[0x27], "daa"),
    (Bits32, &[0xd4, 0x0a], "aam"),
    (Bits32, &[0x60], "pushal"),
    (Bits32, &[0xc4, 0x18], "lesl (%eax), %ebx"),
    (Bits32, &[0xc8, 0x04, 0x00, 0x01], "enter $4, $1"),
    (Bits32, &[0xf7, 0x05, 0x00, 0x03, 0xe0, 0xfe, 0x00, 0x00, 0x01, 0x00], "testl $65536, 4276093696"),
    (Bits32, &[0xf6, 0x03, 0x01], "testb $1, (%ebx)"),
    (Bits32, &[0xcd, 0x10], "int $16"),
    (Bits32, &[0xf3, 0xab], "rep  stosl %eax, %es:(%edi)"),
    (Bits32, &[0x66, 0xa5], "movsw (%esi), %es:(%edi)"),
    (Bits32, &[0x67, 0x8b, 0x00], "movl (%bx,%si), %eax"),
    (Bits32, &[0x66, 0xc7, 0x00, 0x01, 0x00], "movw $1, (%eax)"),
    (Bits32, &[0x62, 0x03], "bound %eax, (%ebx)"),
    (Bits32, &[0x88, 0x21], "movb %ah, (%ecx)"),
    (Bits32, &[0x0f, 0xb7, 0x05, 0x20, 0x00, 0xe0, 0xfe], "movzwl 4276092960, %eax"),
    (Bits16, &[0x0f, 0xa2], "cpuid"),
    (Bits16, &[0xf4], "hlt"),
    (Bits16, &[0xe4, 0x60], "inb $96, %al"),
    (Bits16, &[0xe6, 0x80], "outb %al, $128"),
    (Bits16, &[0xef], "outw %ax, %dx"),
    (Bits16, &[0x0f, 0x01, 0xd9], "vmmcall"),
    (Bits16, &[0x0f, 0x20, 0xc0], "movl %cr0, %eax"),
    (Bits16, &[0x0f, 0x22, 0xc0], "movl %eax, %cr0"),
    (Bits16, &[0xc7, 0x40, 0x10, 0x34, 0x12], "movw $4660, 16(%bx,%si)"),
    (Bits16, &[0x66, 0xc7, 0x46, 0x00, 0x78, 0x56, 0x34, 0x12], "movl $305419896, (%bp)"),
    (Bits16, &[0xa2, 0x34, 0x12], "movb %al, 4660"),
    (Bits16, &[0xa1, 0x34, 0x12], "movw 4660, %ax"),
    (Bits16, &[0x83, 0x45, 0x04, 0x05], "addw $5, 4(%di)"),
    (Bits16, &[0xea, 0x5b, 0xe0, 0x00, 0xf0], "ljmpw $61440, $57435"),
    (Bits16, &[0x66, 0xea, 0x00, 0x00, 0x10, 0x00, 0x08, 0x00], "ljmpl $8, $1048576"),
    (Bits16, &[0xe8, 0x00, 0x00], "callw 0"),
    (Bits16, &[0xeb, 0x00], "jmp 0"),
    (Bits16, &[0x75, 0x00], "jne 0"),
    (Bits16, &[0xcd, 0x13], "int $19"),
    (Bits16, &[0xcf], "iretw"),
    (Bits16, &[0x66, 0x0f, 0x01, 0x17], "lgdtl (%bx)"),
    (Bits16, &[0x66, 0xa1, 0x20, 0x00], "movl 4276092960, %eax"),
    (Bits16, &[0x67, 0x66, 0x8b, 0x18], "movl (%eax), %ebx"),
    (Bits16, &[0xf3, 0xa4], "rep  movsb (%si), %es:(%di)"),
    (Bits16, &[0xc8, 0x08, 0x00, 0x00], "enter $8, $0"),
    (Bits16, &[0xf7, 0x04, 0x00, 0x01], "testw $256, (%si)"),
];

#[test]
fn lengths_match_assembler() {
    for &(mode, bytes, asm) in LENGTH_VECTORS {
        assert_eq!(instruction_length(bytes, mode), Ok(bytes.len()), "{mode:?} {asm} {bytes:02x?}");
        // Trailing bytes must not change the answer.
        let mut padded = bytes.to_vec();
        padded.extend_from_slice(&[0x90; 8]);
        assert_eq!(instruction_length(&padded, mode), Ok(bytes.len()), "padded {asm}");
        // Every proper prefix of the encoding is truncated.
        for cut in 0..bytes.len() {
            assert_eq!(instruction_length(&bytes[..cut], mode), Err(DecodeError::Truncated), "{asm} cut at {cut}");
        }
    }
}

#[test]
fn decode_length_agrees_with_instruction_length() {
    let mut decoded = 0;
    for &(mode, bytes, asm) in LENGTH_VECTORS {
        if let Ok(insn) = decode(bytes, mode) {
            assert_eq!(insn.len as usize, bytes.len(), "{asm}");
            decoded += 1;
        }
    }
    assert!(decoded >= 40, "only {decoded} vectors decoded");
}

#[test]
fn exit_instruction_lengths() {
    // The exits the VMM must step over without nRIP save.
    let cases: &[(CpuMode, &[u8], usize)] = &[
        (Bits64, &[0x0F, 0xA2], 2),             // CPUID
        (Bits64, &[0x0F, 0x32], 2),             // RDMSR
        (Bits64, &[0x0F, 0x30], 2),             // WRMSR
        (Bits64, &[0x0F, 0x31], 2),             // RDTSC
        (Bits64, &[0xF4], 1),                   // HLT
        (Bits64, &[0xF3, 0x90], 2),             // PAUSE
        (Bits64, &[0xE4, 0x60], 2),             // IN AL, imm8
        (Bits64, &[0x66, 0xE5, 0x60], 3),       // IN AX, imm8
        (Bits64, &[0xE6, 0x80], 2),             // OUT imm8, AL
        (Bits64, &[0xE7, 0x80], 2),             // OUT imm8, EAX
        (Bits64, &[0xEC], 1),                   // IN AL, DX
        (Bits64, &[0x66, 0xED], 2),             // IN AX, DX
        (Bits64, &[0xEE], 1),                   // OUT DX, AL
        (Bits64, &[0x66, 0xEF], 2),             // OUT DX, AX
        (Bits64, &[0xF3, 0x6E], 2),             // REP OUTSB
        (Bits64, &[0x2E, 0x66, 0xEF], 3),       // segment + size prefixes
        (Bits64, &[0x0F, 0x01, 0xD9], 3),       // VMMCALL
        (Bits64, &[0x0F, 0x01, 0xC1], 3),       // VMCALL
        (Bits64, &[0x0F, 0x01, 0x38], 3),       // INVLPG [rax]
        (Bits64, &[0x0F, 0x01, 0x3D, 1, 2, 3, 4], 7), // INVLPG [rip+disp32]
        (Bits64, &[0x41, 0x0F, 0x01, 0x7C, 0x24, 0x08], 6), // INVLPG [r12+8]
        (Bits64, &[0x0F, 0x20, 0xC0], 3),       // MOV RAX, CR0
        (Bits64, &[0x0F, 0x22, 0xD8], 3),       // MOV CR3, RAX
        (Bits64, &[0x44, 0x0F, 0x22, 0xC0], 4), // MOV CR8, RAX
        // mod bits of MOV CR are ignored: 0F 20 05 is still 3 bytes.
        (Bits64, &[0x0F, 0x20, 0x05], 3),
        (Bits32, &[0x0F, 0x22, 0x05], 3),
        (Bits16, &[0x66, 0x0F, 0x20, 0xC0], 4),
        (Bits16, &[0xEC], 1),
        (Bits16, &[0x66, 0xEF], 2),
        (Bits16, &[0x0F, 0x01, 0x1F], 3),       // LIDT [bx]
        (Bits16, &[0x0F, 0x01, 0x16, 0x34, 0x12], 5), // LGDT [0x1234]
        (Bits16, &[0x67, 0x0F, 0x01, 0x15, 0, 0, 1, 0], 8), // LGDT [0x10000] (32-bit addressing)
        (Bits32, &[0x67, 0x0F, 0x01, 0x3E, 0x34, 0x12], 6), // INVLPG [0x1234] (16-bit addressing)
        (Bits64, &[0x48, 0xB8, 1, 2, 3, 4, 5, 6, 7, 8], 10), // MOV RAX, imm64
        (Bits64, &[0x66, 0xB8, 1, 2], 4),       // MOV AX, imm16
        (Bits64, &[0xF6, 0x00, 0x01], 3),       // TEST byte [rax], 1
        (Bits64, &[0xF6, 0x10], 2),             // NOT byte [rax]: no immediate
        (Bits64, &[0xF7, 0x00, 1, 0, 0, 0], 6), // TEST dword [rax], imm32
        (Bits64, &[0x66, 0xF7, 0x00, 1, 0], 5), // TEST word [rax], imm16
        (Bits64, &[0x0F, 0x38, 0x00, 0xC1], 4), // PSHUFB mm0, mm1
        (Bits64, &[0x66, 0x0F, 0x3A, 0x0F, 0xC1, 0x04], 6), // PALIGNR
        // REX followed by a legacy prefix is ignored but still counts.
        (Bits64, &[0x48, 0x66, 0xB8, 1, 2], 5),
    ];
    for &(mode, bytes, len) in cases {
        assert_eq!(instruction_length(bytes, mode), Ok(len), "{mode:?} {bytes:02x?}");
    }
}

#[test]
fn length_errors() {
    // Sixteen bytes of prefixes: too long (#GP on hardware).
    assert_eq!(instruction_length(&[0x66; 16], Bits64), Err(DecodeError::TooLong));
    // 14 prefixes + MOV [rax], imm32 = 20 bytes.
    let mut b = std::vec![0x2E; 14];
    b.extend_from_slice(&[0xC7, 0x00, 1, 2, 3, 4]);
    assert_eq!(instruction_length(&b, Bits32), Err(DecodeError::TooLong));
    // 14 prefixes + HLT = 15 bytes: legal.
    let mut b = std::vec![0x2E; 14];
    b.push(0xF4);
    assert_eq!(instruction_length(&b, Bits32), Ok(15));
    assert_eq!(instruction_length(&[], Bits64), Err(DecodeError::Truncated));
    // Opcodes invalid in 64-bit mode.
    for op in [0x06u8, 0x07, 0x27, 0x60, 0x9A, 0xD4, 0xEA] {
        assert_eq!(instruction_length(&[op, 0, 0, 0, 0, 0, 0], Bits64), Err(DecodeError::Invalid), "{op:02x}");
        assert!(instruction_length(&[op, 0, 0, 0, 0, 0, 0], Bits32).is_ok(), "{op:02x}");
    }
    // VEX is not handled in 64-bit mode.
    assert!(matches!(instruction_length(&[0xC5, 0xF8, 0x77], Bits64), Err(DecodeError::Unsupported { .. })));
    assert_eq!(instruction_length(&[0x0F, 0x04], Bits64), Err(DecodeError::Invalid));
}

// ---------------------------------------------------------------------------
// Decoding

fn mem(seg: Seg, base: Option<Base>, index: Option<(u8, u8)>, disp: i64, addr_size: u8) -> MemOperand {
    MemOperand { seg, base, index, disp, addr_size }
}

fn r(num: u8) -> Operand {
    Operand::Reg(Reg { num, high8: false })
}

fn rh(num: u8) -> Operand {
    Operand::Reg(Reg { num, high8: true })
}

/// Checks op, size, dst, src, memory operand and length.
#[allow(clippy::too_many_arguments)]
fn check(mode: CpuMode, bytes: &[u8], op: Op, size: u8, dst: Operand, src: Operand, m: MemOperand) {
    let i = decode(bytes, mode).unwrap_or_else(|e| panic!("{bytes:02x?}: {e:?}"));
    assert_eq!((i.op, i.size, i.dst, i.src), (op, size, dst, src), "{bytes:02x?}");
    assert_eq!(i.mem, Some(m), "{bytes:02x?}");
    assert_eq!(i.len as usize, bytes.len(), "{bytes:02x?}");
}

#[test]
fn decode_mov_forms() {
    use gpr::*;
    let ds = Seg::Ds;
    // 88 /r: mov [rax], cl
    check(Bits64, &[0x88, 0x08], Op::Mov, 1, Operand::Mem, r(RCX), mem(ds, Some(Base::Reg(RAX)), None, 0, 8));
    // 88 /r without REX: reg 4 is AH
    check(Bits64, &[0x88, 0x20], Op::Mov, 1, Operand::Mem, rh(RAX), mem(ds, Some(Base::Reg(RAX)), None, 0, 8));
    // with an empty REX: SPL
    check(Bits64, &[0x40, 0x88, 0x20], Op::Mov, 1, Operand::Mem, r(RSP), mem(ds, Some(Base::Reg(RAX)), None, 0, 8));
    // 89 /r: mov [rdi+0x10], esi
    check(Bits64, &[0x89, 0x77, 0x10], Op::Mov, 4, Operand::Mem, r(RSI), mem(ds, Some(Base::Reg(RDI)), None, 0x10, 8));
    // REX.W + REX.R + REX.B: mov [r9-8], r10
    check(Bits64, &[0x4D, 0x89, 0x51, 0xF8], Op::Mov, 8, Operand::Mem, r(10), mem(ds, Some(Base::Reg(9)), None, -8, 8));
    // 66 89: mov [rbx], ax
    check(Bits64, &[0x66, 0x89, 0x03], Op::Mov, 2, Operand::Mem, r(RAX), mem(ds, Some(Base::Reg(RBX)), None, 0, 8));
    // 8A: mov bh, [rsi]
    check(Bits64, &[0x8A, 0x3E], Op::Mov, 1, rh(RBX), Operand::Mem, mem(ds, Some(Base::Reg(RSI)), None, 0, 8));
    // 8B with SIB, REX.X: mov eax, [rbx + r11*4 + 0x12345678]
    check(
        Bits64,
        &[0x42, 0x8B, 0x84, 0x9B, 0x78, 0x56, 0x34, 0x12],
        Op::Mov,
        4,
        r(RAX),
        Operand::Mem,
        mem(ds, Some(Base::Reg(RBX)), Some((11, 4)), 0x12345678, 8),
    );
    // SIB with no index (index=100) and rsp base: SS default.
    check(Bits64, &[0x8B, 0x44, 0x24, 0x08], Op::Mov, 4, r(RAX), Operand::Mem, mem(Seg::Ss, Some(Base::Reg(RSP)), None, 8, 8));
    // r12 as base needs a SIB too but uses DS.
    check(Bits64, &[0x41, 0x8B, 0x04, 0x24], Op::Mov, 4, r(RAX), Operand::Mem, mem(ds, Some(Base::Reg(12)), None, 0, 8));
    // r13 as base with mod=00 still needs disp: [r13+0]
    check(Bits64, &[0x41, 0x8B, 0x45, 0x00], Op::Mov, 4, r(RAX), Operand::Mem, mem(ds, Some(Base::Reg(13)), None, 0, 8));
    // REX.X with index 100: r12 is a real index.
    check(Bits64, &[0x42, 0x8B, 0x04, 0x20], Op::Mov, 4, r(RAX), Operand::Mem, mem(ds, Some(Base::Reg(RAX)), Some((12, 1)), 0, 8));
    // SIB base=101 mod=00: disp32, no base.
    check(
        Bits64,
        &[0x8B, 0x04, 0xCD, 0x00, 0x10, 0x00, 0x00],
        Op::Mov,
        4,
        r(RAX),
        Operand::Mem,
        mem(ds, None, Some((RCX, 8)), 0x1000, 8),
    );
    // RIP-relative: mov eax, [rip+0x100]
    check(Bits64, &[0x8B, 0x05, 0x00, 0x01, 0x00, 0x00], Op::Mov, 4, r(RAX), Operand::Mem, mem(ds, Some(Base::Rip), None, 0x100, 8));
    // 32-bit mode: same bytes are an absolute disp32.
    check(Bits32, &[0x8B, 0x05, 0xB0, 0x00, 0xE0, 0xFE], Op::Mov, 4, r(RAX), Operand::Mem, mem(ds, None, None, 0xFEE000B0u32 as i32 as i64, 4));
    // 67 in 64-bit mode: 32-bit addressing.
    check(Bits64, &[0x67, 0x8B, 0x00], Op::Mov, 4, r(RAX), Operand::Mem, mem(ds, Some(Base::Reg(RAX)), None, 0, 4));
    // Segment override (the last one wins).
    check(Bits64, &[0x2E, 0x65, 0x8B, 0x00], Op::Mov, 4, r(RAX), Operand::Mem, mem(Seg::Gs, Some(Base::Reg(RAX)), None, 0, 8));
    // C6/C7 immediates, REX.W sign-extends imm32.
    check(Bits64, &[0xC6, 0x00, 0xAB], Op::Mov, 1, Operand::Mem, Operand::Imm(0xAB), mem(ds, Some(Base::Reg(RAX)), None, 0, 8));
    check(Bits64, &[0x48, 0xC7, 0x00, 0xFF, 0xFF, 0xFF, 0xFF], Op::Mov, 8, Operand::Mem, Operand::Imm(u64::MAX), mem(ds, Some(Base::Reg(RAX)), None, 0, 8));
    check(Bits64, &[0x66, 0xC7, 0x00, 0x34, 0x12], Op::Mov, 2, Operand::Mem, Operand::Imm(0x1234), mem(ds, Some(Base::Reg(RAX)), None, 0, 8));
    // moffs: 8 bytes in 64-bit mode, 4 with 67.
    check(Bits64, &[0xA1, 0xB0, 0x00, 0xE0, 0xFE, 0, 0, 0, 0], Op::Mov, 4, r(RAX), Operand::Mem, mem(ds, None, None, 0xFEE000B0, 8));
    check(Bits64, &[0x67, 0xA2, 0x00, 0x10, 0x00, 0x00], Op::Mov, 1, Operand::Mem, r(RAX), mem(ds, None, None, 0x1000, 4));
    check(Bits32, &[0x66, 0xA3, 0x00, 0x00, 0xC0, 0xFE], Op::Mov, 2, Operand::Mem, r(RAX), mem(ds, None, None, 0xFEC00000, 4));
    check(Bits16, &[0xA0, 0x34, 0x12], Op::Mov, 1, r(RAX), Operand::Mem, mem(ds, None, None, 0x1234, 2));
}

#[test]
fn decode_16bit_addressing() {
    use gpr::*;
    let ds = Seg::Ds;
    let ss = Seg::Ss;
    let cases: &[(&[u8], MemOperand)] = &[
        (&[0x8B, 0x00], mem(ds, Some(Base::Reg(RBX)), Some((RSI, 1)), 0, 2)),
        (&[0x8B, 0x01], mem(ds, Some(Base::Reg(RBX)), Some((RDI, 1)), 0, 2)),
        (&[0x8B, 0x02], mem(ss, Some(Base::Reg(RBP)), Some((RSI, 1)), 0, 2)),
        (&[0x8B, 0x03], mem(ss, Some(Base::Reg(RBP)), Some((RDI, 1)), 0, 2)),
        (&[0x8B, 0x04], mem(ds, Some(Base::Reg(RSI)), None, 0, 2)),
        (&[0x8B, 0x05], mem(ds, Some(Base::Reg(RDI)), None, 0, 2)),
        (&[0x8B, 0x06, 0x34, 0x12], mem(ds, None, None, 0x1234, 2)),
        (&[0x8B, 0x07], mem(ds, Some(Base::Reg(RBX)), None, 0, 2)),
        (&[0x8B, 0x46, 0xFE], mem(ss, Some(Base::Reg(RBP)), None, -2, 2)),
        (&[0x8B, 0x87, 0x00, 0x80], mem(ds, Some(Base::Reg(RBX)), None, -0x8000, 2)),
    ];
    for &(bytes, m) in cases {
        check(Bits16, bytes, Op::Mov, 2, r(RAX), Operand::Mem, m);
        // 67 in 32-bit mode selects the same 16-bit forms.
        let mut b = std::vec![0x67];
        b.extend_from_slice(bytes);
        check(Bits32, &b, Op::Mov, 4, r(RAX), Operand::Mem, m);
    }
    // 66 67 in 16-bit mode: 32-bit operand and 32-bit addressing with SIB.
    check(Bits16, &[0x66, 0x67, 0x8B, 0x04, 0x98], Op::Mov, 4, r(RAX), Operand::Mem, mem(ds, Some(Base::Reg(RAX)), Some((RBX, 4)), 0, 4));
}

#[test]
fn decode_alu_forms() {
    use gpr::*;
    let m0 = mem(Seg::Ds, Some(Base::Reg(RAX)), None, 0, 8);
    let ops = [Op::Add, Op::Or, Op::Adc, Op::Sbb, Op::And, Op::Sub, Op::Xor, Op::Cmp];
    for (k, &op) in ops.iter().enumerate() {
        let base = (k as u8) << 3;
        check(Bits64, &[base, 0x08], op, 1, Operand::Mem, r(RCX), m0);
        check(Bits64, &[base + 1, 0x08], op, 4, Operand::Mem, r(RCX), m0);
        check(Bits64, &[base + 2, 0x08], op, 1, r(RCX), Operand::Mem, m0);
        check(Bits64, &[0x48, base + 3, 0x08], op, 8, r(RCX), Operand::Mem, m0);
        // Group 1 with /k.
        let modrm = (k as u8) << 3;
        check(Bits64, &[0x80, modrm, 0x7F], op, 1, Operand::Mem, Operand::Imm(0x7F), m0);
        check(Bits64, &[0x81, modrm, 0x78, 0x56, 0x34, 0x12], op, 4, Operand::Mem, Operand::Imm(0x12345678), m0);
        // 83: imm8 sign-extended to the operand size.
        check(Bits64, &[0x83, modrm, 0xFF], op, 4, Operand::Mem, Operand::Imm(0xFFFF_FFFF), m0);
        check(Bits64, &[0x48, 0x83, modrm, 0x80], op, 8, Operand::Mem, Operand::Imm(0xFFFF_FFFF_FFFF_FF80), m0);
        check(Bits64, &[0x66, 0x83, modrm, 0x80], op, 2, Operand::Mem, Operand::Imm(0xFF80), m0);
    }
    check(Bits64, &[0x84, 0x08], Op::Test, 1, Operand::Mem, r(RCX), m0);
    check(Bits64, &[0x85, 0x08], Op::Test, 4, Operand::Mem, r(RCX), m0);
    check(Bits64, &[0xF6, 0x00, 0x80], Op::Test, 1, Operand::Mem, Operand::Imm(0x80), m0);
    check(Bits64, &[0xF7, 0x00, 0, 0, 1, 0], Op::Test, 4, Operand::Mem, Operand::Imm(0x10000), m0);
    check(Bits64, &[0x48, 0xF7, 0x00, 0xFE, 0xFF, 0xFF, 0xFF], Op::Test, 8, Operand::Mem, Operand::Imm(!1), m0);
    check(Bits64, &[0xF7, 0x10], Op::Not, 4, Operand::Mem, Operand::None, m0);
    check(Bits64, &[0xF6, 0x18], Op::Neg, 1, Operand::Mem, Operand::None, m0);
    check(Bits64, &[0x86, 0x08], Op::Xchg, 1, Operand::Mem, r(RCX), m0);
    check(Bits64, &[0x87, 0x08], Op::Xchg, 4, Operand::Mem, r(RCX), m0);
    check(Bits64, &[0x0F, 0xA3, 0x08], Op::Bt, 4, Operand::Mem, r(RCX), m0);
    check(Bits64, &[0x0F, 0xAB, 0x08], Op::Bts, 4, Operand::Mem, r(RCX), m0);
    check(Bits64, &[0x0F, 0xB3, 0x08], Op::Btr, 4, Operand::Mem, r(RCX), m0);
    check(Bits64, &[0x0F, 0xBB, 0x08], Op::Btc, 4, Operand::Mem, r(RCX), m0);
    check(Bits64, &[0x0F, 0xBA, 0x20, 0x05], Op::Bt, 4, Operand::Mem, Operand::Imm(5), m0);
    check(Bits64, &[0x48, 0x0F, 0xBA, 0x38, 0x3F], Op::Btc, 8, Operand::Mem, Operand::Imm(63), m0);
    check(Bits64, &[0x48, 0x0F, 0xC3, 0x08], Op::Mov, 8, Operand::Mem, r(RCX), m0);
    check(Bits64, &[0x0F, 0xB6, 0x08], Op::Movzx, 4, r(RCX), Operand::Mem, m0);
    check(Bits64, &[0x48, 0x0F, 0xBF, 0x08], Op::Movsx, 8, r(RCX), Operand::Mem, m0);
    let i = decode(&[0x66, 0x0F, 0xB6, 0x08], Bits64).unwrap();
    assert_eq!((i.op, i.size, i.src_size), (Op::Movzx, 2, 1));
    let i = decode(&[0x0F, 0xB7, 0x08], Bits64).unwrap();
    assert_eq!((i.size, i.src_size), (4, 2));
    // LOCK on a memory destination is fine and recorded.
    let i = decode(&[0xF0, 0x83, 0x08, 0x01], Bits64).unwrap();
    assert!(i.lock);
    assert_eq!(i.len, 4);
}

#[test]
fn decode_string_forms() {
    use gpr::*;
    let i = decode(&[0xF3, 0x48, 0xAB], Bits64).unwrap();
    assert_eq!((i.op, i.size, i.rep, i.len), (Op::Stos, 8, Rep::Rep, 3));
    assert_eq!(i.mem, Some(mem(Seg::Es, Some(Base::Reg(RDI)), None, 0, 8)));
    let i = decode(&[0xF3, 0xA4], Bits32).unwrap();
    assert_eq!((i.op, i.size, i.rep), (Op::Movs, 1, Rep::Rep));
    assert_eq!(i.mem, Some(mem(Seg::Ds, Some(Base::Reg(RSI)), None, 0, 4)));
    assert_eq!(i.string_dst(), Some(mem(Seg::Es, Some(Base::Reg(RDI)), None, 0, 4)));
    // A segment override changes the source, never ES:rDI.
    let i = decode(&[0x64, 0x66, 0xA5], Bits32).unwrap();
    assert_eq!((i.size, i.mem.unwrap().seg, i.string_dst().unwrap().seg), (2, Seg::Fs, Seg::Es));
    let i = decode(&[0x26, 0xAA], Bits16).unwrap();
    assert_eq!(i.mem.unwrap().seg, Seg::Es);
    let i = decode(&[0xAD], Bits16).unwrap();
    assert_eq!((i.op, i.size, i.rep, i.dst), (Op::Lods, 2, Rep::None, r(RAX)));
    let i = decode(&[0xF2, 0xAC], Bits64).unwrap();
    assert_eq!((i.op, i.rep), (Op::Lods, Rep::Repne));
    let i = decode(&[0xF3, 0xA6], Bits64).unwrap();
    assert_eq!((i.op, i.size, i.rep, i.len), (Op::Cmps, 1, Rep::Rep, 2));
    assert_eq!(i.string_dst().map(|m| m.seg), Some(Seg::Es));
    let i = decode(&[0x48, 0xAF], Bits64).unwrap();
    assert_eq!((i.op, i.size, i.dst), (Op::Scas, 8, r(RAX)));
    assert_eq!(i.mem, Some(mem(Seg::Es, Some(Base::Reg(RDI)), None, 0, 8)));
}

#[test]
fn execute_cmps_and_scas() {
    const RAX: usize = gpr::RAX as usize;
    const RCX: usize = gpr::RCX as usize;
    const RSI: usize = gpr::RSI as usize;
    const RDI: usize = gpr::RDI as usize;
    let mut m = Mem::default();
    // "abcd" at 0x1000, "abXd" at 0x2000.
    m.set(0x1000, u32::from_le_bytes(*b"abcd") as u64, 4);
    m.set(0x2000, u32::from_le_bytes(*b"abXd") as u64, 4);
    let mut regs = Regs { gpr: [0; 16], rip: 0x100, rflags: 2 };
    regs.gpr[RSI] = 0x1000;
    regs.gpr[RDI] = 0x2000;
    regs.gpr[RCX] = 4;
    // repe cmpsb: stops after the third byte (c != X), RCX 1, ZF clear.
    run(Bits64, &[0xF3, 0xA6], &mut regs, &mut m);
    assert_eq!((regs.gpr[RSI], regs.gpr[RDI], regs.gpr[RCX], regs.rip), (0x1003, 0x2003, 1, 0x102));
    assert_eq!(regs.rflags & exec::rflags::ZF, 0);
    assert_eq!(regs.rflags & exec::rflags::CF, 0, "0x63 - 0x58 borrows nothing");
    // repne scasb for 'd' from 0x2000: found at the fourth byte.
    regs.gpr[RDI] = 0x2000;
    regs.gpr[RCX] = 10;
    regs.gpr[RAX] = b'd' as u64;
    run(Bits64, &[0xF2, 0xAE], &mut regs, &mut m);
    assert_eq!((regs.gpr[RDI], regs.gpr[RCX]), (0x2004, 6));
    assert_ne!(regs.rflags & exec::rflags::ZF, 0);
    // Unbacked memory reads all ones: cmpsd against 0xffffffff.
    let mut ones = OnesMem;
    let mut regs = Regs { gpr: [0; 16], rip: 0x100, rflags: 2 };
    regs.gpr[RSI] = 0x1000;
    regs.gpr[RDI] = 0x2000;
    let i = decode(&[0xA7], Bits64).unwrap();
    execute(&i, &mut regs, &mut ones).unwrap();
    assert_ne!(regs.rflags & exec::rflags::ZF, 0, "all ones equals all ones");
    assert_eq!((regs.gpr[RSI], regs.gpr[RDI]), (0x1004, 0x2004));
}

/// Open bus: reads all ones, writes go nowhere.
struct OnesMem;

impl MemoryAccess for OnesMem {
    fn read(&mut self, _: Seg, _: u64, size: u8) -> Result<u64, AccessError> {
        Ok(mask(u64::MAX, size))
    }
    fn write(&mut self, _: Seg, _: u64, _: u8, _: u64) -> Result<(), AccessError> {
        Ok(())
    }
}

#[test]
fn decode_errors() {
    let e = |b: &[u8], m| decode(b, m).unwrap_err();
    // Register forms cannot fault on MMIO.
    assert_eq!(e(&[0x89, 0xC0], Bits64), DecodeError::NoMemoryOperand);
    assert_eq!(e(&[0x05, 1, 0, 0, 0], Bits64), DecodeError::NoMemoryOperand);
    // LOCK on MOV, on CMP, on a load: #UD.
    assert_eq!(e(&[0xF0, 0x89, 0x00], Bits64), DecodeError::Invalid);
    assert_eq!(e(&[0xF0, 0x39, 0x00], Bits64), DecodeError::Invalid);
    assert_eq!(e(&[0xF0, 0x03, 0x00], Bits64), DecodeError::Invalid);
    assert_eq!(e(&[0xF0, 0x0F, 0xA3, 0x00], Bits64), DecodeError::Invalid);
    // C7 /1 is undefined.
    assert_eq!(e(&[0xC7, 0x08, 0, 0, 0, 0], Bits64), DecodeError::Invalid);
    assert_eq!(e(&[0x0F, 0xBA, 0x00, 1], Bits64), DecodeError::Invalid);
    assert_eq!(e(&[0x82, 0x00, 1], Bits64), DecodeError::Invalid);
    assert!(decode(&[0x82, 0x00, 1], Bits32).is_ok());
    // F3 0F B8 is POPCNT, not ours.
    assert!(matches!(e(&[0xF3, 0x0F, 0xB8, 0x00], Bits64), DecodeError::Unsupported { opcode: 0x0FB8 }));
    assert!(matches!(e(&[0xFF, 0x00], Bits64), DecodeError::Unsupported { opcode: 0xFF }));
    assert!(matches!(e(&[0x0F, 0xA2], Bits64), DecodeError::Unsupported { opcode: 0x0FA2 }));
    assert_eq!(e(&[0x8B], Bits64), DecodeError::Truncated);
    assert_eq!(e(&[0x8B, 0x80, 0, 0], Bits64), DecodeError::Truncated);
    assert_eq!(e(&[0x48], Bits64), DecodeError::Truncated);
    assert_eq!(e(&[0x66; 15], Bits64), DecodeError::TooLong);
    // Exhaustive: no byte pattern may panic, whatever the mode.
    for mode in [Bits16, Bits32, Bits64] {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                for tail in [[0u8; 6], [0xFF; 6], [0x24, 0x80, 1, 2, 3, 4]] {
                    let mut bytes = std::vec![a, b];
                    bytes.extend_from_slice(&tail);
                    if let Ok(i) = decode(&bytes, mode) {
                        assert!(i.len as usize <= bytes.len());
                        assert!(i.mem.is_some());
                    }
                    if let Ok(n) = instruction_length(&bytes, mode) {
                        assert!(n <= bytes.len());
                    }
                }
            }
        }
    }
}

#[test]
fn decode_then_length_agree_exhaustively() {
    // For every two-byte start with a fixed tail, a decodable instruction's
    // length equals the generic length decoder's.
    for mode in [Bits16, Bits32, Bits64] {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let bytes = [a, b, 0x44, 0x8B, 0x05, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
                if let Ok(i) = decode(&bytes, mode) {
                    assert_eq!(Ok(i.len as usize), instruction_length(&bytes, mode), "{mode:?} {:02x?}", &bytes[..i.len as usize]);
                }
            }
        }
    }
}

#[test]
fn cpu_mode_from_state() {
    assert_eq!(CpuMode::from_state(false, false, false, false, false), Bits16);
    assert_eq!(CpuMode::from_state(true, false, true, false, true), Bits16); // virtual-8086
    assert_eq!(CpuMode::from_state(true, false, false, false, true), Bits32);
    assert_eq!(CpuMode::from_state(true, false, false, false, false), Bits16);
    assert_eq!(CpuMode::from_state(true, true, false, true, false), Bits64);
    assert_eq!(CpuMode::from_state(true, true, false, false, true), Bits32); // compatibility mode
}

// ---------------------------------------------------------------------------
// Execution

/// Byte-addressed test memory recording every access.
#[derive(Default)]
struct Mem {
    bytes: BTreeMap<u64, u8>,
    log: Vec<(char, Seg, u64, u8, u64)>,
    fault_at: Option<u64>,
}

impl Mem {
    fn set(&mut self, a: u64, v: u64, size: u8) {
        for k in 0..size as u64 {
            self.bytes.insert(a + k, (v >> (8 * k)) as u8);
        }
    }
    fn get(&self, a: u64, size: u8) -> u64 {
        (0..size as u64).map(|k| (*self.bytes.get(&(a + k)).unwrap_or(&0) as u64) << (8 * k)).sum()
    }
}

impl MemoryAccess for Mem {
    fn read(&mut self, seg: Seg, ea: u64, size: u8) -> Result<u64, AccessError> {
        if self.fault_at == Some(ea) {
            return Err(AccessError::Exception { vector: 14, error_code: Some(0), cr2: Some(ea) });
        }
        let v = self.get(ea, size);
        self.log.push(('r', seg, ea, size, v));
        Ok(v)
    }
    fn write(&mut self, seg: Seg, ea: u64, size: u8, value: u64) -> Result<(), AccessError> {
        if self.fault_at == Some(ea) {
            return Err(AccessError::Exception { vector: 14, error_code: Some(2), cr2: Some(ea) });
        }
        self.log.push(('w', seg, ea, size, value));
        self.set(ea, value, size);
        Ok(())
    }
}

fn run(mode: CpuMode, bytes: &[u8], regs: &mut Regs, m: &mut Mem) {
    let i = decode(bytes, mode).unwrap();
    execute(&i, regs, m).unwrap();
}

#[test]
fn execute_register_write_rules() {
    let mut m = Mem::default();
    m.set(0x1000, 0x8899_AABB_CCDD_EEFF, 8);
    let base = Regs { gpr: [0x1111_1111_1111_1111; 16], rip: 0x100, rflags: 2 };
    let mut regs = base;
    regs.gpr[0] = 0x1000; // rax = address
    // mov ecx, [rax]: zero-extends in 64-bit mode.
    run(Bits64, &[0x8B, 0x08], &mut regs, &mut m);
    assert_eq!(regs.gpr[1], 0xCCDD_EEFF);
    assert_eq!(regs.rip, 0x102);
    // mov cx, [rax]: merges.
    regs.gpr[1] = 0x1111_1111_1111_1111;
    run(Bits64, &[0x66, 0x8B, 0x08], &mut regs, &mut m);
    assert_eq!(regs.gpr[1], 0x1111_1111_1111_EEFF);
    // mov ch, [rax]: bits 15:8.
    regs.gpr[1] = 0x1111_1111_1111_1111;
    run(Bits64, &[0x8A, 0x28], &mut regs, &mut m);
    assert_eq!(regs.gpr[1], 0x1111_1111_1111_FF11);
    // mov bpl, [rax] (REX): low byte of RBP.
    run(Bits64, &[0x40, 0x8A, 0x28], &mut regs, &mut m);
    assert_eq!(regs.gpr[5], 0x1111_1111_1111_11FF);
    // mov r9, [rax]
    run(Bits64, &[0x4C, 0x8B, 0x08], &mut regs, &mut m);
    assert_eq!(regs.gpr[9], 0x8899_AABB_CCDD_EEFF);
    // movzx ecx, byte [rax]; movsx rcx, word [rax]; movsx ecx, byte [rax]
    run(Bits64, &[0x0F, 0xB6, 0x08], &mut regs, &mut m);
    assert_eq!(regs.gpr[1], 0xFF);
    run(Bits64, &[0x48, 0x0F, 0xBF, 0x08], &mut regs, &mut m);
    assert_eq!(regs.gpr[1], 0xFFFF_FFFF_FFFF_EEFF);
    run(Bits64, &[0x0F, 0xBE, 0x08], &mut regs, &mut m);
    assert_eq!(regs.gpr[1], 0xFFFF_FFFF);
    regs.gpr[1] = 0x1111_1111_1111_1111;
    run(Bits64, &[0x66, 0x0F, 0xBE, 0x08], &mut regs, &mut m);
    assert_eq!(regs.gpr[1], 0x1111_1111_1111_FFFF);
    m.set(0x1000, 0x7F, 1);
    run(Bits64, &[0x0F, 0xBE, 0x08], &mut regs, &mut m);
    assert_eq!(regs.gpr[1], 0x7F);
}

#[test]
fn execute_stores_and_effective_addresses() {
    let mut m = Mem::default();
    let mut regs = Regs { rip: 0x7000, rflags: 2, ..Default::default() };
    regs.gpr[gpr::RBX as usize] = 0xFEE0_0000;
    regs.gpr[gpr::RCX as usize] = 0x0B;
    regs.gpr[gpr::RDX as usize] = 0xDEAD_BEEF_0000_0001;
    // mov dword [rbx + rcx*0x10], edx  (89 14 8B... use scale 8: rbx+rcx*8)
    let i = decode(&[0x89, 0x14, 0xCB], Bits64).unwrap();
    assert_eq!(i.effective_address(&regs), Some(0xFEE0_0058));
    execute(&i, &mut regs, &mut m).unwrap();
    assert_eq!(m.log.last(), Some(&('w', Seg::Ds, 0xFEE0_0058, 4, 1)));
    // RIP-relative: relative to the *next* instruction.
    let i = decode(&[0xC7, 0x05, 0x10, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00], Bits64).unwrap();
    assert_eq!(i.effective_address(&regs), Some(0x7003 + 10 + 0x10));
    execute(&i, &mut regs, &mut m).unwrap();
    assert_eq!(m.log.last(), Some(&('w', Seg::Ds, 0x7003 + 10 + 0x10, 4, 1)));
    assert_eq!(regs.rip, 0x7003 + 10);
    // Negative displacement wraps within a 32-bit address size.
    regs.gpr[gpr::RAX as usize] = 0x10;
    let i = decode(&[0x67, 0x88, 0x50, 0xE0], Bits64).unwrap();
    assert_eq!(i.effective_address(&regs), Some(0xFFFF_FFF0));
    // 16-bit addressing wraps at 64 KiB.
    regs.gpr[gpr::RBX as usize] = 0xFFFF;
    regs.gpr[gpr::RSI as usize] = 0x0002;
    let i = decode(&[0x89, 0x00], Bits16).unwrap();
    assert_eq!(i.effective_address(&regs), Some(1));
    // mov byte [moffs64], al
    regs.gpr[gpr::RAX as usize] = 0x1234_5678_9ABC_DEF0;
    run(Bits64, &[0xA2, 0, 0, 0xC0, 0xFE, 0, 0, 0, 0], &mut regs, &mut m);
    assert_eq!(m.log.last(), Some(&('w', Seg::Ds, 0xFEC0_0000, 1, 0xF0)));
    // mov word [rax], 0x1234 stores only 2 bytes.
    regs.gpr[gpr::RAX as usize] = 0x2000;
    run(Bits64, &[0x66, 0xC7, 0x00, 0x34, 0x12], &mut regs, &mut m);
    assert_eq!(m.log.last(), Some(&('w', Seg::Ds, 0x2000, 2, 0x1234)));
    // mov qword [rax], -1 (imm32 sign-extended)
    run(Bits64, &[0x48, 0xC7, 0x00, 0xFF, 0xFF, 0xFF, 0xFF], &mut regs, &mut m);
    assert_eq!(m.log.last(), Some(&('w', Seg::Ds, 0x2000, 8, u64::MAX)));
    // store of AH
    regs.gpr[gpr::RAX as usize] = 0x2000 | 0x3300;
    run(Bits64, &[0x88, 0x60, 0x01], &mut regs, &mut m);
    assert_eq!(m.log.last(), Some(&('w', Seg::Ds, 0x3301, 1, 0x33)));
    // 16-bit IP wraps.
    let mut r16 = Regs { rip: 0xFFFE, ..Default::default() };
    run(Bits16, &[0x89, 0x07], &mut r16, &mut m);
    assert_eq!(r16.rip, 0);
}

/// Reference ALU flags computed bit by bit, independent of `alu()`.
fn reference(op: Op, a: u64, b: u64, cin: bool, size: u8) -> (u64, u64) {
    let bits = size as u32 * 8;
    let m = if size == 8 { u64::MAX } else { (1u64 << bits) - 1 };
    let (res, cf, of, af) = match op {
        Op::Add | Op::Adc => {
            let c = (op == Op::Adc && cin) as u64;
            let res = a.wrapping_add(b).wrapping_add(c) & m;
            let cf = (a as u128 + b as u128 + c as u128) > m as u128;
            let sa = (a >> (bits - 1)) & 1;
            let sb = (b >> (bits - 1)) & 1;
            let sr = (res >> (bits - 1)) & 1;
            (res, cf, sa == sb && sr != sa, ((a & 0xF) + (b & 0xF) + c) > 0xF)
        }
        Op::Sub | Op::Sbb | Op::Cmp => {
            let c = (op == Op::Sbb && cin) as u64;
            let res = a.wrapping_sub(b).wrapping_sub(c) & m;
            let cf = (a as u128) < (b as u128 + c as u128);
            let sa = (a >> (bits - 1)) & 1;
            let sb = (b >> (bits - 1)) & 1;
            let sr = (res >> (bits - 1)) & 1;
            (res, cf, sa != sb && sr != sa, (a & 0xF) < (b & 0xF) + c)
        }
        Op::And | Op::Test => (a & b, false, false, false),
        Op::Or => (a | b, false, false, false),
        Op::Xor => (a ^ b, false, false, false),
        _ => unreachable!(),
    };
    let mut f = 0;
    f |= if cf { rflags::CF } else { 0 };
    f |= if of { rflags::OF } else { 0 };
    f |= if af { rflags::AF } else { 0 };
    f |= if res == 0 { rflags::ZF } else { 0 };
    f |= if (res >> (bits - 1)) & 1 == 1 { rflags::SF } else { 0 };
    f |= if (res & 0xFF).count_ones() % 2 == 0 { rflags::PF } else { 0 };
    (res, f)
}

#[test]
fn execute_alu_flags_against_reference() {
    let ops = [Op::Add, Op::Or, Op::Adc, Op::Sbb, Op::And, Op::Sub, Op::Xor, Op::Cmp];
    let values: &[u64] = &[0, 1, 2, 0x0F, 0x10, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF, 0x7FFF_FFFF_FFFF_FFFF, 0x8000_0000_0000_0000, u64::MAX, 0x1234_5678_9ABC_DEF0];
    let mut count = 0;
    for (k, &op) in ops.iter().enumerate() {
        for &(size, prefix) in &[(1u8, None), (2, Some(0x66u8)), (4, None), (8, Some(0x48))] {
            for &a in values {
                for &b in values {
                    for cin in [false, true] {
                        let a = mask(a, size);
                        let b = mask(b, size);
                        // op [rax], ecx (memory destination form).
                        let mut bytes = Vec::new();
                        bytes.extend(prefix);
                        bytes.push(((k as u8) << 3) | (size != 1) as u8);
                        bytes.push(0x08);
                        let mut m = Mem::default();
                        m.set(0x100, a, size);
                        let mut regs = Regs { rflags: 0x202 | (cin as u64), ..Default::default() };
                        regs.gpr[0] = 0x100;
                        regs.gpr[1] = b;
                        run(Bits64, &bytes, &mut regs, &mut m);
                        let (res, f) = reference(op, a, b, cin, size);
                        assert_eq!(regs.rflags, 0x202 | f, "{op:?} size {size} {a:#x},{b:#x} cin {cin}");
                        let stored = m.get(0x100, size);
                        assert_eq!(stored, if op == Op::Cmp { a } else { res }, "{op:?} {a:#x},{b:#x}");
                        count += 1;
                    }
                }
            }
        }
    }
    assert!(count > 10_000);
}

#[test]
fn execute_alu_register_destination_and_immediates() {
    let mut m = Mem::default();
    m.set(0x100, 0xF0, 4);
    let mut regs = Regs { rflags: 2, ..Default::default() };
    regs.gpr[0] = 0x100;
    regs.gpr[1] = 0xFFFF_FFFF_0000_000F;
    // or ecx, [rax]: 32-bit result zero-extends.
    run(Bits64, &[0x0B, 0x08], &mut regs, &mut m);
    assert_eq!(regs.gpr[1], 0xFF);
    // and dword [rax], 0x30
    run(Bits64, &[0x83, 0x20, 0x30], &mut regs, &mut m);
    assert_eq!(m.get(0x100, 4), 0x30);
    assert_eq!(regs.rflags & rflags::STATUS, rflags::PF);
    // test dword [rax], 0x40 -> ZF, memory unchanged, no write.
    let writes = m.log.iter().filter(|e| e.0 == 'w').count();
    run(Bits64, &[0xF7, 0x00, 0x40, 0, 0, 0], &mut regs, &mut m);
    assert_eq!(regs.rflags & rflags::ZF, rflags::ZF);
    assert_eq!(m.log.iter().filter(|e| e.0 == 'w').count(), writes);
    // cmp byte [rax], 0x31 -> CF and SF
    run(Bits64, &[0x80, 0x38, 0x31], &mut regs, &mut m);
    assert_eq!(regs.rflags & (rflags::CF | rflags::SF | rflags::ZF), rflags::CF | rflags::SF);
    // sub qword [rax], -1 (83 /5 ib sign-extended): 0x30 + 1
    run(Bits64, &[0x48, 0x83, 0x28, 0xFF], &mut regs, &mut m);
    assert_eq!(m.get(0x100, 8), 0x31);
    // not dword [rax]; neg byte [rax]
    run(Bits64, &[0xF7, 0x10], &mut regs, &mut m);
    assert_eq!(m.get(0x100, 4), 0xFFFF_FFCE);
    run(Bits64, &[0xF6, 0x18], &mut regs, &mut m);
    assert_eq!(m.get(0x100, 1), 0x32);
    assert_eq!(regs.rflags & rflags::CF, rflags::CF);
    m.set(0x100, 0, 1);
    run(Bits64, &[0xF6, 0x18], &mut regs, &mut m);
    assert_eq!(regs.rflags & (rflags::CF | rflags::ZF), rflags::ZF);
    m.set(0x100, 0x80, 1);
    run(Bits64, &[0xF6, 0x18], &mut regs, &mut m);
    assert_eq!(regs.rflags & (rflags::CF | rflags::OF), rflags::CF | rflags::OF);
}

#[test]
fn execute_xchg_and_bit_tests() {
    let mut m = Mem::default();
    m.set(0x100, 0x1122_3344, 4);
    let mut regs = Regs { rflags: 2, ..Default::default() };
    regs.gpr[0] = 0x100;
    regs.gpr[1] = 0xAAAA_AAAA_5566_7788;
    run(Bits64, &[0x87, 0x08], &mut regs, &mut m);
    assert_eq!(regs.gpr[1], 0x1122_3344);
    assert_eq!(m.get(0x100, 4), 0x5566_7788);
    // xchg [rax], ch
    regs.gpr[1] = 0x9900;
    run(Bits64, &[0x86, 0x28], &mut regs, &mut m);
    assert_eq!(regs.gpr[1], 0x8800);
    assert_eq!(m.get(0x100, 1), 0x99);
    // bt dword [rax], 3 -> bit 3 of 0x99 is 1.
    run(Bits64, &[0x0F, 0xBA, 0x20, 0x03], &mut regs, &mut m);
    assert_eq!(regs.rflags & rflags::CF, rflags::CF);
    // imm is taken modulo 32: 35 -> bit 3.
    run(Bits64, &[0x0F, 0xBA, 0x20, 35], &mut regs, &mut m);
    assert_eq!(regs.rflags & rflags::CF, rflags::CF);
    // bts dword [rax], ecx with ecx=33: next dword, bit 1.
    m.set(0x104, 0, 4);
    regs.gpr[1] = 33;
    run(Bits64, &[0x0F, 0xAB, 0x08], &mut regs, &mut m);
    assert_eq!(m.get(0x104, 4), 2);
    assert_eq!(regs.rflags & rflags::CF, 0);
    assert_eq!(m.log.last().unwrap().2, 0x104);
    // Negative register offset: ecx=-1 -> dword at 0xFC, bit 31.
    regs.gpr[1] = 0xFFFF_FFFF;
    m.set(0xFC, 0x8000_0000, 4);
    run(Bits64, &[0x0F, 0xB3, 0x08], &mut regs, &mut m);
    assert_eq!(m.get(0xFC, 4), 0);
    assert_eq!(regs.rflags & rflags::CF, rflags::CF);
    // btc qword [rax], 63
    m.set(0x100, 0, 8);
    run(Bits64, &[0x48, 0x0F, 0xBA, 0x38, 63], &mut regs, &mut m);
    assert_eq!(m.get(0x100, 8), 1 << 63);
}

#[test]
fn execute_string_instructions() {
    let mut m = Mem::default();
    let mut regs = Regs { rip: 0x10, rflags: 2, ..Default::default() };
    // rep stosd with ecx=4 in 32-bit mode
    regs.gpr[gpr::RAX as usize] = 0xCAFE_BABE;
    regs.gpr[gpr::RDI as usize] = 0xFEB0_0000;
    regs.gpr[gpr::RCX as usize] = 4;
    run(Bits32, &[0xF3, 0xAB], &mut regs, &mut m);
    assert_eq!(regs.gpr[gpr::RCX as usize], 0);
    assert_eq!(regs.gpr[gpr::RDI as usize], 0xFEB0_0010);
    assert_eq!(regs.rip, 0x12);
    for k in 0..4 {
        assert_eq!(m.get(0xFEB0_0000 + 4 * k, 4), 0xCAFE_BABE);
    }
    assert!(m.log.iter().all(|e| e.1 == Seg::Es));
    // rep with rcx=0 does nothing but advance.
    let before = m.log.len();
    run(Bits32, &[0xF3, 0xAB], &mut regs, &mut m);
    assert_eq!(m.log.len(), before);
    assert_eq!(regs.rip, 0x14);
    // movsb backwards (DF=1), single.
    m.set(0x500, 0x77, 1);
    regs.gpr[gpr::RSI as usize] = 0x500;
    regs.gpr[gpr::RDI as usize] = 0x600;
    regs.rflags |= rflags::DF;
    run(Bits64, &[0xA4], &mut regs, &mut m);
    assert_eq!(m.get(0x600, 1), 0x77);
    assert_eq!((regs.gpr[gpr::RSI as usize], regs.gpr[gpr::RDI as usize]), (0x4FF, 0x5FF));
    regs.rflags &= !rflags::DF;
    // rep movsw with 16-bit addressing wraps SI/DI and touches only CX.
    regs.gpr[gpr::RCX as usize] = 0xABCD_0002;
    regs.gpr[gpr::RSI as usize] = 0x1234_FFFE;
    regs.gpr[gpr::RDI as usize] = 0x100;
    m.set(0xFFFE, 0x1111, 2);
    m.set(0x0000, 0x2222, 2);
    run(Bits16, &[0xF3, 0xA5], &mut regs, &mut m);
    assert_eq!(regs.gpr[gpr::RCX as usize], 0xABCD_0000);
    assert_eq!(regs.gpr[gpr::RSI as usize], 0x1234_0002);
    assert_eq!((m.get(0x100, 2), m.get(0x102, 2)), (0x1111, 0x2222));
    // lodsd zero-extends RAX in 64-bit mode; 32-bit addressing zero-extends RSI.
    regs.gpr[gpr::RAX as usize] = u64::MAX;
    regs.gpr[gpr::RSI as usize] = 0xFFFF_FFFF_0000_0100;
    run(Bits64, &[0x67, 0xAD], &mut regs, &mut m);
    assert_eq!(regs.gpr[gpr::RAX as usize], 0x2222_1111);
    assert_eq!(regs.gpr[gpr::RSI as usize], 0x104);
    // A long REP is done in batches: RIP stays until RCX reaches 0.
    regs.gpr[gpr::RCX as usize] = REP_BATCH + 5;
    regs.gpr[gpr::RDI as usize] = 0x10_0000;
    let rip = regs.rip;
    let i = decode(&[0xF3, 0xAA], Bits64).unwrap();
    execute(&i, &mut regs, &mut m).unwrap();
    assert_eq!((regs.gpr[gpr::RCX as usize], regs.rip), (5, rip));
    execute(&i, &mut regs, &mut m).unwrap();
    assert_eq!((regs.gpr[gpr::RCX as usize], regs.rip), (0, rip + 2));
}

#[test]
fn execute_faults_leave_state_consistent() {
    let mut m = Mem { fault_at: Some(0x208), ..Default::default() };
    let mut regs = Regs { rip: 0x10, rflags: 2, ..Default::default() };
    regs.gpr[gpr::RDI as usize] = 0x200;
    regs.gpr[gpr::RCX as usize] = 8;
    let i = decode(&[0xF3, 0x48, 0xAB], Bits64).unwrap();
    let e = execute(&i, &mut regs, &mut m).unwrap_err();
    assert_eq!(e, ExecError::Access(AccessError::Exception { vector: 14, error_code: Some(2), cr2: Some(0x208) }));
    // One iteration done: RCX, RDI reflect it, RIP unchanged.
    assert_eq!((regs.gpr[gpr::RCX as usize], regs.gpr[gpr::RDI as usize], regs.rip), (7, 0x208, 0x10));
    // A faulting load leaves the destination register alone.
    regs.gpr[gpr::RAX as usize] = 0x208;
    regs.gpr[gpr::RDX as usize] = 5;
    let i = decode(&[0x8B, 0x10], Bits64).unwrap();
    assert!(execute(&i, &mut regs, &mut m).is_err());
    assert_eq!((regs.gpr[gpr::RDX as usize], regs.rip), (5, 0x10));
}
