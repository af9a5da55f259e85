/*
 * Hostile guests: Multiboot (v1) ELF32 kernels that abuse the virtual
 * platform the way a buggy or malicious guest would, then report through
 * the QEMU-compatible debug-exit port: 0x10 "survived", 0x11 an exception
 * nobody asked for, 0x12 an expected interrupt never came, 0x13 an
 * expected NMI never came. Each only ever
 * hurts its own VM; the image tests check the host and other VMs carry on.
 *
 * (Whether unknown MSRs #GP is checked by the guest test suite; QEMU's
 * TCG answers them with 0, so this guest only requires surviving them.)
 *
 * One source, seven guests: `as --32 --defsym MODE=n`.
 *   1 ports   IN from every port, OUT 0 to ports 0-0xfff (not debug-exit),
 *             REP INSB/OUTSB
 *   2 msrs    RDMSR every MSR in four ranges and write back what was read
 *   3 memory  reads and writes where there is no RAM (beyond guest RAM,
 *             the PCI hole, HPET, next to the APIC pages), odd-sized and
 *             unaligned LAPIC/IOAPIC accesses
 *   4 apic    every LAPIC register all ones then zero, software and global
 *             disable/enable, x2APIC enable without x2APIC, odd ICR
 *             commands (broadcast, NMI/SMI/ExtINT/lowest-priority to self,
 *             illegal vector), a self-IPI flood and a 1 ns periodic timer
 *   5-7 xstate  AVX registers behind CPUID's back (each mode keeps its own
 *             pattern in YMM1's upper half; 0x14 if it changed, 0x16 if
 *             the virtual CPU refused CR4.OSXSAVE or AVX, as it should)
 *   8 insns   the instructions of the hardware under the VMM: every SVM
 *             instruction (CLGI would hold off the host's interrupts),
 *             VMX's, MONITOR/MWAIT: each must raise #UD; RDPMC (the host's
 *             counters) #GP; INVD and WBINVD run (the host's caches are
 *             not the guest's to drop). 0x15 if one did otherwise.
 *   9 debug   the debug registers: at power-on DR0-DR3 read 0, DR6
 *             0xffff0ff0, DR7 0x400, never what another VM left in the CPU;
 *             what the guest writes it reads back across 20000 exits while
 *             other VMs write theirs; DR4/DR5 alias DR6/DR7 until CR4.DE,
 *             then #UD. 0x17 if not.
 */
        .code32
        .set MB_MAGIC, 0x1badb002
        .set MB_FLAGS, 0x00000003       /* page-aligned modules, memory info */
        .set LAPIC, 0xfee00000
        .set IOAPIC, 0xfec00000

        .section .text
        .align 4
        .long MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)

        .globl _start
_start:
        cli
        lgdt gdt_desc
        ljmp $0x08, $1f
1:      mov $0x10, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %ss
        mov %ax, %fs
        mov %ax, %gs
        mov $stack_top, %esp
        call setup_idt
        lidt idt_desc
        call run
        mov $0x10, %eax
report:
        mov $0xf4, %dx
        out %eax, %dx
2:      cli
        hlt
        jmp 2b

fail:   mov $0x12, %eax
        jmp report

/* ---- IDT: #GP and NMI are expected, interrupts counted, the rest fatal ---- */

/* edi = gate address, eax = handler: a 32-bit interrupt gate on selector 8 */
set_gate:
        mov %eax, %edx
        and $0xffff, %edx
        or $0x00080000, %edx
        mov %edx, (%edi)
        mov %eax, %edx
        and $0xffff0000, %edx
        or $0x8e00, %edx
        mov %edx, 4(%edi)
        ret

setup_idt:
        xor %ecx, %ecx
1:      lea idt(,%ecx,8), %edi
        mov $unexpected, %eax
        cmp $2, %ecx
        jne 2f
        mov $nmi_handler, %eax
        cmp $3, %ecx                    /* #BP (or QEMU delivering an */
        jne 2f                          /* illegal IPI vector): ignore */
        mov $ignored, %eax
2:      cmp $13, %ecx
        jne 3f
        mov $gp_handler, %eax
3:      cmp $6, %ecx                    /* #UD: AVX refused, which is fine */
        jne 5f
        mov $ud_handler, %eax
5:      cmp $0x20, %ecx
        jb 4f
        mov $irq_handler, %eax
4:      call set_gate
        inc %ecx
        cmp $256, %ecx
        jb 1b
        ret

unexpected:
        mov $0x11, %eax
        jmp report

/* #GP from RDMSR/WRMSR (2 bytes long, or gp_skip): count it and skip the instruction */
gp_handler:
        add $4, %esp
        push %eax
        mov gp_skip, %eax
        add %eax, 4(%esp)
        pop %eax
        incl gp_count
        movl $1, gp_hit
        iret

ignored:
        iret

/* #UD only matters in the extended-state modes: the CPU refused AVX;
 * and in mode 8, where it is expected: count it, skip ud_skip bytes. */
ud_handler:
.if MODE >= 8
        push %eax
        mov ud_skip, %eax
        add %eax, 4(%esp)
        pop %eax
        movl $1, ud_hit
        iret
.elseif MODE >= 5
        mov $0x16, %eax
        jmp report
.else
        jmp unexpected
.endif

nmi_handler:
        incl nmi_count
        iret

/* Interrupts counted; at 200 the handler itself masks the LAPIC timer: on
 * a slow emulator handling one takes longer than the timer's shortest
 * period, so interrupts would come back to back and the loop waiting for
 * them would never run again (it is the guest's own livelock, not a host
 * problem, but it would keep the guest from reporting). */
irq_handler:
        incl irq_count
        cmpl $200, irq_count
        jb 1f
        movl $0x10000, LAPIC + 0x320
1:      movl $0, LAPIC + 0xb0
        iret

/* ---- the modes ---- */

run:
.if MODE == 1
        xor %edx, %edx
1:      inb %dx, %al
        inc %edx
        cmp $0x10000, %edx
        jb 1b
        xor %edx, %edx
2:      cmp $0x92, %edx                 /* port 92 bit 1 = 0 masks A20: */
        je 4f                           /* real suicide, not hostility */
        cmp $0xf4, %edx
        jb 3f
        cmp $0xf8, %edx
        jb 4f
3:      xor %eax, %eax
        outb %al, %dx
4:      inc %edx
        cmp $0x1000, %edx
        jb 2b
        cld
        mov $0x80, %dx
        mov $buf, %edi
        mov $64, %ecx
        rep insb
        mov $buf, %esi
        mov $64, %ecx
        rep outsb
        std
        mov $buf + 62, %edi
        mov $16, %ecx
        rep insw
        cld
        ret
.endif

.if MODE == 2
        mov $0x0, %ebx
        mov $0x2000, %ebp
        call msr_range
        mov $0x40000000, %ebx
        mov $0x40000100, %ebp
        call msr_range
        mov $0xc0000000, %ebx
        mov $0xc0001000, %ebp
        call msr_range
        mov $0xc0010000, %ebx
        mov $0xc0011000, %ebp
        call msr_range
        ret
msr_range:
1:      mov %ebx, %ecx
        movl $0, gp_hit
        rdmsr
        cmpl $0, gp_hit
        jne 2f
        mov %ebx, %ecx
        wrmsr
2:      inc %ebx
        cmp %ebp, %ebx
        jb 1b
        ret
.endif

.if MODE == 3
        mov $addrs, %esi
1:      mov (%esi), %edi
        mov (%edi), %eax
        movl $0xdeadbeef, (%edi)
        mov (%edi), %eax
        movb (%edi), %al
        movw %ax, 2(%edi)
        add $4, %esi
        cmp $addrs_end, %esi
        jb 1b
        /* odd LAPIC/IOAPIC accesses: bytes, words, unaligned, reserved */
        movb LAPIC + 0x30, %al
        movw LAPIC + 0x31, %ax
        movl LAPIC + 0x3fc, %eax
        movl LAPIC + 0x3e, %eax
        movb $0xff, LAPIC + 0x81
        movl $0xffffffff, LAPIC + 0x10
        movl $0xff, IOAPIC
        movl IOAPIC + 0x10, %eax
        movl $0xffffffff, IOAPIC + 0x10
        movl $0x10, IOAPIC
        movl $0xffffffff, IOAPIC + 0x10
        movb $0x3f, IOAPIC + 1
        movw IOAPIC + 0x12, %ax
        movl $0, IOAPIC + 0x20
        ret
addrs:  .long 0x04000000, 0x3ffff000, 0x80000000, 0xe0000000, 0xfebff000
        .long 0xfed00000, 0xfec01000, 0xfee01000, 0xfffffff0
addrs_end:
.endif

.if MODE == 4
        mov $0xff, %al                  /* mask the 8259s: LAPIC only */
        out %al, $0x21
        out %al, $0xa1
        mov $LAPIC + 0x20, %edi
1:      cmp $LAPIC + 0x300, %edi
        je 2f
        cmp $LAPIC + 0x310, %edi
        je 2f
        movl $0xffffffff, (%edi)
        movl $0, (%edi)
2:      add $0x10, %edi
        cmp $LAPIC + 0x400, %edi
        jb 1b
        movl $0x1ff, LAPIC + 0xf0       /* software enable again */
        mov $0x1b, %ecx                 /* IA32_APIC_BASE: disable, enable */
        rdmsr
        mov %eax, %esi
        and $~0x800, %eax
        wrmsr
        mov %esi, %eax
        wrmsr
        mov %esi, %eax                  /* x2APIC on (#GP where not offered) */
        or $0xc00, %eax
        movl $0, gp_hit
        wrmsr
        mov %esi, %eax                  /* x2APIC -> xAPIC directly: #GP */
        wrmsr                           /* (still x2APIC if it was on) */
        mov %esi, %eax                  /* the legal way back: disabled, then xAPIC */
        and $~0xc00, %eax
        wrmsr
        mov %esi, %eax
        wrmsr
        movl $0x1ff, LAPIC + 0xf0
        movl $0xff000000, LAPIC + 0x310
        movl $0x000c44ff, LAPIC + 0x300 /* all-but-self, fixed, vector 0xff */
        movl $0x00040400, LAPIC + 0x300 /* NMI to self */
        movl $0x00040200, LAPIC + 0x300 /* SMI to self */
        movl $0x00040700, LAPIC + 0x300 /* ExtINT to self */
        movl $0x00040100, LAPIC + 0x300 /* lowest priority, vector 0 */
        movl $0x00040003, LAPIC + 0x300 /* fixed, illegal vector 3 */
        movl $0x00080841, LAPIC + 0x300 /* all incl. self, logical */
        mov $1000, %ecx
3:      movl $0x00040041, LAPIC + 0x300 /* self-IPI flood, vector 0x41 */
        loop 3b
        movl $0xb, LAPIC + 0x3e0        /* divide by 1 */
        movl $0x20050, LAPIC + 0x320    /* periodic, vector 0x50 */
        movl $1, LAPIC + 0x380          /* every nanosecond, please */
        sti
        mov $1000000, %ecx
4:      in $0x80, %al
        cmpl $200, irq_count
        jae 5f
        loop 4b
5:      cli
        movl $0x10000, LAPIC + 0x320
        movl $0, LAPIC + 0x380
        cmpl $200, irq_count            /* the timer and IPIs did arrive */
        jb fail
        cmpl $0, nmi_count              /* the NMI to self did arrive */
        je fail_nmi
        ret
fail_nmi:
        mov $0x13, %eax
        jmp report
.endif

.if MODE >= 5 && MODE <= 7
        /* Extended state the guest was never offered (CPUID says no XSAVE
         * or AVX) but may reach anyway: turn on CR4.OSXSAVE and, if the CPU
         * lets it, keep a pattern in the upper half of YMM1 across 20000
         * exits. Whatever the guest does, those registers must be its own:
         * another VM or the host must never see or change them. */
        movl $3, gp_skip                /* mov %eax, %cr4 is 3 bytes */
        movl $0, gp_hit
        mov %cr0, %eax
        and $~4, %eax                   /* EM off, MP on */
        or $2, %eax
        mov %eax, %cr0
        mov %cr4, %eax
        or $0x40600, %eax               /* OSFXSR, OSXMMEXCPT, OSXSAVE */
        mov %eax, %cr4
        cmpl $0, gp_hit
        jne 7f                          /* refused: nothing to check */
        xor %ecx, %ecx
        xgetbv                          /* the XCR0 in force */
        test $4, %eax
        jz 7f                           /* no AVX state enabled */
        mov $PATTERN, %eax
        movd %eax, %xmm0
        vinsertf128 $1, %xmm0, %ymm1, %ymm1
        mov $20000, %ecx
1:      mov $0x80, %dx
        out %al, %dx
        vextractf128 $1, %ymm1, %xmm2
        movd %xmm2, %ebx
        cmp $PATTERN, %ebx
        jne 8f
        dec %ecx
        jnz 1b
        ret                             /* 0x10: checked, and private */
7:      mov $0x16, %eax                 /* AVX refused: fine, and said so */
        jmp report
8:      mov $0x14, %eax                 /* someone else's value in YMM1 */
        jmp report
.endif
/* expect_ud LEN, BYTES...: the instruction must raise #UD (else bad_insn). */
        .macro expect_ud len:req, bytes:vararg
        movl $\len, ud_skip
        movl $0, ud_hit
        .byte \bytes
        cmpl $1, ud_hit
        jne bad_insn
        .endm

.if MODE == 8
        /* A RAM operand for those with one, page aligned: VMRUN, VMLOAD
         * and VMSAVE check alignment (#GP) before their intercepts. */
        mov $svm_page, %eax
        xor %ecx, %ecx
        xor %edx, %edx
        expect_ud 3, 0x0f, 0x01, 0xdd   /* clgi */
        expect_ud 3, 0x0f, 0x01, 0xdc   /* stgi */
        expect_ud 3, 0x0f, 0x01, 0xd8   /* vmrun (%eax) */
        expect_ud 3, 0x0f, 0x01, 0xda   /* vmload (%eax) */
        expect_ud 3, 0x0f, 0x01, 0xdb   /* vmsave (%eax) */
        expect_ud 3, 0x0f, 0x01, 0xdf   /* invlpga (%eax), %ecx */
        expect_ud 3, 0x0f, 0x01, 0xde   /* skinit (%eax) */
        expect_ud 4, 0xf3, 0x0f, 0xc7, 0x30 /* vmxon (%eax) */
        expect_ud 3, 0x0f, 0xc7, 0x30   /* vmptrld (%eax) */
        expect_ud 3, 0x0f, 0x01, 0xc2   /* vmlaunch */
        expect_ud 3, 0x0f, 0x01, 0xc4   /* vmxoff */
        expect_ud 3, 0x0f, 0x01, 0xc8   /* monitor (%eax), %ecx, %edx */
        expect_ud 3, 0x0f, 0x01, 0xc9   /* mwait %eax, %ecx */
        movl $2, gp_skip                /* rdpmc: #GP, the counters stay the host's */
        movl $0, gp_hit
        rdpmc
        cmpl $1, gp_hit
        jne bad_insn
        movl $0x5a5a5a5a, scratch       /* INVD and WBINVD run, memory stays */
        invd
        wbinvd
        cmpl $0x5a5a5a5a, scratch
        jne bad_insn
        ret
bad_insn:
        mov $0x15, %eax
        jmp report
.endif
.if MODE == 9
        mov %dr0, %eax                  /* the reset values, nobody else's */
        mov %dr1, %ebx
        or %ebx, %eax
        mov %dr2, %ebx
        or %ebx, %eax
        mov %dr3, %ebx
        or %ebx, %eax
        jnz bad_insn
        mov %dr6, %eax
        cmp $0xffff0ff0, %eax
        jne bad_insn
        mov %dr7, %eax
        cmp $0x400, %eax
        jne bad_insn
        rdtsc                           /* this guest's own values, above */
        or $0x80000000, %eax            /* 2 GiB (nothing runs there) */
        mov %eax, %esi
        mov %esi, %dr0
        lea 1(%esi), %eax
        mov %eax, %dr1
        lea 2(%esi), %eax
        mov %eax, %dr2
        lea 3(%esi), %eax
        mov %eax, %dr3
        mov $0x455, %eax                /* L0-L3 */
        mov %eax, %dr7
        mov $20000, %ecx
1:      out %al, $0x80
        mov %dr0, %eax
        cmp %esi, %eax
        jne bad_insn
        mov %dr3, %eax
        sub $3, %eax
        cmp %esi, %eax
        jne bad_insn
        mov %dr7, %eax
        cmp $0x455, %eax
        jne bad_insn
        dec %ecx
        jnz 1b
        xor %eax, %eax                  /* DR6: only B0-B3, BD, BS, BT stick */
        mov %eax, %dr6
        mov %dr6, %eax
        cmp $0xffff0ff0, %eax
        jne bad_insn
        mov %dr4, %eax                  /* CR4.DE clear: DR4 is DR6 */
        cmp $0xffff0ff0, %eax
        jne bad_insn
        mov %dr5, %eax                  /* and DR5 is DR7 */
        cmp $0x455, %eax
        jne bad_insn
        mov %cr4, %eax                  /* CR4.DE set: #UD */
        or $8, %eax
        mov %eax, %cr4
        expect_ud 3, 0x0f, 0x21, 0xe0   /* mov %dr4, %eax */
        expect_ud 3, 0x0f, 0x23, 0xe8   /* mov %eax, %dr5 */
        mov %cr4, %eax
        and $~8, %eax
        mov %eax, %cr4
        xor %eax, %eax
        mov %eax, %dr7
        ret
bad_insn:
        mov $0x17, %eax
        jmp report
.endif
.if MODE == 5
        .set PATTERN, 0x1234abcd
.elseif MODE == 6
        .set PATTERN, 0x0badcafe
.elseif MODE == 7
        .set PATTERN, 0x5a5aa5a5
.endif

        .section .data
        .align 8
gp_skip: .long 2
ud_skip: .long 3
gdt:    .quad 0
        .quad 0x00cf9a000000ffff        /* 0x08: flat 32-bit code */
        .quad 0x00cf92000000ffff        /* 0x10: flat data */
gdt_desc:
        .word gdt_desc - gdt - 1
        .long gdt
idt_desc:
        .word 256 * 8 - 1
        .long idt

        .section .bss
        .align 16
idt:    .skip 256 * 8
gp_count: .long 0
gp_hit: .long 0
ud_hit: .long 0
scratch: .skip 64
nmi_count: .long 0
irq_count: .long 0
buf:    .skip 256
        .align 4096
svm_page: .skip 4096
        .skip 16384
stack_top:
