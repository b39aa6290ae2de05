/* Entry of every vCPU, in 64-bit mode with paging on and interrupts off.
 * rdi = vCPU index (set by the VMM), rsi = the zero page (boot_params).
 * Each vCPU takes its own stack from `stacks`, then calls guest_main(index, boot_params).
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

    .section .bss
    .balign 4096
    .globl stacks
stacks:
    .space  STACK_SIZE * MAX_CPUS
