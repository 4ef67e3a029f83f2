/* cqtf_crc16.h - CRC-16/CCITT-FALSE of the link frames (docs/protocol.md). */
#ifndef CQTF_CRC16_H
#define CQTF_CRC16_H

#include <stdint.h>

#define CQTF_CRC16_INIT 0xFFFFu

/* Continues a CRC over len more bytes: poly 0x1021, no reflection, no final XOR.
 * Start with CQTF_CRC16_INIT; "123456789" gives 0x29B1 (Python: binascii.crc_hqx(d, 0xFFFF)). */
uint16_t cqtf_crc16_update(uint16_t crc, const uint8_t *data, uint32_t len);

#endif /* CQTF_CRC16_H */
