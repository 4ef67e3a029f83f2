/*
 * cqtf_cobs.h - Consistent Overhead Byte Stuffing for the link (docs/protocol.md).
 *
 * The wire carries COBS(raw frame) followed by one 0x00 delimiter; COBS leaves no 0x00 inside, so a
 * receiver resynchronizes at the next delimiter after any loss.
 */
#ifndef CQTF_COBS_H
#define CQTF_COBS_H

#include <stdint.h>

/* Largest encoding of n bytes, delimiter excluded: one code byte per started run of 254. */
#define CQTF_COBS_MAX_ENCODED(n) ((n) + (n) / 254u + 1u)

/* Encodes len bytes of src into dst (capacity cap, must not overlap src); no delimiter written.
 * Returns the encoded length, or 0 when dst is too small. */
uint32_t cqtf_cobs_encode(const uint8_t *src, uint32_t len, uint8_t *dst, uint32_t cap);

/* Where cqtf_cobs_write sends its bytes, in order (e.g. board_uart_write). */
typedef void (*cqtf_cobs_sink_t)(const uint8_t *data, uint32_t len);

/* Bytes that follow one another in a message but not in memory (a response header in a small
 * buffer, then a tensor in the arena, then the CRC). */
typedef struct {
    const uint8_t *data;
    uint32_t len;
} cqtf_span_t;

/* The same encoding as cqtf_cobs_encode of the spans' bytes concatenated, sent to `sink` run by run
 * straight from the spans: neither the message nor its encoding is copied in RAM (a response can be
 * as large as the model's largest tensor). No delimiter written. */
void cqtf_cobs_write_spans(const cqtf_span_t *spans, uint32_t count, cqtf_cobs_sink_t sink);

/* cqtf_cobs_write_spans of the one span src[0..len). */
void cqtf_cobs_write(const uint8_t *src, uint32_t len, cqtf_cobs_sink_t sink);

typedef enum {
    CQTF_COBS_PENDING = 0,   /* byte consumed, no frame ended */
    CQTF_COBS_FRAME = 1,     /* a delimiter ended a valid, non-empty frame: see *frame_len */
    CQTF_COBS_OVERFLOW = 2,  /* a delimiter ended a frame longer than the buffer: dropped */
    CQTF_COBS_MALFORMED = 3  /* a delimiter ended a frame whose last run was cut short: dropped */
} cqtf_cobs_result_t;

/* Incremental decoder, fed one byte at a time; decodes in place into a caller-owned buffer. */
typedef struct {
    uint8_t *buf;
    uint32_t cap;
    uint32_t len;        /* decoded bytes of the current frame */
    uint8_t run_left;    /* data bytes still expected in the current run; 0: next is a code */
    uint8_t zero_due;    /* the current run ends in an implicit 0x00 (its code was < 0xFF) */
    uint8_t overflow;    /* the current frame did not fit: discard it at its delimiter */
    uint8_t started;     /* a non-zero byte arrived since the last delimiter */
} cqtf_cobs_decoder_t;

void cqtf_cobs_decoder_init(cqtf_cobs_decoder_t *dec, uint8_t *buf, uint32_t cap);

/* Feeds one wire byte. On CQTF_COBS_FRAME the frame is buf[0 .. *frame_len) and stays intact until
 * the next call. An empty frame (a lone 0x00, e.g. the host's flush) returns CQTF_COBS_PENDING. */
cqtf_cobs_result_t cqtf_cobs_decoder_feed(cqtf_cobs_decoder_t *dec, uint8_t byte,
                                          uint32_t *frame_len);

#endif /* CQTF_COBS_H */
