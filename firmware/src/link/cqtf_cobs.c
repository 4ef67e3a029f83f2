/* cqtf_cobs.c - COBS encoder and byte-at-a-time decoder. */
#include "cqtf_cobs.h"

/* Each run is a code byte (1 + its number of non-zero bytes, at most 0xFF) then those bytes; a
 * code below 0xFF stands for a 0x00 after the run, except after the last run. A full run at the
 * very end is not followed by an empty one (as in Python's `cobs` package). */
uint32_t cqtf_cobs_encode(const uint8_t *src, uint32_t len, uint8_t *dst, uint32_t cap)
{
    uint32_t code_at = 0; /* where the current run's code byte goes */
    uint32_t out = 1;
    uint32_t i;
    uint8_t code = 1;

    if (cap == 0) {
        return 0;
    }
    for (i = 0; i < len; ++i) {
        if (src[i] != 0) {
            if (out >= cap) {
                return 0;
            }
            dst[out++] = src[i];
            ++code;
        }
        if (src[i] == 0 || (code == 0xFFu && i + 1u < len)) {
            if (out >= cap) {
                return 0;
            }
            dst[code_at] = code;
            code_at = out++;
            code = 1;
        }
    }
    dst[code_at] = code;
    return out;
}

void cqtf_cobs_write(const uint8_t *src, uint32_t len, cqtf_cobs_sink_t sink)
{
    uint32_t at = 0;

    for (;;) {
        uint32_t run = 0;
        uint8_t code;

        while (at + run < len && src[at + run] != 0u && run < 254u) {
            ++run;
        }
        code = (uint8_t)(run + 1u);
        sink(&code, 1u);
        if (run != 0u) {
            sink(&src[at], run);
        }
        at += run;
        if (at >= len) {
            return; /* the last run (a full one at the very end is not followed by an empty one) */
        }
        if (run < 254u) {
            ++at; /* src[at] is the 0x00 this code stands for */
        }
    }
}

void cqtf_cobs_decoder_init(cqtf_cobs_decoder_t *dec, uint8_t *buf, uint32_t cap)
{
    dec->buf = buf;
    dec->cap = cap;
    dec->len = 0;
    dec->run_left = 0;
    dec->zero_due = 0;
    dec->overflow = 0;
    dec->started = 0;
}

static void decoder_put(cqtf_cobs_decoder_t *dec, uint8_t byte)
{
    if (dec->len < dec->cap) {
        dec->buf[dec->len++] = byte;
    } else {
        dec->overflow = 1; /* keep consuming until the delimiter, then report */
    }
}

/* A delimiter: classify what came before it and start afresh. */
static cqtf_cobs_result_t decoder_end(cqtf_cobs_decoder_t *dec, uint32_t *frame_len)
{
    cqtf_cobs_result_t result = CQTF_COBS_FRAME;

    if (!dec->started) {
        result = CQTF_COBS_PENDING; /* empty frame: nothing to report */
    } else if (dec->overflow) {
        result = CQTF_COBS_OVERFLOW;
    } else if (dec->run_left != 0) {
        result = CQTF_COBS_MALFORMED;
    } else {
        *frame_len = dec->len;
    }
    cqtf_cobs_decoder_init(dec, dec->buf, dec->cap);
    return result;
}

cqtf_cobs_result_t cqtf_cobs_decoder_feed(cqtf_cobs_decoder_t *dec, uint8_t byte,
                                          uint32_t *frame_len)
{
    if (byte == 0) {
        return decoder_end(dec, frame_len);
    }
    dec->started = 1;
    if (dec->run_left == 0) { /* a code byte opens the next run */
        if (dec->zero_due) {
            decoder_put(dec, 0);
        }
        dec->run_left = (uint8_t)(byte - 1u);
        dec->zero_due = (byte != 0xFFu);
    } else {
        decoder_put(dec, byte);
        --dec->run_left;
    }
    return CQTF_COBS_PENDING;
}
