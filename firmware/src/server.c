/* server.c - request dispatch: INFO, INFER, ECHO, and ERROR replies (docs/protocol.md). */
#include "server.h"

#include <string.h>

#include "board.h"
#include "engine.h"
#include "link/cqtf_crc16.h"

/* INFO reports max_payload as a u16 and INFER's layer index is a u8: refuse models beyond that. */
typedef char server_payload_fits_u16[(CQTF_SERVER_MAX_PAYLOAD <= 0xFFFFu) ? 1 : -1];
typedef char server_layers_fit_u8[(CQTF_MODEL_NUM_LAYERS <= 0xFFu) ? 1 : -1];

/* Set by INFO with a 4-byte payload; in .bss, so a reset clears it to 0 and the next INFER is
 * refused with CQTF_ERROR_NO_SESSION: that is how the host learns of a reset, re-checks the
 * model and retries the samples it had in flight (docs/protocol.md, "Sessions"). */
static uint32_t session;

static uint32_t get_u32(const uint8_t *in)
{
    return (uint32_t)in[0] | ((uint32_t)in[1] << 8) | ((uint32_t)in[2] << 16) | ((uint32_t)in[3] << 24);
}

uint32_t cqtf_server_session(void)
{
    return session;
}

static void put_u16(uint8_t *out, uint32_t v)
{
    out[0] = (uint8_t)(v & 0xFFu);
    out[1] = (uint8_t)((v >> 8) & 0xFFu);
}

static void put_u32(uint8_t *out, uint32_t v)
{
    put_u16(out, v & 0xFFFFu);
    put_u16(out + 2, v >> 16);
}

/* Writes a u8 length and up to max_len characters of s; returns the bytes written. */
static uint32_t put_str(uint8_t *out, const char *s, uint32_t max_len)
{
    uint32_t n = 0;

    while (n < max_len && n < 0xFFu && s[n] != '\0') {
        out[1u + n] = (uint8_t)s[n];
        ++n;
    }
    out[0] = (uint8_t)n;
    return 1u + n;
}

/* Turns the response into ERROR: code, then the message as plain ASCII (no length byte). */
static uint32_t reply_error(uint8_t *type, uint8_t *out, uint8_t code, const char *msg)
{
    uint32_t n = 0;

    *type = CQTF_MSG_ERROR;
    out[0] = code;
    while (n < CQTF_SERVER_ERROR_RESP_MAX - 1u && msg[n] != '\0') {
        out[1u + n] = (uint8_t)msg[n];
        ++n;
    }
    return 1u + n;
}

static uint32_t handle_info(const cqtf_frame_t *req, uint8_t *type, uint8_t *out)
{
    uint32_t n = 0;

    if (req->payload_len == 4u) {
        session = get_u32(req->payload);
    } else if (req->payload_len != 0) {
        return reply_error(type, out, CQTF_ERROR_BAD_LENGTH, "INFO takes 0 or 4 bytes");
    }
    out[n++] = CQTF_PROTOCOL_VERSION;
    out[n++] = CQTF_FW_VERSION_MAJOR;
    out[n++] = CQTF_FW_VERSION_MINOR;
    out[n++] = CQTF_FW_VERSION_PATCH;
    out[n++] = cqtf_model.format_version;
    memcpy(&out[n], cqtf_model.hash, sizeof(cqtf_model.hash));
    n += sizeof(cqtf_model.hash);
    put_u16(&out[n], cqtf_model.input_size);
    n += 2u;
    put_u16(&out[n], cqtf_model.output_size);
    n += 2u;
    out[n++] = (uint8_t)cqtf_model.num_layers;
    put_u16(&out[n], CQTF_SERVER_MAX_PAYLOAD);
    n += 2u;
    put_u32(&out[n], session);
    n += 4u;
    put_u16(&out[n], board_rx_buffer());
    n += 2u;
    n += put_str(&out[n], board_name(), CQTF_SERVER_BOARD_NAME_MAX);
    n += put_str(&out[n], cqtf_model.name, sizeof(CQTF_MODEL_NAME) - 1u);
    n += put_str(&out[n], cqtf_model.profile, sizeof(CQTF_MODEL_PROFILE) - 1u);
    return n;
}

/* Payload: layer:u8 then the input tensor. Reply: status:u8, ticks:u32 (in out), then the tensor
 * (in *body, where the engine left it). The ticks span the engine call only. */
static uint32_t handle_infer(const cqtf_frame_t *req, uint8_t *type, uint8_t *out, cqtf_span_t *body)
{
    uint8_t layer;
    uint16_t size = 0;
    uint32_t t0, t1;
    const int8_t *tensor = 0;
    cqtf_status_t status;

    if (req->payload_len != 1u + (uint32_t)cqtf_model.input_size) {
        return reply_error(type, out, CQTF_ERROR_BAD_LENGTH,
                           "INFER needs layer + input_size bytes");
    }
    if (session == 0u) {
        return reply_error(type, out, CQTF_ERROR_NO_SESSION, "no session: send INFO first");
    }
    layer = req->payload[0];
    if (layer != CQTF_ENGINE_ALL_LAYERS && layer >= cqtf_model.num_layers) {
        return reply_error(type, out, CQTF_ERROR_BAD_LAYER_INDEX, "layer index past the model");
    }
    t0 = board_ticks();
    status = cqtf_engine_run_in_place(&cqtf_model, (const int8_t *)&req->payload[1], layer, &tensor, &size);
    t1 = board_ticks();
    if (status == CQTF_ERR_BAD_REQUEST) {
        return reply_error(type, out, CQTF_ERROR_BAD_LAYER_INDEX, "layer index past the model");
    }
    if (status != CQTF_OK) {
        return reply_error(type, out, CQTF_ERROR_MODEL, "engine: inconsistent layer table");
    }
    out[0] = (uint8_t)status;
    put_u32(&out[1], t1 - t0); /* modulo 2^32: correct across a wrap */
    body->data = (const uint8_t *)tensor;
    body->len = size;
    return CQTF_SERVER_INFER_HEAD;
}

uint32_t cqtf_server_respond(const uint8_t *req, uint32_t req_len, cqtf_response_t *resp)
{
    cqtf_frame_t frame;
    cqtf_span_t *body = &resp->spans[1];
    uint8_t *out = resp->head + CQTF_FRAME_HEADER;
    uint8_t type;
    uint32_t len = 0;
    uint16_t crc;

    if (!cqtf_frame_parse(req, req_len, &frame)) {
        return 0;
    }
    body->data = 0;
    body->len = 0;
    type = (uint8_t)(frame.type | CQTF_MSG_RESPONSE);
    switch (frame.type) {
    case CQTF_MSG_INFO:
        len = handle_info(&frame, &type, out);
        break;
    case CQTF_MSG_INFER:
        len = handle_infer(&frame, &type, out, body);
        break;
    case CQTF_MSG_ECHO:
        body->data = frame.payload; /* the decoder bounds it to CQTF_SERVER_MAX_PAYLOAD */
        body->len = frame.payload_len;
        break;
    default:
        len = reply_error(&type, out, CQTF_ERROR_UNKNOWN_TYPE, "unknown request type");
        break;
    }
    if (type == CQTF_MSG_ERROR) {
        body->len = 0; /* an INFER that failed late keeps only its ERROR payload */
    }
    resp->head[0] = type;
    resp->head[1] = frame.seq;
    resp->spans[0].data = resp->head;
    resp->spans[0].len = CQTF_FRAME_HEADER + len;
    crc = cqtf_crc16_update(CQTF_CRC16_INIT, resp->head, resp->spans[0].len);
    crc = cqtf_crc16_update(crc, body->data, body->len);
    resp->crc[0] = (uint8_t)(crc & 0xFFu);
    resp->crc[1] = (uint8_t)(crc >> 8);
    resp->spans[2].data = resp->crc;
    resp->spans[2].len = 2u;
    return resp->spans[0].len + body->len + 2u;
}

uint32_t cqtf_server_handle(const uint8_t *req, uint32_t req_len, uint8_t *resp)
{
    static cqtf_response_t spans; /* static: tests and fuzzing only, the firmware uses respond */
    const uint32_t len = cqtf_server_respond(req, req_len, &spans);
    uint32_t at = 0, i;

    for (i = 0; len != 0u && i < 3u; ++i) {
        if (spans.spans[i].len != 0u) {
            memcpy(&resp[at], spans.spans[i].data, spans.spans[i].len);
        }
        at += spans.spans[i].len;
    }
    return len;
}
