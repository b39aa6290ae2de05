/* Entry of every vCPU, in 64-bit mode with paging on and interrupts off.
 * rdi = vCPU index (set by the VMM), rsi = the zero page (boot_params).
 * Each vCPU takes its own stack from `stacks`, then calls guest_main(index, boot_params).
 *
 * pvh_start is a second, 32-bit entry (Xen PVH, used by qemu -kernel for comparison
 * benchmarks): it builds identity page tables, enters long mode and joins _start as
 * vCPU 0 with no boot_params (so no SHM: the guest prints and resets).
 */
#define STACK_SIZE 8192
#define MAX_CPUS 1024

    .section .text.start, "ax"
    .globl _start
    .code64
_start:
    cli
    cmp     $MAX_CPUS, %rdi
    jae     1f
    mov     %rdi, %rax
    inc     %rax
    shl     $13, %rax               /* (index + 1) * STACK_SIZE */
    lea     stacks(%rip), %rsp
    add     %rax, %rsp
    xor     %rbp, %rbp
    call    guest_main
1:  cli
    hlt
    jmp     1b

    .code32
    .globl pvh_start
pvh_start:
    cli
    movl    $pvh_tables, %edi       /* zero PML4, PDPT and 4 PDs */
    xorl    %eax, %eax
    movl    $(6 * 4096 / 4), %ecx
    rep stosl
    movl    $pvh_tables, %edi
    leal    0x1003(%edi), %eax      /* PML4[0] -> PDPT */
    movl    %eax, (%edi)
    leal    0x1000(%edi), %ebx      /* PDPT[0..4] -> PD0..PD3 */
    leal    0x2003(%edi), %eax
    movl    $4, %ecx
2:  movl    %eax, (%ebx)
    addl    $8, %ebx
    addl    $0x1000, %eax
    loop    2b
    leal    0x2000(%edi), %ebx      /* 2048 x 2 MiB pages: 4 GiB identity */
    movl    $0x83, %eax
    xorl    %edx, %edx
    movl    $2048, %ecx
3:  movl    %eax, (%ebx)
    movl    %edx, 4(%ebx)
    addl    $8, %ebx
    addl    $0x200000, %eax
    adcl    $0, %edx
    loop    3b
    lgdt    pvh_gdt_ptr
    movl    %cr4, %eax
    orl     $0x20, %eax             /* PAE */
    movl    %eax, %cr4
    movl    $pvh_tables, %eax
    movl    %eax, %cr3
    movl    $0xc0000080, %ecx       /* EFER.LME */
    rdmsr
    orl     $0x100, %eax
    wrmsr
    movl    %cr0, %eax
    orl     $0x80000001, %eax       /* PG | PE */
    movl    %eax, %cr0
    ljmp    $0x08, $pvh_long

    .code64
pvh_long:
    movw    $0x10, %ax
    movw    %ax, %ds
    movw    %ax, %es
    movw    %ax, %ss
    movw    %ax, %fs
    movw    %ax, %gs
    xorl    %edi, %edi
    xorl    %esi, %esi
    jmp     _start

    .section .rodata
    .balign 8
pvh_gdt:
    .quad   0
    .quad   0x00af9a000000ffff      /* 64-bit code */
    .quad   0x00cf92000000ffff      /* data */
pvh_gdt_ptr:
    .word   23
    .long   pvh_gdt

    /* XEN_ELFNOTE_PHYS32_ENTRY (18): the 32-bit PVH entry point. */
    .section .note.pvh, "a", @note
    .balign 4
    .long   4
    .long   4
    .long   18
    .asciz  "Xen"
    .balign 4
    .long   pvh_start
    .balign 4

    .section .bss
    .balign 4096
pvh_tables:
    .space  6 * 4096
    .globl stacks
stacks:
    .space  STACK_SIZE * MAX_CPUS
