/* PVH entry of the mini guest. The VMM enters here in 32-bit protected mode, paging off,
 * flat segments, EBX = physical address of hvm_start_info (Xen PVH ABI). */
    .section .note.Xen, "a", @note
    .balign 4
    .long 4                 /* namesz: "Xen\0" */
    .long 4                 /* descsz */
    .long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .long _start
    .balign 4

    .section .text.entry, "ax"
    .code32
    .globl _start
_start:
    cli
    mov $stack_top, %esp
    push %ebx               /* hvm_start_info */
    call mini_main
1:  hlt
    jmp 1b

/* Interrupt stubs: save registers, call irq_handler(vector), then return without iret:
 * after popa the stack holds EIP, CS, EFLAGS; push a copy of EFLAGS, popfl restores it
 * (IF included), and `ret $8` returns to EIP dropping CS and EFLAGS. */
    .macro ISR vector
    .globl isr_\vector
isr_\vector:
    pusha
    push $0x\vector
    call irq_handler
    add $4, %esp
    popa
    pushl 8(%esp)
    popfl
    ret $8
    .endm
    ISR 30
    ISR 31
    ISR 32
    ISR 33

    .section .bss
    .balign 16
stack:
    .skip 16384
stack_top:

    .section .note.GNU-stack, "", @progbits
