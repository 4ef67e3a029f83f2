/*
 * startup_mps2.c - vector table and reset for Cortex-M3/M4/M7 on MPS2, in C.
 * Reset_Handler enables the FPU (when the build uses it), copies .data from its load address,
 * zeroes .bss and calls main(). Symbols come from mps2.ld.
 */
#include <stdint.h>

extern uint32_t __data_load__, __data_start__, __data_end__, __bss_start__, __bss_end__;
extern uint32_t __stack_top__;

int main(void);

typedef void (*cqtf_handler_t)(void);

void Reset_Handler(void);
void Default_Handler(void);

/* Weak: a board file defines the ones it uses (board_mps2.c: SysTick_Handler). */
void NMI_Handler(void) __attribute__((weak, alias("Default_Handler")));
void HardFault_Handler(void) __attribute__((weak, alias("Default_Handler")));
void MemManage_Handler(void) __attribute__((weak, alias("Default_Handler")));
void BusFault_Handler(void) __attribute__((weak, alias("Default_Handler")));
void UsageFault_Handler(void) __attribute__((weak, alias("Default_Handler")));
void SVC_Handler(void) __attribute__((weak, alias("Default_Handler")));
void DebugMon_Handler(void) __attribute__((weak, alias("Default_Handler")));
void PendSV_Handler(void) __attribute__((weak, alias("Default_Handler")));
void SysTick_Handler(void) __attribute__((weak, alias("Default_Handler")));
void UART0_RX_Handler(void) __attribute__((weak, alias("Default_Handler")));

#define MPS2_NUM_IRQS 32

/* A struct rather than an array, so the stack pointer needs no pointer-type cast. */
typedef struct {
    uint32_t *initial_sp;
    cqtf_handler_t exceptions[15]; /* Reset (1) .. SysTick (15) */
    cqtf_handler_t irqs[MPS2_NUM_IRQS];
} cqtf_vector_table_t;

__attribute__((section(".isr_vector"), used))
const cqtf_vector_table_t cqtf_vector_table = {
    &__stack_top__,
    {
        Reset_Handler, NMI_Handler, HardFault_Handler, MemManage_Handler, BusFault_Handler,
        UsageFault_Handler, 0, 0, 0, 0, SVC_Handler, DebugMon_Handler, 0, PendSV_Handler,
        SysTick_Handler,
    },
    {
        UART0_RX_Handler, /* IRQ 0: UART0 receive on AN385/AN386/AN500; the rest stay disabled */
    },
};

#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)

void Reset_Handler(void)
{
    uint32_t *src = &__data_load__;
    uint32_t *dst;

#if defined(__ARM_FP)
    /* Full access to CP10/CP11 before any floating-point instruction can run (hard-float ABI). */
    SCB_CPACR |= 0xFu << 20;
    __asm volatile("dsb\n\tisb" ::: "memory");
#endif
    for (dst = &__data_start__; dst < &__data_end__; ++dst) {
        *dst = *src++;
    }
    for (dst = &__bss_start__; dst < &__bss_end__; ++dst) {
        *dst = 0;
    }
    (void)main();
    for (;;) {
    }
}

/* Unexpected exception or fault: park here, where a debugger will find it (the host times out). */
void Default_Handler(void)
{
    for (;;) {
    }
}
