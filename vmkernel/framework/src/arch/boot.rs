//! Entry from the boot loader.
//!
//! Two ways in, one path after: GRUB enters `mb2_entry` through the
//! Multiboot2 header (EAX = magic, EBX = info), QEMU's `-kernel` enters
//! `pvh_entry` through the Xen PVH note (EBX = `hvm_start_info`). Both arrive
//! in 32-bit protected mode with paging off. The common stub zeroes `.bss`,
//! builds boot page tables (identity + direct map of the first 4 GiB, and
//! the kernel at -2 GiB), enters long mode, enables SSE (the precompiled
//! `core` uses it) and calls `kernel_entry(magic, info_phys)` on the BSP
//! stack. Rust code replaces these tables with its own early on.

use core::arch::global_asm;

/// Size of the BSP's boot stack (the BSP keeps using it as its idle stack).
pub const BSP_STACK_SIZE: usize = 64 * 1024;

#[repr(C, align(4096))]
pub struct Stack(pub [u8; BSP_STACK_SIZE]);

#[unsafe(no_mangle)]
#[used]
static mut BSP_STACK: Stack = Stack([0; BSP_STACK_SIZE]);

global_asm!(
    r#"
    .section .multiboot2_header, "a"
    .balign 8
mb2_header_start:
    .long 0xe85250d6
    .long 0
    .long mb2_header_end - mb2_header_start
    .long 0x100000000 - (0xe85250d6 + (mb2_header_end - mb2_header_start))
    /* end tag */
    .balign 8
    .short 0
    .short 0
    .long 8
mb2_header_end:

    /* PVH entry point, laid out as Linux does (name "Xen", 8-byte desc). */
    .section .note.Xen, "a"
    .balign 4
    .long 4
    .long 8
    .long 18
    .asciz "Xen"
    .balign 4
    .quad pvh_entry
    .balign 4

    .section .boot.data, "aw"
    .balign 16
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff   /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff   /* 0x10: data */
boot_gdt_end:
    .balign 4
boot_gdt_ptr:
    .short boot_gdt_end - boot_gdt - 1
    .long boot_gdt
boot_magic:
    .long 0
boot_info:
    .long 0

    .section .boot.bss, "aw", @nobits
    .balign 4096
boot_pml4:      .skip 4096
boot_pdpt_low:  .skip 4096
boot_pdpt_high: .skip 4096
boot_pd:        .skip 4096 * 4
boot_stack:     .skip 4096
boot_stack_top:

    .section .boot.text, "ax"
    .code32
    .global mb2_entry
mb2_entry:
    cli
    cld
    mov %eax, boot_magic
    mov %ebx, boot_info
    jmp boot_common

    .global pvh_entry
pvh_entry:
    cli
    cld
    movl $0x336ec578, boot_magic
    mov %ebx, boot_info

boot_common:
    mov $boot_stack_top, %esp

    /* Zero the kernel's .bss (loaders zero it too, but do not rely on it). */
    mov $__bss_phys_start, %edi
    mov $__bss_phys_end, %ecx
    sub %edi, %ecx
    xor %eax, %eax
    rep stosb

    /* Zero the boot page tables (.boot.bss is NOLOAD). */
    mov $boot_pml4, %edi
    mov $(4096 * 7), %ecx
    xor %eax, %eax
    rep stosb

    /* PML4[0] and PML4[256] -> low PDPT; PML4[511] -> high PDPT. */
    mov $boot_pdpt_low, %eax
    or $3, %eax
    mov %eax, boot_pml4
    mov %eax, boot_pml4 + 256 * 8
    mov $boot_pdpt_high, %eax
    or $3, %eax
    mov %eax, boot_pml4 + 511 * 8

    /* low PDPT[0..4] -> the four page directories; high PDPT[510] -> PD 0. */
    mov $boot_pd, %eax
    or $3, %eax
    mov %eax, boot_pdpt_low
    mov %eax, boot_pdpt_high + 510 * 8
    add $4096, %eax
    mov %eax, boot_pdpt_low + 8
    add $4096, %eax
    mov %eax, boot_pdpt_low + 16
    add $4096, %eax
    mov %eax, boot_pdpt_low + 24

    /* 2048 2-MiB pages covering 0..4 GiB. */
    mov $boot_pd, %edi
    xor %ecx, %ecx
1:
    mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax
    mov %eax, (%edi,%ecx,8)
    mov %ecx, %eax
    shr $11, %eax
    mov %eax, 4(%edi,%ecx,8)
    inc %ecx
    cmp $2048, %ecx
    jne 1b

    /* PAE, then long mode with NX, then paging. */
    mov %cr4, %eax
    or $(1 << 5), %eax
    mov %eax, %cr4
    mov $boot_pml4, %eax
    mov %eax, %cr3
    mov $0xc0000080, %ecx
    rdmsr
    or $((1 << 8) | (1 << 11)), %eax
    wrmsr
    mov %cr0, %eax
    or $((1 << 31) | (1 << 0)), %eax
    mov %eax, %cr0

    lgdt boot_gdt_ptr
    ljmp $0x08, $long_entry

    .code64
long_entry:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %ax, %ax
    mov %ax, %fs
    mov %ax, %gs

    /* SSE before any Rust code: CR0.EM=0, CR0.MP=1, CR4.OSFXSR|OSXMMEXCPT. */
    mov %cr0, %rax
    and $~(1 << 2), %rax
    or $(1 << 1), %rax
    mov %rax, %cr0
    mov %cr4, %rax
    or $((1 << 9) | (1 << 10)), %rax
    mov %rax, %cr4

    movabs $BSP_STACK + {stack_size}, %rsp
    and $-16, %rsp
    xor %ebp, %ebp
    mov boot_magic, %edi
    mov boot_info, %esi
    movabs $kernel_entry, %rax
    call *%rax
2:
    cli
    hlt
    jmp 2b
    "#,
    stack_size = const BSP_STACK_SIZE,
    options(att_syntax)
);
