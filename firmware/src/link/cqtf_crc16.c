/* cqtf_crc16.c - bitwise CRC-16/CCITT-FALSE: no table, frames are short and ROM matters more. */
#include "cqtf_crc16.h"

uint16_t cqtf_crc16_update(uint16_t crc, const uint8_t *data, uint32_t len)
{
    uint32_t i;
    int bit;

    for (i = 0; i < len; ++i) {
        crc ^= (uint16_t)((uint16_t)data[i] << 8);
        for (bit = 0; bit < 8; ++bit) {
            crc = (crc & 0x8000u) ? (uint16_t)((crc << 1) ^ 0x1021u) : (uint16_t)(crc << 1);
        }
    }
    return crc;
}
