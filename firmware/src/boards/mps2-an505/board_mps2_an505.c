/*
 * board_mps2_an505.c - board.h for Arm MPS2 AN505 (Cortex-M33 IoT Kit), as emulated by QEMU 7.2,
 * running in secure state only: CMSDK APB UART0 for the link, SysTick for board_ticks().
 *
 * UART0 is at 0x40200000, reached through its secure alias 0x50200000 (the IDAU marks addresses
 * with bit 28 set secure); its receive interrupt is expansion IRQ 0 = IRQ 32. After reset every
 * peripheral protection controller port is secure, so no TrustZone set-up is needed.
 *
 * Ticks: SysTick runs from the 20 MHz main clock. Under QEMU with `-icount shift=0` one instruction
 * takes 1 ns, so one tick = 50 instructions (measured by tests/test_boards.py's calibration).
 * On a real board a tick is one processor clock cycle.
 */
#include <stdint.h>

#include "board.h"

#ifndef CQTF_BOARD_NAME
#error "CQTF_BOARD_NAME undefined: build with -DCQTF_BOARD_NAME='\"mps2-an505\"'"
#endif

#define AN505_SYSCLK_HZ 20000000u
#define AN505_UART_BAUD 115200u /* QEMU ignores it; a real board needs it */

/* CMSDK APB UART0, secure alias */
#define UART0_BASE 0x50200000u
#define UART0_DATA (*(volatile uint32_t *)(UART0_BASE + 0x00u))
#define UART0_STATE (*(volatile uint32_t *)(UART0_BASE + 0x04u))
#define UART0_CTRL (*(volatile uint32_t *)(UART0_BASE + 0x08u))
#define UART0_INTCLEAR (*(volatile uint32_t *)(UART0_BASE + 0x0Cu))
#define UART0_BAUDDIV (*(volatile uint32_t *)(UART0_BASE + 0x10u))
#define UART_STATE_TX_FULL (1u << 0)
#define UART_STATE_RX_FULL (1u << 1)
#define UART_STATE_RX_OVERRUN (1u << 3)
#define UART_CTRL_TX_EN (1u << 0)
#define UART_CTRL_RX_EN (1u << 1)
#define UART_CTRL_RX_INTEN (1u << 3)
#define UART_INT_RX (1u << 1)
#define UART0_RX_IRQ 32u

/* SysTick, NVIC and SCB */
#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define SYST_CSR_ENABLE (1u << 0)
#define SYST_CSR_TICKINT (1u << 1)
#define SYST_CSR_CLKSOURCE_CPU (1u << 2)
#define SYST_PERIOD (1u << 24) /* the largest: fewest interrupts */
#define NVIC_ISER(n) (*(volatile uint32_t *)(0xE000E100u + 4u * (n)))
#define SCB_ICSR (*(volatile uint32_t *)0xE000ED04u)
#define SCB_ICSR_PENDSTSET (1u << 26)

/* Completed SysTick periods: the upper bits of board_ticks(). Written by the handler only. */
static volatile uint32_t systick_periods;

void SysTick_Handler(void)
{
    systick_periods = systick_periods + 1u;
}

/* Its only job is to wake board_uart_read_byte()'s WFI; acknowledging stops it re-firing. */
void UART0_RX_Handler(void)
{
    UART0_INTCLEAR = UART_INT_RX;
}

void board_init(void)
{
    UART0_BAUDDIV = AN505_SYSCLK_HZ / AN505_UART_BAUD; /* CMSDK requires >= 16 */
    UART0_CTRL = UART_CTRL_TX_EN | UART_CTRL_RX_EN | UART_CTRL_RX_INTEN;
    NVIC_ISER(UART0_RX_IRQ / 32u) = 1u << (UART0_RX_IRQ % 32u);

    SYST_RVR = SYST_PERIOD - 1u;
    SYST_CVR = 0;
    SYST_CSR = SYST_CSR_CLKSOURCE_CPU | SYST_CSR_TICKINT | SYST_CSR_ENABLE;
}

/* One volatile store per byte and none after the loop (see boards/mps2/board_mps2.c and the
 * toolchain notes on gcc 12.2 -O2); the echo tests catch a duplicated byte. */
void board_uart_write(const uint8_t *data, uint32_t len)
{
    uint32_t i;

    for (i = 0; i < len; ++i) {
        while (UART0_STATE & UART_STATE_TX_FULL) {
        }
        UART0_DATA = data[i];
    }
}

/* WFI with interrupts masked around the check, as on mps2 (board_mps2.c explains why). */
uint8_t board_uart_read_byte(void)
{
    uint32_t state;

    __asm volatile("cpsid i" ::: "memory");
    while (!((state = UART0_STATE) & UART_STATE_RX_FULL)) {
        __asm volatile("wfi" ::: "memory");
        __asm volatile("cpsie i\n\tisb\n\tcpsid i" ::: "memory");
    }
    __asm volatile("cpsie i" ::: "memory");
    if (state & UART_STATE_RX_OVERRUN) {
        UART0_STATE = UART_STATE_RX_OVERRUN; /* write 1 to clear; the lost byte fails the CRC */
    }
    return (uint8_t)UART0_DATA;
}

/* The UART's single data register is all: no request may be pipelined behind the current one. */
uint16_t board_rx_buffer(void)
{
    return 0u;
}

/* 32-bit ticks from SysTick periods and the current count; see board_mps2.c for the reasoning. */
uint32_t board_ticks(void)
{
    uint32_t periods, elapsed, pending;

    do {
        periods = systick_periods;
        elapsed = (0u - SYST_CVR) & (SYST_PERIOD - 1u);
        pending = SCB_ICSR & SCB_ICSR_PENDSTSET;
    } while (periods != systick_periods);
    if (pending && elapsed < SYST_PERIOD / 2u) {
        ++periods;
    }
    return (periods << 24) + elapsed;
}

const char *board_name(void)
{
    return CQTF_BOARD_NAME;
}
