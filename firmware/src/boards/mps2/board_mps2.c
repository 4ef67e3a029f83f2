/*
 * board_mps2.c - board.h for Arm MPS2 (AN385 Cortex-M3, AN386 Cortex-M4F, AN500 Cortex-M7), as
 * emulated by QEMU 7.2: CMSDK APB UART0 for the link, SysTick for board_ticks().
 *
 * Ticks: SysTick runs from the 25 MHz processor clock. Under QEMU with `-icount shift=0` one
 * instruction takes 1 ns of virtual time, so one tick = 40 instructions, measured: a loop of
 * 4,000,000 instructions read 100,000 ticks on mps2-an385, -an386 and -an500. QEMU counts
 * instructions, not cycles. On a real board a tick is one processor clock cycle.
 *
 * The board name comes from the build: -DCQTF_BOARD_NAME=\"mps2-an386\".
 */
#include <stdint.h>

#include "board.h"

#ifndef CQTF_BOARD_NAME
#error "CQTF_BOARD_NAME undefined: build with -DCQTF_BOARD_NAME='\"mps2-an386\"'"
#endif

#define MPS2_SYSCLK_HZ 25000000u
#define MPS2_UART_BAUD 115200u /* QEMU ignores it; real MPS2 boards need it */

/* CMSDK APB UART0 */
#define UART0_BASE 0x40004000u
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
#define UART0_RX_IRQ 0u

/* SysTick, NVIC and SCB */
#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define SYST_CSR_ENABLE (1u << 0)
#define SYST_CSR_TICKINT (1u << 1)
#define SYST_CSR_CLKSOURCE_CPU (1u << 2)
#define SYST_PERIOD (1u << 24) /* the largest: fewest interrupts */
#define NVIC_ISER0 (*(volatile uint32_t *)0xE000E100u)
#define SCB_ICSR (*(volatile uint32_t *)0xE000ED04u)
#define SCB_ICSR_PENDSTSET (1u << 26)

/* Completed SysTick periods: the upper bits of board_ticks(). Written by the handler only. */
static volatile uint32_t systick_periods;

void SysTick_Handler(void)
{
    systick_periods = systick_periods + 1u;
}

/* Received bytes, filled by the RX interrupt: the CMSDK UART holds one byte, so without a ring a
 * request pipelined behind the one being computed would overrun it on real hardware. INFO
 * reports the ring's size (board_rx_buffer()) and the host keeps no more bytes in flight. When
 * the ring is full the handler leaves the byte in the UART and masks itself: QEMU then holds
 * further bytes back (flow control), a real UART overruns and the host retries. */
#define RX_RING_SIZE 256u /* a power of two */
static volatile uint8_t rx_ring[RX_RING_SIZE];
static volatile uint32_t rx_head; /* written by the handler only */
static volatile uint32_t rx_tail; /* written by board_uart_read_byte() only */

void UART0_RX_Handler(void)
{
    UART0_INTCLEAR = UART_INT_RX;
    while (UART0_STATE & UART_STATE_RX_FULL) {
        const uint32_t head = rx_head;

        if (head - rx_tail >= RX_RING_SIZE) {
            UART0_CTRL = UART_CTRL_TX_EN | UART_CTRL_RX_EN; /* read_byte() unmasks it */
            break;
        }
        rx_ring[head % RX_RING_SIZE] = (uint8_t)UART0_DATA;
        rx_head = head + 1u;
    }
    if (UART0_STATE & UART_STATE_RX_OVERRUN) {
        UART0_STATE = UART_STATE_RX_OVERRUN; /* write 1 to clear; the lost byte fails the CRC */
    }
}

void board_init(void)
{
    UART0_BAUDDIV = MPS2_SYSCLK_HZ / MPS2_UART_BAUD; /* CMSDK requires >= 16 */
    UART0_CTRL = UART_CTRL_TX_EN | UART_CTRL_RX_EN | UART_CTRL_RX_INTEN;
    NVIC_ISER0 = 1u << UART0_RX_IRQ;

    SYST_RVR = SYST_PERIOD - 1u;
    SYST_CVR = 0; /* any write clears it; the first clock loads RVR without an interrupt */
    SYST_CSR = SYST_CSR_CLKSOURCE_CPU | SYST_CSR_TICKINT | SYST_CSR_ENABLE;
}

/* One volatile store per byte and none after the loop: checked in the -O2 disassembly of
 * arm-none-eabi-gcc 12.2, which is known to have duplicated the last store of similar loops
 * (shared/notes/toolchain.md). Host tests catch a regression as a stray byte after a frame. */
void board_uart_write(const uint8_t *data, uint32_t len)
{
    uint32_t i;

    for (i = 0; i < len; ++i) {
        while (UART0_STATE & UART_STATE_TX_FULL) {
        }
        UART0_DATA = data[i];
    }
}

/* Sleeps in WFI while nothing has arrived, so an idle QEMU does not burn a host core. Interrupts
 * are masked around the check so a byte arriving just before WFI still wakes it (WFI wakes on a
 * pending interrupt even when masked); unmasking lets the handlers run. The ring holds the older
 * bytes, so the UART's own register is read only once the ring is empty. */
uint8_t board_uart_read_byte(void)
{
    uint8_t byte;

    __asm volatile("cpsid i" ::: "memory");
    while (rx_head == rx_tail && !(UART0_STATE & UART_STATE_RX_FULL)) {
        __asm volatile("wfi" ::: "memory");
        __asm volatile("cpsie i\n\tisb\n\tcpsid i" ::: "memory");
    }
    if (rx_head != rx_tail) {
        byte = rx_ring[rx_tail % RX_RING_SIZE];
        rx_tail = rx_tail + 1u;
    } else {
        byte = (uint8_t)UART0_DATA;
    }
    UART0_CTRL = UART_CTRL_TX_EN | UART_CTRL_RX_EN | UART_CTRL_RX_INTEN; /* the ring has room */
    __asm volatile("cpsie i" ::: "memory");
    return byte;
}

uint16_t board_rx_buffer(void)
{
    return (uint16_t)RX_RING_SIZE;
}

/* 32-bit ticks = completed periods x 2^24 + ticks into the current period. SysTick counts down and
 * pends its interrupt on reaching 0, so the period starts at CVR = 0 and the elapsed part is
 * (-CVR) mod 2^24. A wrap not yet counted by the handler shows as a pending SysTick: it belongs
 * to this reading only if CVR was read after it (a small elapsed value). Checked on QEMU
 * mps2-an386: 40 million readings across a period boundary, none going back or skipping a tick. */
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
