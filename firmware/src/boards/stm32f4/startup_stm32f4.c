/*
 * startup_stm32f4.c - vector table and reset for STM32F4 (Cortex-M4F): FPU on, .data copied,
 * .bss zeroed, main(). Symbols come from the board's linker script and cqtf_sections.ld.
 */
#include <stdint.h>

extern uint32_t __data_load__, __data_start__, __data_end__, __bss_start__, __bss_end__;
extern uint32_t __stack_top__;

int main(void);

typedef void (*cqtf_handler_t)(void);

void Reset_Handler(void);
void Default_Handler(void);

void NMI_Handler(void) __attribute__((weak, alias("Default_Handler")));
void HardFault_Handler(void) __attribute__((weak, alias("Default_Handler")));
void MemManage_Handler(void) __attribute__((weak, alias("Default_Handler")));
void BusFault_Handler(void) __attribute__((weak, alias("Default_Handler")));
void UsageFault_Handler(void) __attribute__((weak, alias("Default_Handler")));
void SVC_Handler(void) __attribute__((weak, alias("Default_Handler")));
void DebugMon_Handler(void) __attribute__((weak, alias("Default_Handler")));
void PendSV_Handler(void) __attribute__((weak, alias("Default_Handler")));
void SysTick_Handler(void) __attribute__((weak, alias("Default_Handler")));
void USART1_IRQHandler(void) __attribute__((weak, alias("Default_Handler")));
void USART2_IRQHandler(void) __attribute__((weak, alias("Default_Handler")));

#define STM32F4_USART1_IRQ 37 /* RM0090 / RM0390 vector tables */
#define STM32F4_USART2_IRQ 38
#define STM32F4_NUM_IRQS 39   /* up to USART2; the rest stay disabled */

typedef struct {
    uint32_t *initial_sp;
    cqtf_handler_t exceptions[15]; /* Reset (1) .. SysTick (15) */
    cqtf_handler_t irqs[STM32F4_NUM_IRQS];
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
        [STM32F4_USART1_IRQ] = USART1_IRQHandler,
        [STM32F4_USART2_IRQ] = USART2_IRQHandler,
    },
};

#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)

void Reset_Handler(void)
{
    uint32_t *src = &__data_load__;
    uint32_t *dst;

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
