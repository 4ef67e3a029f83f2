/* cqtf_frame.c - build and check raw link frames. */
#include "cqtf_frame.h"

#include "cqtf_crc16.h"

int cqtf_frame_parse(const uint8_t *raw, uint32_t len, cqtf_frame_t *frame)
{
    uint32_t body;
    uint16_t crc_rx;

    if (len < CQTF_FRAME_OVERHEAD) {
        return 0;
    }
    body = len - 2u; /* type, seq, payload */
    crc_rx = (uint16_t)(raw[body] | ((uint16_t)raw[body + 1u] << 8));
    if (cqtf_crc16_update(CQTF_CRC16_INIT, raw, body) != crc_rx) {
        return 0;
    }
    frame->type = raw[0];
    frame->seq = raw[1];
    frame->payload = raw + CQTF_FRAME_HEADER;
    frame->payload_len = body - CQTF_FRAME_HEADER;
    return 1;
}

uint32_t cqtf_frame_build(uint8_t *raw, uint8_t type, uint8_t seq, uint32_t payload_len)
{
    const uint32_t body = CQTF_FRAME_HEADER + payload_len;
    uint16_t crc;

    raw[0] = type;
    raw[1] = seq;
    crc = cqtf_crc16_update(CQTF_CRC16_INIT, raw, body);
    raw[body] = (uint8_t)(crc & 0xFFu);
    raw[body + 1u] = (uint8_t)(crc >> 8);
    return body + 2u;
}
