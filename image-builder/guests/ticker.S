/*
 * A guest whose serial console keeps moving: a Multiboot (v1) ELF32 kernel
 * that prints "tick " and a counter (8 hex digits) on COM1 after a pause,
 * forever. hostd's restart test watches it: after hostd is killed and
 * restarted by init, the same VM's console has gone on counting.
 */
        .code32
        .set MB_MAGIC, 0x1badb002
        .set MB_FLAGS, 0x00000003
        .set COM1, 0x3f8

        .section .text
        .align 4
        .long MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)

        .globl _start
_start:
        cli
        mov $stack_top, %esp
        xor %ebx, %ebx            /* the counter */
tick:
        mov $0x40000, %ecx        /* a pause between ticks */
1:      pause
        loop 1b
        mov $prefix, %esi
        call puts
        mov $8, %edi              /* 8 hex digits, most significant first */
2:      rol $4, %ebx
        mov %ebx, %eax
        and $0xf, %eax
        mov hex(%eax), %al
        call putc
        dec %edi
        jnz 2b
        mov $'\n', %al
        call putc
        inc %ebx
        jmp tick

/* al -> COM1, polling the transmitter-empty bit like a real driver */
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

/* esi -> NUL-terminated string */
puts:
        lodsb
        test %al, %al
        jz 1f
        call putc
        jmp puts
1:      ret

        .section .data
prefix:  .asciz "tick "
hex:     .ascii "0123456789abcdef"

        .section .bss
        .align 16
        .skip 4096
stack_top:
