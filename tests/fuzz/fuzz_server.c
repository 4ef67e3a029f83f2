/*
 * fuzz_server.c - the firmware's receive path (main.c's loop: COBS decoder, frame parser, server)
 * built for the host with sanitizers and fed a byte stream on stdin. Every response is checked:
 * it fits its buffer, parses with a good CRC, answers with the request's type | 0x80 or ERROR, and
 * its COBS encoding has no 0x00. Prints counts as JSON; exits 1 on the first broken invariant.
 * Driven by fuzz_frames.py, which makes the frames.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "board.h"
#include "link/cqtf_cobs.h"
#include "server.h"

static uint8_t rx_frame[CQTF_SERVER_REQ_FRAME_MAX];
static uint8_t tx_frame[CQTF_SERVER_RESP_FRAME_MAX];
static uint8_t tx_wire[CQTF_SERVER_WIRE_MAX];

/* board.h, as little as the server needs. */
void board_init(void) {}
void board_uart_write(const uint8_t *data, uint32_t len) { (void)data; (void)len; }
uint8_t board_uart_read_byte(void) { return 0; }
uint32_t board_ticks(void) { return 0; }
const char *board_name(void) { return "host-fuzz"; }
uint16_t board_rx_buffer(void) { return 256u; }

static struct {
    unsigned long bytes, frames, answered, rejected, overflow, malformed, errors, infers;
} count;

static void fail(const char *why)
{
    fprintf(stderr, "fuzz_server: %s after %lu frames\n", why, count.frames);
    exit(1);
}

static void check_response(uint8_t req_type, uint32_t len)
{
    cqtf_frame_t resp;
    uint32_t wire, i;

    if (len > sizeof(tx_frame)) {
        fail("response longer than its buffer");
    }
    if (!cqtf_frame_parse(tx_frame, len, &resp)) {
        fail("response with a bad CRC");
    }
    if (resp.type == CQTF_MSG_ERROR) {
        ++count.errors;
    } else if (resp.type != (uint8_t)(req_type | CQTF_MSG_RESPONSE)) {
        fail("response of the wrong type");
    } else if (req_type == CQTF_MSG_INFER) {
        ++count.infers;
    }
    wire = cqtf_cobs_encode(tx_frame, len, tx_wire, sizeof(tx_wire) - 1u);
    if (wire == 0) {
        fail("response does not fit the wire buffer");
    }
    for (i = 0; i < wire; ++i) {
        if (tx_wire[i] == 0) {
            fail("0x00 inside a COBS encoding");
        }
    }
}

int main(void)
{
    static uint8_t chunk[1u << 16];
    cqtf_cobs_decoder_t decoder;
    size_t got, i;

    cqtf_cobs_decoder_init(&decoder, rx_frame, sizeof(rx_frame));
    while ((got = fread(chunk, 1, sizeof(chunk), stdin)) > 0) {
        count.bytes += got;
        for (i = 0; i < got; ++i) {
            uint32_t len = 0;

            switch (cqtf_cobs_decoder_feed(&decoder, chunk[i], &len)) {
            case CQTF_COBS_FRAME: {
                const uint8_t req_type = rx_frame[0];
                const uint32_t resp_len = cqtf_server_handle(rx_frame, len, tx_frame);

                ++count.frames;
                if (resp_len == 0) {
                    ++count.rejected;
                } else {
                    ++count.answered;
                    check_response(req_type, resp_len);
                }
                break;
            }
            case CQTF_COBS_OVERFLOW:
                ++count.frames;
                ++count.overflow;
                break;
            case CQTF_COBS_MALFORMED:
                ++count.frames;
                ++count.malformed;
                break;
            default:
                break;
            }
        }
    }
    printf("{\"bytes\": %lu, \"frames\": %lu, \"answered\": %lu, \"rejected\": %lu, \"overflow\": %lu, "
           "\"malformed\": %lu, \"error_replies\": %lu, \"inferences\": %lu}\n",
           count.bytes, count.frames, count.answered, count.rejected, count.overflow, count.malformed,
           count.errors, count.infers);
    return 0;
}
