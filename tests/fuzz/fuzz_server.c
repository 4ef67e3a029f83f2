/*
 * fuzz_server.c - the firmware's receive path (main.c's loop: COBS decoder, frame parser, server)
 * built for the host with sanitizers and fed a byte stream on stdin. Every response is checked:
 * it fits its buffer, parses with a good CRC, answers with the request's type | 0x80 or ERROR, its
 * COBS encoding has no 0x00, and what the firmware sends (its spans, COBS-streamed as main.c does)
 * is byte for byte that encoding. Prints counts as JSON; exits 1 on the first broken invariant.
 * Driven by fuzz_frames.py, which makes the frames.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "board.h"
#include "engine.h"
#include "kernels/cqtf_kernels.h"
#include "link/cqtf_cobs.h"
#include "server.h"

static uint8_t rx_frame[CQTF_SERVER_REQ_FRAME_MAX];
static uint8_t tx_frame[CQTF_SERVER_RESP_FRAME_MAX];
static uint8_t tx_wire[CQTF_SERVER_WIRE_MAX];
static uint8_t streamed[CQTF_SERVER_WIRE_MAX];
static uint32_t streamed_len;
static cqtf_response_t response;

static void capture(const uint8_t *data, uint32_t len)
{
    if (streamed_len + len > sizeof(streamed)) {
        fprintf(stderr, "fuzz_server: streamed response longer than the wire buffer\n");
        exit(1);
    }
    memcpy(&streamed[streamed_len], data, len);
    streamed_len += len;
}

/* The response as main.c sends it (spans COBS-streamed to capture), and flat in tx_frame. */
static uint32_t respond(uint32_t req_len)
{
    const uint32_t len = cqtf_server_respond(rx_frame, req_len, &response);
    uint32_t at = 0, i;

    streamed_len = 0;
    if (len == 0) {
        return 0;
    }
    cqtf_cobs_write_spans(response.spans, 3u, capture);
    for (i = 0; i < 3u; ++i) {
        if (at + response.spans[i].len > sizeof(tx_frame)) {
            return sizeof(tx_frame) + 1u; /* check_response reports it */
        }
        if (response.spans[i].len != 0u) {
            memcpy(&tx_frame[at], response.spans[i].data, response.spans[i].len);
        }
        at += response.spans[i].len;
    }
    return at == len ? len : sizeof(tx_frame) + 1u;
}

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

/* The payload length of a good INFER answer: status, ticks and layer k's tensor (0xFF: the last). */
static uint32_t infer_answer_len(uint8_t layer)
{
    const uint32_t k = (layer == CQTF_ENGINE_ALL_LAYERS) ? cqtf_model.num_layers - 1u : layer;

    return CQTF_SERVER_INFER_HEAD + cqtf_shape_size(cqtf_model.layers[k].out);
}

static void check_response(uint8_t req_type, uint8_t req_layer, uint32_t len)
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
        if (resp.payload_len != infer_answer_len(req_layer)) {
            fail("INFER answer of the wrong length");
        }
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
    if (streamed_len != wire || memcmp(streamed, tx_wire, wire) != 0) {
        fail("the streamed response differs from the buffered encoding");
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
                const uint8_t req_layer = rx_frame[2]; /* INFER's layer byte, when it has one */
                const uint32_t resp_len = respond(len);

                ++count.frames;
                if (resp_len == 0) {
                    ++count.rejected;
                } else {
                    ++count.answered;
                    check_response(req_type, req_layer, resp_len);
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
