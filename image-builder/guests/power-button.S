/*
 * A guest that shuts down gracefully when its ACPI power button is pressed
 * (hostd's guest shutdown, `vmkcli vm shutdown`, CIM RequestStateChange(4)):
 * a Multiboot (v1) ELF32 kernel that prints a banner on COM1, sets
 * PWRBTN_EN in the PM1 enable register (the FADT's block at 0x600, so the
 * VMM knows it listens), then polls PM1 status. On the button it clears the
 * status, says so on COM1 and enters S5 (SLP_EN with SLP_TYP 5, the `\_S5`
 * value in the DSDT Mantle gives its guests), as an OS's ACPI driver
 * would. It never exits by itself, so it also serves pause, resume and
 * reset (a reset prints the banner again).
 */
        .code32
        .set MB_MAGIC, 0x1badb002
        .set MB_FLAGS, 0x00000003
        .set COM1, 0x3f8
        .set PM1_STS, 0x600
        .set PM1_EN, 0x602
        .set PM1_CNT, 0x604
        .set PWRBTN, 1 << 8
        .set S5_SLEEP, 5 << 10 | 1 << 13 | 1

        .section .text
        .align 4
        .long MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)

        .globl _start
_start:
        cli
        mov $stack_top, %esp
        mov $banner, %esi
        call puts
        mov $PM1_EN, %dx
        mov $PWRBTN, %ax
        out %ax, %dx
poll:
        /* a pause between polls: each port read is a VM exit */
        mov $0x20000, %ecx
1:      pause
        loop 1b
        mov $PM1_STS, %dx
        in %dx, %ax
        test $PWRBTN, %ax
        jz poll
        mov $PWRBTN, %ax          /* write 1 to clear */
        out %ax, %dx
        mov $pressed, %esi
        call puts
        mov $PM1_CNT, %dx
        mov $S5_SLEEP, %ax
        out %ax, %dx
2:      hlt                       /* not reached: S5 powers the VM off */
        jmp 2b

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
banner:  .asciz "power-button guest: up, waiting for the ACPI power button\n"
pressed: .asciz "power-button guest: power button pressed, entering S5\n"

        .section .bss
        .align 16
        .skip 4096
stack_top:
