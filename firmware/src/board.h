/*
 * board.h - the porting layer: everything board-specific the firmware needs, and nothing more.
 * Exactly one boards/<board>/ directory implements it per build.
 */
#ifndef CQTF_BOARD_H
#define CQTF_BOARD_H

#include <stdint.h>

/* Clocks, the UART (8N1) and the tick timer; called once, first thing in main(). */
void board_init(void);

/* Sends len bytes, blocking until the UART has taken the last one. */
void board_uart_write(const uint8_t *data, uint32_t len);

/* Waits for and returns the next received byte. */
uint8_t board_uart_read_byte(void);

/* Bytes the board buffers while the firmware computes (an RX ring filled by interrupt; 0 when only
 * the UART's data register holds them). INFO reports it: the host pipelines no more than this. */
uint16_t board_rx_buffer(void);

/* A free-running, monotonic 32-bit tick count that wraps; differences are taken modulo 2^32.
 * The board's notes say what a tick is (mps2 under QEMU -icount shift=0: 40 instructions). */
uint32_t board_ticks(void);

/* Short ASCII board name reported by INFO, e.g. "mps2-an386". */
const char *board_name(void);

#endif /* CQTF_BOARD_H */
