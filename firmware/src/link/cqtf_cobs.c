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

/* A read position in a list of spans; never rests at the end of a span that has a successor. */
typedef struct {
    const cqtf_span_t *spans;
    uint32_t count;
    uint32_t span;
    uint32_t at;
} span_cursor_t;

static void cursor_settle(span_cursor_t *c)
{
    while (c->span + 1u < c->count && c->at >= c->spans[c->span].len) {
        ++c->span;
        c->at = 0;
    }
}

static int cursor_done(const span_cursor_t *c)
{
    return c->span >= c->count || (c->span + 1u == c->count && c->at >= c->spans[c->span].len);
}

static void cursor_skip(span_cursor_t *c, uint32_t n)
{
    c->at += n;
    cursor_settle(c);
}

/* Non-zero bytes from the cursor on, at most 254 (one COBS run), across span boundaries. */
static uint32_t run_length(span_cursor_t scan)
{
    uint32_t run = 0;

    while (run < 254u && !cursor_done(&scan) && scan.spans[scan.span].data[scan.at] != 0u) {
        ++run;
        cursor_skip(&scan, 1u);
    }
    return run;
}

/* Sends n bytes from the cursor, one sink call per span they lie in. */
static void send_run(span_cursor_t *c, uint32_t n, cqtf_cobs_sink_t sink)
{
    while (n != 0u) {
        const uint32_t left = c->spans[c->span].len - c->at;
        const uint32_t take = (n < left) ? n : left;

        sink(&c->spans[c->span].data[c->at], take);
        cursor_skip(c, take);
        n -= take;
    }
}

void cqtf_cobs_write_spans(const cqtf_span_t *spans, uint32_t count, cqtf_cobs_sink_t sink)
{
    span_cursor_t c;

    c.spans = spans;
    c.count = count;
    c.span = 0;
    c.at = 0;
    cursor_settle(&c);
    for (;;) {
        const uint32_t run = run_length(c);
        const uint8_t code = (uint8_t)(run + 1u);

        sink(&code, 1u);
        send_run(&c, run, sink);
        if (cursor_done(&c)) {
            return; /* the last run (a full one at the very end is not followed by an empty one) */
        }
        if (run < 254u) {
            cursor_skip(&c, 1u); /* the 0x00 this code stands for */
        }
    }
}

void cqtf_cobs_write(const uint8_t *src, uint32_t len, cqtf_cobs_sink_t sink)
{
    cqtf_span_t span;

    span.data = src;
    span.len = len;
    cqtf_cobs_write_spans(&span, 1u, sink);
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
