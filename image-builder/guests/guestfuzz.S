/*
 * guestfuzz: a Multiboot (v1) ELF32 test guest that attacks its VMM with
 * random work, the guest-side counterpart of the host's fuzz harnesses.
 * Each iteration, in ring 0, it may make a random port access (IN/OUT of
 * every size, REP INSB/OUTSB), a random MMIO access (LAPIC, IOAPIC, a
 * page where nothing is, the PCI hole, beyond RAM; loads, stores, MOVS,
 * read-modify-write) and a random RDMSR/WRMSR; then it executes ONE
 * random instruction in ring 3 (16 random bytes, random registers, in 1
 * of 16 iterations some pointing at the MMIO pages, which ring 3 may
 * touch, so random instructions reach the VMM's MMIO decoder and emulator), with EFLAGS.TF
 * set so that the instruction ends in a #DB (executed) or its own fault.
 * Every vector lands in one recovery path that resets the stack and goes
 * on with the next iteration.
 *
 * Kept out, because they would only end or wedge this guest, not test the
 * host: the debug-exit, reset (0xcf9, 0x92, 0x64), ACPI PM1 control
 * (0x602-0x605: S5 powers off) and COM1 ports, the
 * LAPIC's ICR (an INIT to itself), the SYSENTER/SYSCALL MSRs and EFER
 * (a random ring-0 entry point), APIC_BASE values other than enable/
 * disable/x2APIC at the default base. The LAPIC is put back each
 * iteration and its timer armed, so a ring-3 loop always ends.
 *
 * The command line: the first decimal number is the iteration count
 * (default 10000); the whole string seeds the generator. Every 100
 * iterations and at the end it prints `guestfuzz: iterations N executed E
 * faults F interrupts I timer T` on COM1 (T: the LAPIC timer count, which
 * doubles whenever the timer fired before the ring-3 instruction could
 * run, as on a slow host like Bochs); at the end debug-exit 0x10. A random
 * instruction whose MMIO access the VMM cannot emulate stops the VM (as
 * KVM stops a guest on an emulation failure): the last line says how far
 * it got.
 */
        .code32
        .set MB_MAGIC, 0x1badb002
        .set MB_FLAGS, 0x00000003
        .set LAPIC, 0xfee00000
        .set IOAPIC, 0xfec00000
        .set HOLE, 0xfed00000           /* nothing there (no HPET) */
        .set PCIHOLE, 0xe0000000
        .set BEYOND, 0x40000000         /* beyond a small VM's RAM */
        .set UCODE, 0x800000            /* ring-3 code page (one 4 MiB user page) */
        .set UDATA, 0x801000
        .set USTACK, 0xbff000
        .set COM1, 0x3f8
        .set MMIO_EVERY, 16             /* iterations with MMIO pointers: 1 in this */
        .set TIMER_START, 400000        /* LAPIC timer count (divide by 1) */
        .set TIMER_MAX, 0x10000000

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
        call parse_cmdline
        call setup_idt
        lidt idt_desc
        call setup_tss
        call setup_paging
        mov $0x28, %ax
        ltr %ax
        call fill_code_page
        jmp main_loop

/* ---- command line: count = first decimal number, seed = FNV-1a of it ---- */
parse_cmdline:
        movl $10000, count
        movl $TIMER_START, timer_count
        movl $0x811c9dc5, rng
        testl $4, (%ebx)
        jz 9f
        mov 16(%ebx), %esi
        xor %ecx, %ecx                  /* number being read */
        xor %edi, %edi                  /* digits seen */
1:      movzbl (%esi), %eax
        test %eax, %eax
        jz 8f
        xor %eax, rng
        mov rng, %edx
        imul $0x01000193, %edx
        mov %edx, rng
        cmp $2, %edi                    /* 2: a number was read and ended */
        je 3f
        sub $'0', %eax
        cmp $9, %eax
        ja 2f
        imul $10, %ecx
        add %eax, %ecx
        mov $1, %edi
        jmp 3f
2:      test %edi, %edi
        jz 3f
        mov $2, %edi
3:      inc %esi
        jmp 1b
8:      test %edi, %edi
        jz 9f
        test %ecx, %ecx
        jz 9f
        mov %ecx, count
9:      cmpl $0, rng
        jne 1f
        movl $1, rng
1:      ret

/* xorshift32: eax = next random number (clobbers nothing else) */
rand:
        mov rng, %eax
        push %edx
        mov %eax, %edx
        shl $13, %edx
        xor %edx, %eax
        mov %eax, %edx
        shr $17, %edx
        xor %edx, %eax
        mov %eax, %edx
        shl $5, %edx
        xor %edx, %eax
        mov %eax, rng
        pop %edx
        ret

/* ---- IDT: every vector to its stub; all gates DPL 3 (INT n from ring 3 lands there too) ---- */
setup_idt:
        xor %ecx, %ecx
1:      lea idt(,%ecx,8), %edi
        mov %ecx, %eax
        shl $4, %eax
        add $stubs, %eax
        mov %eax, %edx
        and $0xffff, %edx
        or $0x00080000, %edx
        mov %edx, (%edi)
        mov %eax, %edx
        and $0xffff0000, %edx
        or $0xee00, %edx
        mov %edx, 4(%edi)
        inc %ecx
        cmp $256, %ecx
        jb 1b
        ret

/* TSS: ring-0 stack for entries from ring 3; I/O map beyond the limit (no ports for ring 3) */
setup_tss:
        movl $stack_top, tss + 4
        movl $0x10, tss + 8
        movw $104, tss + 102
        mov $tss, %eax
        mov %ax, gdt + 0x28 + 2
        shr $16, %eax
        mov %al, gdt + 0x28 + 4
        mov %ah, gdt + 0x28 + 7
        ret

/* 4 MiB pages identity-mapping 4 GiB, supervisor only, except: the user
 * page at 8 MiB; the 4 MiB pages at the PCI hole and beyond RAM; and in
 * the 0xfec00000 region (4 KiB pages) the IOAPIC and the empty page, user
 * accessible, while the LAPIC page stays supervisor. */
setup_paging:
        xor %ecx, %ecx
1:      mov %ecx, %eax
        shl $22, %eax
        or $0x83, %eax                  /* P, RW, PS */
        mov %eax, pd(,%ecx,4)
        inc %ecx
        cmp $1024, %ecx
        jb 1b
        orl $4, pd + (UCODE >> 22) * 4
        orl $4 | 0x10, pd + (PCIHOLE >> 22) * 4
        orl $4 | 0x10, pd + (BEYOND >> 22) * 4
        xor %ecx, %ecx
2:      mov %ecx, %eax
        shl $12, %eax
        add $IOAPIC, %eax
        or $0x13, %eax                  /* P, RW, PCD */
        mov %eax, pt(,%ecx,4)
        inc %ecx
        cmp $1024, %ecx
        jb 2b
        orl $4, pt + 0 * 4                              /* IOAPIC */
        orl $4, pt + ((HOLE - IOAPIC) >> 12) * 4        /* nothing */
        mov $pt, %eax
        or $0x07, %eax
        mov %eax, pd + (IOAPIC >> 22) * 4
        mov %cr4, %eax
        or $0x10, %eax                  /* PSE */
        mov %eax, %cr4
        mov $pd, %eax
        mov %eax, %cr3
        mov %cr0, %eax
        or $0x80050000, %eax            /* PG, AM, WP */
        mov %eax, %cr0
        ret

fill_code_page:
        push %edi
        push %ecx
        cld
        mov $UCODE, %edi
        mov $0xcc, %al                  /* INT3 after whatever ring 3 runs */
        mov $4096, %ecx
        rep stosb
        pop %ecx
        pop %edi
        ret

/* ---- recovery: every exception and interrupt comes here ---- */
        .align 16
stubs:
        .set vec, 0
        .rept 256
        .align 16
        pushl $vec
        jmp common
        .set vec, vec + 1
        .endr

common:
        mov $0x10, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %fs
        mov %ax, %gs
        mov %ax, %ss
        mov (%esp), %eax
        mov 4(%esp), %ebx               /* EIP and CS if no error code */
        mov 8(%esp), %ecx
        mov $stack_top, %esp
        cld
        cmpl $0, in_rearm
        je 1f
        movl $1, rearm_broken           /* the LAPIC refuses to be put back: stop trying */
        movl $0, in_rearm
1:      cmp $1, %eax
        jne 2f
        incl executed
        jmp main_loop
2:      cmp $32, %eax
        jae 3f
        incl faults
        jmp main_loop
3:      incl interrupts
        /* The timer fired before the ring-3 instruction ran (a slow host:
         * under Bochs the VMM's exits for this iteration outlast it), in an
         * iteration that left the LAPIC alone: a longer timer from now on. */
        cmp $0x40, %eax
        jne 5f
        cmpl $0, timer_clean
        je 5f
        and $3, %ecx
        cmp $3, %ecx
        jne 5f
        cmp user_eip, %ebx
        jne 5f
        cmpl $TIMER_MAX, timer_count
        jae 5f
        shll timer_count
        incl timer_doublings
5:      cmpl $0, rearm_broken
        jne 4f
        movl $0, LAPIC + 0xb0           /* EOI */
4:      mov $0x20, %al
        out %al, $0xa0
        out %al, $0x20
        jmp main_loop

/* ---- the loop ---- */
main_loop:
        mov iter, %eax
        cmp count, %eax
        jae finish
        xor %edx, %edx
        mov $100, %ecx
        div %ecx
        test %edx, %edx
        jnz 1f
        call report_line
1:      incl iter
        call rearm
        call rand
        test $3, %eax
        jnz 2f
        call fuzz_port
2:      call rand
        test $3, %eax
        jnz 3f
        call fuzz_mmio
3:      call rand
        test $7, %eax
        jnz 4f
        call fuzz_msr
4:      jmp ring3_insn

finish:
        call report_line
        mov $0x10, %eax
        mov $0xf4, %dx
        out %eax, %dx
5:      cli
        hlt
        jmp 5b

/* LAPIC back to xAPIC at the default base, enabled, TPR 0, a one-shot
 * timer on vector 0x40; every 16 iterations the 8259s masked again. */
rearm:
        cmpl $0, rearm_broken
        jne 9f
        movl $1, in_rearm
        mov $0x1b, %ecx
        rdmsr
        cmp $0xfee00900, %eax
        jne 1f
        test %edx, %edx
        jz 2f
1:      xor %eax, %eax
        xor %edx, %edx
        wrmsr                           /* disable (legal from x2APIC) */
        mov $0xfee00900, %eax
        wrmsr
2:      movl $0x1ff, LAPIC + 0xf0
        movl $0, LAPIC + 0x80
        movl $0xb, LAPIC + 0x3e0
        movl $0x40, LAPIC + 0x320
        mov timer_count, %eax
        mov %eax, LAPIC + 0x380
        movl $0, in_rearm
        movl $1, timer_clean
9:      testl $15, iter
        jnz 3f
        mov $0xff, %al
        out %al, $0x21
        out %al, $0xa1
3:      ret

/* A random IN/OUT, or a short REP INSB/OUTSB, to a random port. */
fuzz_port:
        call rand
        mov %eax, %ebx                  /* value */
        call rand
        movzwl %ax, %edx                /* port */
        cmp $0xf1, %edx                 /* debug-exit 0xf4, reached by */
        jb 1f                           /* word/dword accesses from 0xf1 */
        cmp $0xf8, %edx
        jb 9f
1:      cmp $0x92, %edx
        je 9f
        cmp $0x64, %edx
        je 9f
        cmp $0xcf9, %edx
        je 9f
        cmp $0x602, %edx                /* ACPI PM1 control (S5 = power off), */
        jb 4f                           /* reached by word/dword accesses from 0x602 */
        cmp $0x606, %edx
        jb 9f
4:      cmp $COM1, %edx
        jb 2f
        cmp $COM1 + 8, %edx
        jb 9f
2:      call rand
        and $7, %eax
        mov %eax, %ebp                  /* operation */
        mov %ebx, %eax
        cmp $0, %ebp
        jne 3f
        inb %dx, %al
        ret
3:      cmp $1, %ebp
        jne 3f
        inw %dx, %ax
        ret
3:      cmp $2, %ebp
        jne 3f
        inl %dx, %eax
        ret
3:      cmp $3, %ebp
        jne 3f
        outb %al, %dx
        ret
3:      cmp $4, %ebp
        jne 3f
        outw %ax, %dx
        ret
3:      cmp $5, %ebp
        jne 3f
        outl %eax, %dx
        ret
3:      mov %ebx, %ecx
        and $15, %ecx
        cmp $6, %ebp
        je 4f
        mov $buf, %esi
        rep outsb
        ret
4:      mov $buf, %edi
        rep insb
9:      ret

/* A random MMIO access of a random kind. */
fuzz_mmio:
        movl $0, timer_clean
        call rand
        mov %eax, %ebx                  /* value */
        call rand
        mov %eax, %edi
        and $7, %eax
        cmp $2, %eax
        jae 1f
        and $0xff0, %edi                /* LAPIC register (not the ICR) */
        cmp $0x300, %edi
        je 9f
        add $LAPIC, %edi
        jmp 5f
1:      cmp $4, %eax
        jae 2f
        and $0x1f, %edi                 /* IOAPIC: IOREGSEL, IOWIN, odd offsets */
        add $IOAPIC, %edi
        jmp 5f
2:      cmp $5, %eax
        jne 3f
        and $0xfff, %edi
        add $HOLE, %edi
        jmp 5f
3:      cmp $6, %eax
        jne 4f
        and $0xffff, %edi
        add $PCIHOLE, %edi
        jmp 5f
4:      and $0xffff, %edi
        add $BEYOND, %edi
5:      call rand
        and $15, %eax
        cmp $0, %eax
        jne 6f
        movb (%edi), %al
        ret
6:      cmp $1, %eax
        jne 6f
        movw (%edi), %ax
        ret
6:      cmp $2, %eax
        jne 6f
        movl (%edi), %eax
        ret
6:      cmp $3, %eax
        jne 6f
        movb %bl, (%edi)
        ret
6:      cmp $4, %eax
        jne 6f
        movw %bx, (%edi)
        ret
6:      cmp $5, %eax
        jne 6f
        movl %ebx, (%edi)
        ret
6:      cmp $6, %eax
        jne 6f
        addl %ebx, (%edi)
        ret
6:      cmp $7, %eax
        jne 6f
        orb %bl, (%edi)
        ret
6:      cmp $8, %eax
        jne 6f
        xchg %ebx, (%edi)
        ret
6:      cmp $9, %eax
        jne 6f
        movzwl (%edi), %eax
        ret
6:      cmp $10, %eax
        jne 6f
        mov %edi, %esi                  /* MMIO -> RAM */
        mov $buf, %edi
        mov %ebx, %ecx
        and $7, %ecx
        rep movsb
        ret
6:      cmp $11, %eax
        jne 6f
        mov $buf, %esi                  /* RAM -> MMIO */
        mov %ebx, %ecx
        and $7, %ecx
        rep movsl
        ret
6:      cmp $12, %eax
        jne 6f
        mov %ebx, %eax
        mov $3, %ecx
        rep stosw
        ret
6:      cmp $13, %eax
        jne 6f
        testl %ebx, (%edi)
        ret
6:      cmp $14, %eax
        jne 6f
        cmpb %bl, (%edi)
        ret
6:      andl %ebx, (%edi)
9:      ret

msrs:   .long 0x10, 0x1b, 0x1b, 0x1b, 0x3a, 0x8b, 0xfe, 0x179, 0x1a0, 0x200, 0x201, 0x20f, 0x250, 0x277, 0x2ff, 0x6e0
        .long 0x802, 0x803, 0x808, 0x80b, 0x80f, 0x828, 0x838, 0x83f, 0xc0000103, 0xc0010015, 0xc0010114, 0x40000000, 0xd90, 0x1d9, 0x48, 0x49

/* A random RDMSR, then a WRMSR of a changed value (not for the entry-point MSRs or EFER). */
fuzz_msr:
        movl $0, timer_clean
        call rand
        mov %eax, %ebx
        and $63, %eax
        cmp $32, %eax
        jae 1f
        mov msrs(,%eax,4), %ecx
        jmp 2f
1:      call rand
        mov %eax, %ecx
        test $1, %ebx
        jz 2f
        and $0xc0001fff, %ecx           /* near the ranges that exist */
2:      cmp $0x830, %ecx                /* x2APIC ICR: an INIT to itself */
        je 9f
        cmp $0x174, %ecx
        jb 3f
        cmp $0x177, %ecx
        jb 9f
3:      mov %ecx, %eax
        and $0xfffffff0, %eax
        cmp $0xc0000080, %eax
        je 9f
        rdmsr
        test $2, %ebx
        jz 9f
        cmp $0x1b, %ecx
        jne 4f
        mov %ebx, %eax                  /* APIC_BASE: default base, random EN/EXTD/BSP */
        and $0xd00, %eax
        or $0xfee00000, %eax
        xor %edx, %edx
        wrmsr
        ret
4:      push %eax
        call rand
        test $4, %ebx
        jz 5f
        and $0x000000ff, %eax           /* a few low bits flipped */
5:      xor %eax, (%esp)
        pop %eax
        wrmsr
9:      ret

/* One random instruction in ring 3 with TF set. */
ring3_insn:
        testl $63, iter
        jnz 1f
        call fill_code_page
1:      call rand
        and $0xff0, %eax
        add $UCODE, %eax
        mov %eax, user_eip
        mov %eax, %edi
        mov $4, %ecx
2:      call rand
        stosl
        loop 2b
        /* random user data now and then */
        call rand
        test $7, %eax
        jnz 3f
        and $0x3fc, %eax
        mov %eax, %edi
        add $UDATA, %edi
        mov $64, %ecx
4:      call rand
        stosl
        loop 4b
        /* registers: random, user data, MMIO pages, or small; MMIO
         * pages only in 1 of MMIO_EVERY iterations (a VMM stops a VM whose
         * MMIO access cannot be emulated, as KVM does: MMIO pointers in
         * every iteration ended most VMs within a few hundred) */
3:      call rand
        and $MMIO_EVERY - 1, %eax
        mov %eax, mmio_regs             /* 0: this iteration may point at MMIO */
        xor %esi, %esi
5:      call rand
        mov %eax, %ebx
        call rand
        and $7, %ebx
        cmp $4, %ebx
        jae 6f
        and $0x3ffff, %eax              /* user data */
        add $UDATA, %eax
        jmp 8f
6:      cmp $4, %ebx
        jne 7f
        cmpl $0, mmio_regs
        je 60f
        and $0x3ffff, %eax
        add $UDATA, %eax
        jmp 8f
60:     and $0xfff, %eax                /* one of the MMIO pages */
        test $0x100, %eax
        jz 61f
        add $IOAPIC, %eax
        jmp 8f
61:     test $0x200, %eax
        jz 62f
        add $HOLE, %eax
        jmp 8f
62:     add $PCIHOLE, %eax
        jmp 8f
7:      cmp $5, %ebx
        jne 8f
        and $0xff, %eax                 /* small (counts, indexes) */
8:      mov %eax, regs(,%esi,4)
        inc %esi
        cmp $8, %esi
        jb 5b
        /* IRET frame to ring 3: SS, ESP, EFLAGS (IF, TF, random DF/AC/status), CS, EIP */
        call rand
        and $0x408d5 | 0x400, %eax
        or $0x302, %eax
        pushl $0x23
        mov regs + 16, %ebx             /* ESP: the user stack, sometimes anything */
        test $1, %ebx
        jnz 9f
        mov $USTACK, %ebx
9:      push %ebx
        push %eax
        pushl $0x1b
        pushl user_eip
        mov $0x23, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %fs
        mov %ax, %gs
        mov %ss:regs + 0, %eax
        mov %ss:regs + 4, %ecx
        mov %ss:regs + 8, %edx
        mov %ss:regs + 12, %ebx
        mov %ss:regs + 20, %ebp
        mov %ss:regs + 24, %esi
        mov %ss:regs + 28, %edi
        iret

/* ---- COM1 output ---- */
putc:
        push %edx
        push %eax
        mov $COM1 + 5, %dx
1:      in %dx, %al
        test $0x20, %al
        jz 1b
        pop %eax
        mov $COM1, %dx
        out %al, %dx
        pop %edx
        ret

puts:
1:      lodsb
        test %al, %al
        jz 2f
        call putc
        jmp 1b
2:      ret

/* eax in decimal */
putdec:
        push %ebx
        push %ecx
        push %edx
        mov $10, %ebx
        xor %ecx, %ecx
1:      xor %edx, %edx
        div %ebx
        push %edx
        inc %ecx
        test %eax, %eax
        jnz 1b
2:      pop %eax
        add $'0', %al
        call putc
        loop 2b
        pop %edx
        pop %ecx
        pop %ebx
        ret

report_line:
        mov $s_iter, %esi
        call puts
        mov iter, %eax
        call putdec
        mov $s_exec, %esi
        call puts
        mov executed, %eax
        call putdec
        mov $s_faults, %esi
        call puts
        mov faults, %eax
        call putdec
        mov $s_irqs, %esi
        call puts
        mov interrupts, %eax
        call putdec
        mov $s_timer, %esi
        call puts
        mov timer_count, %eax
        call putdec
        mov $'\n', %al
        call putc
        ret

        .section .data
        .align 8
gdt:    .quad 0
        .quad 0x00cf9a000000ffff        /* 0x08: ring-0 code */
        .quad 0x00cf92000000ffff        /* 0x10: ring-0 data */
        .quad 0x00cffa000000ffff        /* 0x18: ring-3 code */
        .quad 0x00cff2000000ffff        /* 0x20: ring-3 data */
        .quad 0x0000890000000067        /* 0x28: TSS (base filled in) */
gdt_desc:
        .word gdt_desc - gdt - 1
        .long gdt
idt_desc:
        .word 256 * 8 - 1
        .long idt
s_iter: .asciz "guestfuzz: iterations "
s_exec: .asciz " executed "
s_faults: .asciz " faults "
s_irqs: .asciz " interrupts "
s_timer: .asciz " timer "

        .section .bss
        .align 4096
pd:     .skip 4096
pt:     .skip 4096
idt:    .skip 256 * 8
tss:    .skip 104
rng:    .long 0
count:  .long 0
timer_count: .long 0
timer_clean: .long 0
timer_doublings: .long 0
mmio_regs: .long 0
iter:   .long 0
executed: .long 0
faults: .long 0
interrupts: .long 0
in_rearm: .long 0
rearm_broken: .long 0
user_eip: .long 0
regs:   .skip 32
buf:    .skip 256
        .align 16
        .skip 16384
stack_top:
