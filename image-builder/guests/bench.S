/*
 * Benchmark guests: Multiboot (v1) ELF32 kernels that time themselves with
 * RDTSC and print the figures on COM1 (`bench: <name> 0x<hex> ...`), then
 * report 0x10 through the debug-exit port. The same binaries boot under
 * Mantle (`image-builder bench vm`) and directly in QEMU (`-kernel`).
 *
 *   MODE 1  cpuid: N=1000 CPUID(0) in a loop and the same loop without
 *           CPUID. Under QEMU's -icount the TSC counts instructions, so the
 *           difference per iteration is the host's exit round trip. Then
 *           both timed per iteration: the least of each (`cpuid-min`,
 *           `empty-min`) leaves out iterations a host timer tick hit.
 *   MODE 2  work: a sieve of Eratosthenes over 8 Mi numbers (1 MiB bitmap)
 *           four times: CPU and memory, no exits.
 */
        .code32
        .set MB_MAGIC, 0x1badb002
        .set MB_FLAGS, 0x00000003
        .set COM1, 0x3f8
        .set N, 1000
        .set SIEVE_BITS, 8 * 1024 * 1024

        .section .text
        .align 4
        .long MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)

        .globl _start
_start:
        cli
        mov $stack_top, %esp
        call run
        mov $0x10, %eax
        mov $0xf4, %dx
        out %eax, %dx
1:      hlt
        jmp 1b

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
        push %eax
1:      lodsb
        test %al, %al
        jz 2f
        call putc
        jmp 1b
2:      pop %eax
        ret

/* edx:eax -> " 0x" and 16 hex digits */
puthex64:
        push %ecx
        push %ebx
        mov %eax, %ebx
        mov $' ', %al
        call putc
        mov $'0', %al
        call putc
        mov $'x', %al
        call putc
        mov %edx, %eax
        call hex32
        mov %ebx, %eax
        call hex32
        pop %ebx
        pop %ecx
        ret
hex32:
        mov $8, %ecx
1:      rol $4, %eax
        push %eax
        and $0xf, %eax
        movb hexdigits(%eax), %al
        call putc
        pop %eax
        loop 1b
        ret

/* t0 := TSC */
tsc_start:
        rdtsc
        mov %eax, t0
        mov %edx, t0 + 4
        ret
/* edx:eax := TSC - t0 */
tsc_elapsed:
        rdtsc
        sub t0, %eax
        sbb t0 + 4, %edx
        ret

run:
.if MODE == 1
        mov $100, %edi                  /* warm up */
1:      xor %eax, %eax
        cpuid
        dec %edi
        jnz 1b
        call tsc_start
        mov $N, %edi
2:      xor %eax, %eax
        cpuid
        dec %edi
        jnz 2b
        call tsc_elapsed
        mov $msg_cpuid, %esi
        call puts
        call puthex64
        mov $msg_nl, %esi
        call puts
        call tsc_start
        mov $N, %edi
3:      xor %eax, %eax
        dec %edi
        jnz 3b
        call tsc_elapsed
        mov $msg_empty, %esi
        call puts
        call puthex64
        mov $msg_iters, %esi
        call puts
        xor %edx, %edx
        mov $N, %eax
        call puthex64
        mov $msg_nl, %esi
        call puts
        /* The same, timed per iteration: the least CPUID and the least
           empty iteration. A host timer tick (or anything else the host
           does between some exits) lengthens a few iterations and never
           the least, so the difference is the exit round trip alone. */
        movl $0xffffffff, best
        mov $N, %edi
7:      rdtsc
        mov %eax, %esi
        xor %eax, %eax
        cpuid
        rdtsc
        sub %esi, %eax
        cmp best, %eax
        jae 8f
        mov %eax, best
8:      dec %edi
        jnz 7b
        mov $msg_cpuid_min, %esi
        call puts
        xor %edx, %edx
        mov best, %eax
        call puthex64
        movl $0xffffffff, best
        mov $N, %edi
9:      rdtsc
        mov %eax, %esi
        xor %eax, %eax
        rdtsc
        sub %esi, %eax
        cmp best, %eax
        jae 10f
        mov %eax, best
10:     dec %edi
        jnz 9b
        mov $msg_empty_min, %esi
        call puts
        xor %edx, %edx
        mov best, %eax
        call puthex64
        mov $msg_nl, %esi
        call puts
        ret
.endif

.if MODE == 2
        call tsc_start
        mov $4, %ebp
1:      cld                             /* all numbers are candidates */
        mov $bitmap, %edi
        mov $SIEVE_BITS / 32, %ecx
        mov $0xffffffff, %eax
        rep stosl
        mov $2, %ebx                    /* p */
2:      mov %ebx, %eax
        mul %ebx
        cmp $SIEVE_BITS, %eax
        jae 5f
        bt %ebx, bitmap
        jnc 4f
        mov %eax, %ecx                  /* strike p*p, p*p+p, ... */
3:      btr %ecx, bitmap
        add %ebx, %ecx
        cmp $SIEVE_BITS, %ecx
        jb 3b
4:      inc %ebx
        jmp 2b
5:      dec %ebp
        jnz 1b
        xor %eax, %eax                  /* count primes 2..SIEVE_BITS-1 */
        mov $2, %ecx
6:      bt %ecx, bitmap
        adc $0, %eax
        inc %ecx
        cmp $SIEVE_BITS, %ecx
        jb 6b
        mov %eax, primes
        call tsc_elapsed
        mov $msg_work, %esi
        call puts
        call puthex64
        mov $msg_primes, %esi
        call puts
        xor %edx, %edx
        mov primes, %eax
        call puthex64
        mov $msg_nl, %esi
        call puts
        ret
.endif

        .section .data
hexdigits: .ascii "0123456789abcdef"
msg_cpuid: .asciz "bench: cpuid-loop"
msg_empty: .asciz "bench: empty-loop"
msg_iters: .asciz " iterations"
msg_cpuid_min: .asciz "bench: cpuid-min"
msg_empty_min: .asciz " empty-min"
msg_work:  .asciz "bench: work"
msg_primes: .asciz " primes"
msg_nl:    .asciz "\n"

        .section .bss
        .align 16
t0:     .quad 0
best:   .long 0
primes: .long 0
        .skip 16384
stack_top:
        .align 4096
bitmap: .skip SIEVE_BITS / 8
