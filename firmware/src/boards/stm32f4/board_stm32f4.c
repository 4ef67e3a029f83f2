/*
 * board_stm32f4.c - board.h for bare-metal STM32F4 (Cortex-M4F): one USART for the link, the DWT
 * cycle counter (or SysTick) for board_ticks(). Runs on QEMU's netduinoplus2 (STM32F405) and on real
 * boards such as a Nucleo-F446RE.
 *
 * Build switches (platformio.ini):
 *   CQTF_STM32_USART    1: USART1 on PA9/PA10 (QEMU netduinoplus2's first serial port)
 *                       2: USART2 on PA2/PA3 (the ST-LINK virtual COM port of Nucleo-64 boards)
 *   CQTF_STM32_HCLK_HZ  core clock the baud rate divider is computed from; the default is the
 *                       16 MHz HSI the chip runs on after reset (this code does not start the PLL)
 *
 * Clocks and pins are set up as on the real chip; QEMU 7.2 models neither RCC nor GPIO (writes are
 * ignored) and ignores the baud rate.
 *
 * Ticks: the DWT cycle counter when it runs (real hardware: one tick = one core clock cycle).
 * QEMU does not emulate it (it reads 0), so board_init() falls back to SysTick on the core clock,
 * which QEMU's netduinoplus2 runs at 168 MHz: under `-icount shift=0` (1 ns per instruction) one
 * tick = 1000/168 = 5.95 instructions (host/emulator.py, checked by tests/test_boards.py).
 */
#include <stdint.h>

#include "board.h"

#ifndef CQTF_BOARD_NAME
#error "CQTF_BOARD_NAME undefined: build with -DCQTF_BOARD_NAME='\"nucleo_f446re\"'"
#endif
#ifndef CQTF_STM32_USART
#define CQTF_STM32_USART 2
#endif
#ifndef CQTF_STM32_HCLK_HZ
#define CQTF_STM32_HCLK_HZ 16000000u
#endif
#define STM32_UART_BAUD 115200u

/* RCC and GPIOA (RM0090 / RM0390) */
#define RCC_AHB1ENR (*(volatile uint32_t *)0x40023830u)
#define RCC_APB1ENR (*(volatile uint32_t *)0x40023840u)
#define RCC_APB2ENR (*(volatile uint32_t *)0x40023844u)
#define RCC_AHB1ENR_GPIOAEN (1u << 0)
#define RCC_APB1ENR_USART2EN (1u << 17)
#define RCC_APB2ENR_USART1EN (1u << 4)
#define GPIOA_MODER (*(volatile uint32_t *)0x40020000u)
#define GPIOA_AFR(n) (*(volatile uint32_t *)(0x40020020u + 4u * (n)))
#define GPIO_MODE_AF 2u
#define GPIO_AF7_USART 7u

#if CQTF_STM32_USART == 1
#define USART_BASE 0x40011000u
#define USART_IRQ 37u
#define USART_TX_PIN 9u
#define USART_RX_PIN 10u
#define USART_IRQ_HANDLER USART1_IRQHandler
#elif CQTF_STM32_USART == 2
#define USART_BASE 0x40004400u
#define USART_IRQ 38u
#define USART_TX_PIN 2u
#define USART_RX_PIN 3u
#define USART_IRQ_HANDLER USART2_IRQHandler
#else
#error "CQTF_STM32_USART must be 1 or 2"
#endif

#define USART_SR (*(volatile uint32_t *)(USART_BASE + 0x00u))
#define USART_DR (*(volatile uint32_t *)(USART_BASE + 0x04u))
#define USART_BRR (*(volatile uint32_t *)(USART_BASE + 0x08u))
#define USART_CR1 (*(volatile uint32_t *)(USART_BASE + 0x0Cu))
#define USART_SR_RXNE (1u << 5)
#define USART_SR_TXE (1u << 7)
#define USART_CR1_UE (1u << 13)
#define USART_CR1_RXNEIE (1u << 5)
#define USART_CR1_TE (1u << 3)
#define USART_CR1_RE (1u << 2)

/* SysTick, NVIC, DWT */
#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define SYST_CSR_ENABLE (1u << 0)
#define SYST_CSR_TICKINT (1u << 1)
#define SYST_CSR_CLKSOURCE_CPU (1u << 2)
#define SYST_PERIOD (1u << 24)
#define NVIC_ISER(n) (*(volatile uint32_t *)(0xE000E100u + 4u * (n)))
#define SCB_ICSR (*(volatile uint32_t *)0xE000ED04u)
#define SCB_ICSR_PENDSTSET (1u << 26)
#define DEMCR (*(volatile uint32_t *)0xE000EDFCu)
#define DEMCR_TRCENA (1u << 24)
#define DWT_CTRL (*(volatile uint32_t *)0xE0001000u)
#define DWT_CYCCNT (*(volatile uint32_t *)0xE0001004u)
#define DWT_CTRL_CYCCNTENA (1u << 0)

/* Received bytes, filled by the USART interrupt. STM32's RXNE interrupt is a level that stays up
 * until DR is read, so the handler must read the byte (a bare wake-up handler would re-enter
 * forever); a ring also keeps bytes arriving while an inference runs on real hardware. */
#define RX_RING_SIZE 256u /* a power of two */
static volatile uint8_t rx_ring[RX_RING_SIZE];
static volatile uint32_t rx_head; /* written by the handler only */
static volatile uint32_t rx_tail; /* written by board_uart_read_byte() only */
static volatile uint32_t rx_dropped; /* ring full: the frame fails its CRC, the host retries */

static volatile uint32_t systick_periods;
static uint32_t use_dwt; /* 1 when the DWT cycle counter runs */

void SysTick_Handler(void)
{
    systick_periods = systick_periods + 1u;
}

void USART_IRQ_HANDLER(void)
{
    while (USART_SR & USART_SR_RXNE) {
        const uint8_t byte = (uint8_t)USART_DR; /* SR then DR also clears an overrun */
        const uint32_t head = rx_head;

        if (head - rx_tail < RX_RING_SIZE) {
            rx_ring[head % RX_RING_SIZE] = byte;
            rx_head = head + 1u;
        } else {
            rx_dropped = rx_dropped + 1u;
        }
    }
}

static void pin_alternate(uint32_t pin, uint32_t af)
{
    GPIOA_MODER = (GPIOA_MODER & ~(3u << (2u * pin))) | (GPIO_MODE_AF << (2u * pin));
    GPIOA_AFR(pin / 8u) = (GPIOA_AFR(pin / 8u) & ~(0xFu << (4u * (pin % 8u)))) |
                          (af << (4u * (pin % 8u)));
}

static void ticks_init(void)
{
    DEMCR |= DEMCR_TRCENA;
    DWT_CYCCNT = 0;
    DWT_CTRL |= DWT_CTRL_CYCCNTENA;
    __asm volatile("nop\n\tnop\n\tnop\n\tnop" ::: "memory");
    use_dwt = (DWT_CYCCNT != 0u);
    if (!use_dwt) {
        SYST_RVR = SYST_PERIOD - 1u;
        SYST_CVR = 0;
        SYST_CSR = SYST_CSR_CLKSOURCE_CPU | SYST_CSR_TICKINT | SYST_CSR_ENABLE;
    }
}

void board_init(void)
{
    RCC_AHB1ENR |= RCC_AHB1ENR_GPIOAEN;
#if CQTF_STM32_USART == 1
    RCC_APB2ENR |= RCC_APB2ENR_USART1EN;
#else
    RCC_APB1ENR |= RCC_APB1ENR_USART2EN;
#endif
    (void)RCC_AHB1ENR; /* a read-back lets the enabled clocks settle before the first access */
    pin_alternate(USART_TX_PIN, GPIO_AF7_USART);
    pin_alternate(USART_RX_PIN, GPIO_AF7_USART);

    USART_BRR = (CQTF_STM32_HCLK_HZ + STM32_UART_BAUD / 2u) / STM32_UART_BAUD; /* oversampling 16 */
    USART_CR1 = USART_CR1_UE | USART_CR1_TE | USART_CR1_RE | USART_CR1_RXNEIE;
    NVIC_ISER(USART_IRQ / 32u) = 1u << (USART_IRQ % 32u);
    ticks_init();
}

/* One volatile store per byte and none after the loop (toolchain notes: gcc 12.2 -O2 once
 * duplicated such a store); the echo tests catch a duplicated byte. */
void board_uart_write(const uint8_t *data, uint32_t len)
{
    uint32_t i;

    for (i = 0; i < len; ++i) {
        while (!(USART_SR & USART_SR_TXE)) {
        }
        USART_DR = data[i];
    }
}

/* Sleeps in WFI while the ring is empty; interrupts are masked around the check so that a byte
 * arriving just before WFI still wakes it (a pending interrupt wakes WFI even when masked). */
uint8_t board_uart_read_byte(void)
{
    uint8_t byte;

    __asm volatile("cpsid i" ::: "memory");
    while (rx_head == rx_tail) {
        __asm volatile("wfi" ::: "memory");
        __asm volatile("cpsie i\n\tisb\n\tcpsid i" ::: "memory");
    }
    byte = rx_ring[rx_tail % RX_RING_SIZE];
    rx_tail = rx_tail + 1u;
    __asm volatile("cpsie i" ::: "memory");
    return byte;
}

uint16_t board_rx_buffer(void)
{
    return (uint16_t)RX_RING_SIZE;
}

/* DWT cycles, or 32-bit SysTick ticks as on mps2 (boards/mps2/board_mps2.c explains the reading). */
uint32_t board_ticks(void)
{
    uint32_t periods, elapsed, pending;

    if (use_dwt) {
        return DWT_CYCCNT;
    }
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
