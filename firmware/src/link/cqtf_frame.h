/*
 * cqtf_frame.h - raw link frames: type:u8 | seq:u8 | payload | crc:u16 LE (docs/protocol.md).
 * The CRC (CRC-16/CCITT-FALSE) covers type, seq and payload. COBS framing is cqtf_cobs.h's job.
 */
#ifndef CQTF_FRAME_H
#define CQTF_FRAME_H

#include <stdint.h>

#define CQTF_FRAME_HEADER 2u                         /* type, seq: the payload starts here */
#define CQTF_FRAME_OVERHEAD (CQTF_FRAME_HEADER + 2u) /* header + CRC; also the shortest frame */

typedef struct {
    uint8_t type;
    uint8_t seq;
    const uint8_t *payload; /* points into the raw frame */
    uint32_t payload_len;
} cqtf_frame_t;

/* Returns 1 and fills *frame when raw[0..len) is a frame with a good CRC; 0 when it is too short
 * or the CRC is wrong (the caller drops it and answers nothing). */
int cqtf_frame_parse(const uint8_t *raw, uint32_t len, cqtf_frame_t *frame);

/* Completes a frame whose payload_len payload bytes are already at raw + CQTF_FRAME_HEADER (so
 * responses are built in place, without a copy): writes type and seq before and the CRC after.
 * raw must hold payload_len + CQTF_FRAME_OVERHEAD bytes. Returns the frame length. */
uint32_t cqtf_frame_build(uint8_t *raw, uint8_t type, uint8_t seq, uint32_t payload_len);

#endif /* CQTF_FRAME_H */
