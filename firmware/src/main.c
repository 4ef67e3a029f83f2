/* main.c - the firmware's loop: bytes in, COBS frames out of them, one response per request. */
#include <stdint.h>

#include "board.h"
#include "link/cqtf_cobs.h"
#include "server.h"

static uint8_t rx_frame[CQTF_SERVER_REQ_FRAME_MAX];
static cqtf_response_t response; /* a small head; the tensor is COBS-encoded from the arena */

/* Frames dropped without an answer (docs/protocol.md); kept for a debugger, not reported. */
static struct {
    uint32_t overflow;  /* longer than rx_frame */
    uint32_t malformed; /* COBS run cut short */
    uint32_t rejected;  /* too short or bad CRC */
} link_drops;

static void respond(uint32_t req_len)
{
    static const uint8_t delimiter = 0x00;

    if (cqtf_server_respond(rx_frame, req_len, &response) == 0) {
        ++link_drops.rejected;
        return;
    }
    cqtf_cobs_write_spans(response.spans, 3u, board_uart_write);
    board_uart_write(&delimiter, 1u);
}

int main(void)
{
    cqtf_cobs_decoder_t decoder;

    board_init();
    cqtf_cobs_decoder_init(&decoder, rx_frame, sizeof(rx_frame));
    for (;;) {
        uint32_t len = 0;

        switch (cqtf_cobs_decoder_feed(&decoder, board_uart_read_byte(), &len)) {
        case CQTF_COBS_FRAME:
            respond(len);
            break;
        case CQTF_COBS_OVERFLOW:
            ++link_drops.overflow;
            break;
        case CQTF_COBS_MALFORMED:
            ++link_drops.malformed;
            break;
        default:
            break;
        }
    }
}
