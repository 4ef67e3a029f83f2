/*
 * startup_mps2_an505.c - vector table and reset for the Cortex-M33 of MPS2 AN505 (secure state).
 * Reset_Handler sets the main stack limit (ARMv8-M MSPLIM: a stack overflow faults instead of
 * corrupting .bss), enables the FPU, copies .data, zeroes .bss and calls main(). Symbols come from
 * mps2_an505.ld and cqtf_sections.ld.
 */
#include <stdint.h>

extern uint32_t __data_load__, __data_start__, __data_end__, __bss_start__, __bss_end__;
extern uint32_t __stack_top__, __stack_limit__;

int main(void);

typedef void (*cqtf_handler_t)(void);

void Reset_Handler(void);
void Default_Handler(void);

void NMI_Handler(void) __attribute__((weak, alias("Default_Handler")));
void HardFault_Handler(void) __attribute__((weak, alias("Default_Handler")));
void MemManage_Handler(void) __attribute__((weak, alias("Default_Handler")));
void BusFault_Handler(void) __attribute__((weak, alias("Default_Handler")));
void UsageFault_Handler(void) __attribute__((weak, alias("Default_Handler")));
void SecureFault_Handler(void) __attribute__((weak, alias("Default_Handler")));
void SVC_Handler(void) __attribute__((weak, alias("Default_Handler")));
void DebugMon_Handler(void) __attribute__((weak, alias("Default_Handler")));
void PendSV_Handler(void) __attribute__((weak, alias("Default_Handler")));
void SysTick_Handler(void) __attribute__((weak, alias("Default_Handler")));
void UART0_RX_Handler(void) __attribute__((weak, alias("Default_Handler")));

/* The IoTKit's 32 internal interrupts come first; the FPGA's expansion IRQ n is IRQ 32 + n. */
#define AN505_NUM_IRQS 33
#define AN505_UART0_RX_IRQ 32 /* expansion IRQ 0 (QEMU hw/arm/mps2-tz.c: UART i rx = 2 i) */

typedef struct {
    uint32_t *initial_sp;
    cqtf_handler_t exceptions[15]; /* Reset (1) .. SysTick (15) */
    cqtf_handler_t irqs[AN505_NUM_IRQS];
} cqtf_vector_table_t;

__attribute__((section(".isr_vector"), used))
const cqtf_vector_table_t cqtf_vector_table = {
    &__stack_top__,
    {
        Reset_Handler, NMI_Handler, HardFault_Handler, MemManage_Handler, BusFault_Handler,
        UsageFault_Handler, SecureFault_Handler, 0, 0, 0, SVC_Handler, DebugMon_Handler, 0,
        PendSV_Handler, SysTick_Handler,
    },
    {
        [AN505_UART0_RX_IRQ] = UART0_RX_Handler, /* the rest stay disabled */
    },
};

#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)

void Reset_Handler(void)
{
    uint32_t *src = &__data_load__;
    uint32_t *dst;

    __asm volatile("msr msplim, %0" : : "r"(&__stack_limit__));
#if defined(__ARM_FP)
    SCB_CPACR |= 0xFu << 20; /* CP10/CP11 full access before any floating-point instruction */
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
