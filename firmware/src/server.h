/*
 * server.h - the device side of the serial protocol (docs/protocol.md): one raw request frame in,
 * one raw response frame out. Buffer sizes follow the compiled-in model, so a bigger model gets
 * bigger buffers without edits here.
 */
#ifndef CQTF_SERVER_H
#define CQTF_SERVER_H

#include <stdint.h>

#include "cqtf_model.h"
#include "link/cqtf_cobs.h"
#include "link/cqtf_frame.h"

/* The firmware version (the only place it is written) and the protocol it speaks. */
#define CQTF_FW_VERSION_MAJOR 0u
#define CQTF_FW_VERSION_MINOR 1u
#define CQTF_FW_VERSION_PATCH 0u
#define CQTF_PROTOCOL_VERSION 2u

/* Message types; a response is the request type | CQTF_MSG_RESPONSE. */
#define CQTF_MSG_INFO 0x01u
#define CQTF_MSG_INFER 0x02u
#define CQTF_MSG_ECHO 0x03u
#define CQTF_MSG_ERROR 0x7Fu
#define CQTF_MSG_RESPONSE 0x80u

/* ERROR codes. */
#define CQTF_ERROR_UNKNOWN_TYPE 1u
#define CQTF_ERROR_BAD_LENGTH 2u
#define CQTF_ERROR_BAD_LAYER_INDEX 3u
#define CQTF_ERROR_MODEL 4u
#define CQTF_ERROR_NO_SESSION 5u /* INFER before INFO opened a session: the device was reset */

#define CQTF_SERVER_MAX2(a, b) (((a) > (b)) ? (a) : (b))

/* Largest request payload: an INFER (layer byte + input tensor), but at least 256 bytes so that
 * ECHO can exercise the link with every byte value even for a tiny model. Reported by INFO. */
#define CQTF_SERVER_ECHO_MIN 256u
#define CQTF_SERVER_MAX_PAYLOAD CQTF_SERVER_MAX2(1u + CQTF_MODEL_INPUT_SIZE, CQTF_SERVER_ECHO_MIN)

/* Largest response payloads built in a buffer (the head): INFER's status + ticks (its tensor is sent
 * from the arena where the engine left it, an ECHO's bytes from the request), INFO's 26 fixed bytes
 * and three length-prefixed strings (board name cut at CQTF_SERVER_BOARD_NAME_MAX), ERROR's code
 * and short message. */
#define CQTF_SERVER_BOARD_NAME_MAX 32u
#define CQTF_SERVER_INFER_HEAD 5u
#define CQTF_SERVER_INFO_RESP_MAX                                            \
    (29u + CQTF_SERVER_BOARD_NAME_MAX + (sizeof(CQTF_MODEL_NAME) - 1u) + \
     (sizeof(CQTF_MODEL_PROFILE) - 1u))
#define CQTF_SERVER_ERROR_RESP_MAX 64u
#define CQTF_SERVER_HEAD_PAYLOAD_MAX \
    CQTF_SERVER_MAX2(CQTF_SERVER_INFER_HEAD, CQTF_SERVER_MAX2(CQTF_SERVER_INFO_RESP_MAX, CQTF_SERVER_ERROR_RESP_MAX))
#define CQTF_SERVER_RESP_PAYLOAD_MAX                                                                      \
    CQTF_SERVER_MAX2(CQTF_SERVER_MAX2(CQTF_SERVER_INFER_HEAD + CQTF_MODEL_TENSOR_MAX, CQTF_SERVER_MAX_PAYLOAD), \
                     CQTF_SERVER_HEAD_PAYLOAD_MAX)

/* Buffers of the caller: a decoded request; for cqtf_server_handle, a whole raw response. */
#define CQTF_SERVER_REQ_FRAME_MAX (CQTF_SERVER_MAX_PAYLOAD + CQTF_FRAME_OVERHEAD)
#define CQTF_SERVER_RESP_FRAME_MAX (CQTF_SERVER_RESP_PAYLOAD_MAX + CQTF_FRAME_OVERHEAD)
#define CQTF_SERVER_WIRE_MAX (CQTF_COBS_MAX_ENCODED(CQTF_SERVER_RESP_FRAME_MAX) + 1u)

/* A raw response frame in three spans, never copied whole: head (type, seq, and the payload bytes
 * built here), body (the payload's rest where it already lies: an INFER tensor in the engine's
 * arena, an ECHO's bytes in the request), crc. Valid until the next request or inference. */
typedef struct {
    uint8_t head[CQTF_FRAME_HEADER + CQTF_SERVER_HEAD_PAYLOAD_MAX];
    uint8_t crc[2];
    cqtf_span_t spans[3];
} cqtf_response_t;

/* Handles one decoded request frame req[0..req_len) and describes the response in *resp. Returns
 * the response frame's length, or 0 when the request is dropped unanswered (shorter than a frame,
 * or a bad CRC). req must stay unchanged while resp is in use (an ECHO's body points into it). */
uint32_t cqtf_server_respond(const uint8_t *req, uint32_t req_len, cqtf_response_t *resp);

/* The same, with the response frame copied into resp (CQTF_SERVER_RESP_FRAME_MAX bytes): for tests
 * and fuzzing, where a flat frame is handier than spans. */
uint32_t cqtf_server_handle(const uint8_t *req, uint32_t req_len, uint8_t *resp);

/* The session the host opened with INFO (0: none since reset). Exposed for host-native tests. */
uint32_t cqtf_server_session(void);

#endif /* CQTF_SERVER_H */
