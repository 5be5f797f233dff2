/* rpc_common.c - library lifetime, status names, protobuf-c and byte-buffer helpers. */
#include "rpc.h"
#include "private/rpc_internal.h"

#include <grpc/byte_buffer_reader.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* ---- library lifetime ---- */

void rpc_global_init(void)
{
    grpc_init();
}

void rpc_global_shutdown(void)
{
    /* From a thread gRPC does not own, the last grpc_shutdown cleans up synchronously. */
    grpc_shutdown();
}

/* ---- status ---- */

const char *rpc_status_name(int code)
{
    static const char *const names[] = {
        "OK",           "CANCELLED",         "UNKNOWN",           "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED", "NOT_FOUND",    "ALREADY_EXISTS",    "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",   "OUT_OF_RANGE",
        "UNIMPLEMENTED", "INTERNAL",         "UNAVAILABLE",       "DATA_LOSS",
        "UNAUTHENTICATED",
    };
    if (code < 0 || (size_t)code >= sizeof names / sizeof names[0])
        return "UNKNOWN_STATUS";
    return names[code];
}

int rpc_status_to_coh(int code)
{
    switch (code) {
    case GRPC_STATUS_OK:
        return COH_OK;
    case GRPC_STATUS_INVALID_ARGUMENT:
        return COH_EINVAL;
    case GRPC_STATUS_NOT_FOUND:
        return COH_ENOTFOUND;
    case GRPC_STATUS_RESOURCE_EXHAUSTED:
    case GRPC_STATUS_OUT_OF_RANGE:
        return COH_ERANGE;
    case GRPC_STATUS_UNIMPLEMENTED:
        return COH_EUNSUPPORTED;
    case GRPC_STATUS_FAILED_PRECONDITION:
        return COH_ESTATE;
    default:
        return COH_EIO;
    }
}

int rpc_status_to_err(const rpc_status *st, const char *what, coh_err *err)
{
    int code = rpc_status_to_coh(st->code);
    if (code == COH_OK) {
        coh_err_clear(err);
        return COH_OK;
    }
    return coh_fail(err, code, "%s: %s%s%s", what ? what : "rpc", rpc_status_name(st->code),
                    st->message[0] ? ": " : "", st->message);
}

int rpc_reason_valid(const char *reason)
{
    if (!reason || !(reason[0] >= 'a' && reason[0] <= 'z'))
        return 0;
    size_t n = 0;
    for (const char *p = reason; *p; p++, n++) {
        char ch = *p;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_'))
            return 0;
    }
    return n < RPC_REASON_LEN;
}

void rpc__status_set(rpc_status *st, grpc_status_code code, grpc_slice details,
                     const grpc_metadata_array *trailers)
{
    size_t n = GRPC_SLICE_LENGTH(details);
    if (n > sizeof st->message - 1)
        n = sizeof st->message - 1;
    if (n)
        memcpy(st->message, GRPC_SLICE_START_PTR(details), n);
    st->message[n] = '\0';
    st->code = code;
    st->reason[0] = '\0';
    for (size_t i = 0; trailers && i < trailers->count; i++) {
        if (grpc_slice_str_cmp(trailers->metadata[i].key, RPC_REASON_KEY) != 0)
            continue;
        /* through a pointer: a short slice keeps its bytes inline */
        const grpc_slice *v = &trailers->metadata[i].value;
        size_t m = GRPC_SLICE_LENGTH(*v);
        if (m > sizeof st->reason - 1)
            m = sizeof st->reason - 1;
        if (m)
            memcpy(st->reason, GRPC_SLICE_START_PTR(*v), m);
        st->reason[m] = '\0';
        break;
    }
}

void rpc__status_setf(rpc_status *st, grpc_status_code code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->message, sizeof st->message, fmt, ap);
    va_end(ap);
    st->code = code;
    st->reason[0] = '\0';
}

/* ---- messages ---- */

/* ---- the wire check ---- */

#define WIRE_MAX_DEPTH 32

static int wire_varint(const uint8_t *p, size_t len, size_t *pos, uint64_t *v)
{
    uint64_t x = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*pos >= len)
            return -1;
        uint8_t b = p[(*pos)++];
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

/* NUL or not UTF-8: the offset of the first bad byte, else -1. */
static long bad_text(const uint8_t *s, size_t n, int *is_nul)
{
    size_t i = 0;
    while (i < n) {
        if (s[i] == 0) {
            *is_nul = 1;
            return (long)i;
        }
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate(s + i, (utf8proc_ssize_t)(n - i), &cp);
        if (k <= 0) {
            *is_nul = 0;
            return (long)i;
        }
        i += (size_t)k;
    }
    return -1;
}

static int wire_walk(const ProtobufCMessageDescriptor *desc, const uint8_t *p, size_t len,
                     int depth, char *why, size_t cap)
{
    if (depth > WIRE_MAX_DEPTH)
        return snprintf(why, cap, "messages nested deeper than %d levels", WIRE_MAX_DEPTH), -1;
    size_t pos = 0;
    while (pos < len) {
        uint64_t key, v;
        if (wire_varint(p, len, &pos, &key))
            return snprintf(why, cap, "%s: a truncated field key", desc->name), -1;
        uint64_t tag = key >> 3;
        unsigned wt = (unsigned)(key & 7);
        if (tag == 0 || tag > 536870911u)
            return snprintf(why, cap, "%s: a field numbered %llu (field numbers are 1 to "
                                      "536870911)",
                            desc->name, (unsigned long long)tag),
                   -1;
        const ProtobufCFieldDescriptor *fd =
            protobuf_c_message_descriptor_get_field(desc, (unsigned)tag);
        switch (wt) {
        case 0:
            if (wire_varint(p, len, &pos, &v))
                return snprintf(why, cap, "%s: field %llu: a truncated varint", desc->name,
                                (unsigned long long)tag),
                       -1;
            break;
        case 1:
        case 5: {
            size_t w = wt == 1 ? 8 : 4;
            if (len - pos < w)
                return snprintf(why, cap, "%s: field %llu: truncated", desc->name,
                                (unsigned long long)tag),
                       -1;
            pos += w;
            break;
        }
        case 2: {
            if (wire_varint(p, len, &pos, &v) || v > len - pos)
                return snprintf(why, cap, "%s: field %llu: a length past the end of the message",
                                desc->name, (unsigned long long)tag),
                       -1;
            const uint8_t *q = p + pos;
            size_t n = (size_t)v;
            pos += n;
            if (!fd)
                break;
            if (fd->type == PROTOBUF_C_TYPE_STRING) {
                int nul = 0;
                long at = bad_text(q, n, &nul);
                if (at >= 0)
                    return snprintf(why, cap, "field %s.%s %s at byte %ld of its %zu", desc->name,
                                    fd->name, nul ? "holds a NUL byte" : "is not UTF-8", at, n),
                           -1;
            } else if (fd->type == PROTOBUF_C_TYPE_MESSAGE && fd->descriptor) {
                if (wire_walk((const ProtobufCMessageDescriptor *)fd->descriptor, q, n, depth + 1,
                              why, cap))
                    return -1;
            }
            break;
        }
        default:
            return snprintf(why, cap, "%s: field %llu has wire type %u (groups and unknown "
                                      "wire types are not accepted)",
                            desc->name, (unsigned long long)tag, wt),
                   -1;
        }
    }
    return 0;
}

int rpc_wire_check(const ProtobufCMessageDescriptor *desc, const uint8_t *bytes, size_t len,
                   char *why, size_t why_cap)
{
    char dummy[160];
    if (!why || why_cap == 0) {
        why = dummy;
        why_cap = sizeof dummy;
    }
    why[0] = 0;
    if (!desc || (!bytes && len))
        return snprintf(why, why_cap, "no message type or no bytes"), COH_EINVAL;
    if (len && wire_walk(desc, bytes, len, 0, why, why_cap))
        return COH_EINVAL;
    return COH_OK;
}

ProtobufCMessage *rpc_unpack(const ProtobufCMessageDescriptor *desc, const uint8_t *bytes,
                             size_t len)
{
    static const uint8_t empty[1];
    if (!desc)
        return NULL;
    if (rpc_wire_check(desc, bytes, len, NULL, 0))
        return NULL;
    return protobuf_c_message_unpack(desc, NULL, len, bytes ? bytes : empty);
}

void rpc_msg_free(ProtobufCMessage *msg)
{
    if (msg)
        protobuf_c_message_free_unpacked(msg, NULL);
}

int rpc_pack(const ProtobufCMessage *msg, size_t max_len, uint8_t **out, size_t *out_len,
             coh_err *err)
{
    *out = NULL;
    *out_len = 0;
    if (!msg)
        return coh_fail(err, COH_EINVAL, "rpc_pack: no message");
    if (max_len == 0 || max_len > UINT32_MAX)
        max_len = UINT32_MAX;
    size_t n = protobuf_c_message_get_packed_size(msg);
    if (n > max_len)
        return coh_fail(err, COH_ERANGE, "%s message encodes to %zu bytes, over the limit of %zu",
                        msg->descriptor->name, n, max_len);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf)
        return coh_fail(err, COH_ENOMEM, "rpc_pack: out of memory for %zu bytes", n);
    protobuf_c_message_pack(msg, buf);
    *out = buf;
    *out_len = n;
    return COH_OK;
}

/* ---- byte buffers ---- */

grpc_byte_buffer *rpc__buffer_from_bytes(const uint8_t *bytes, size_t len)
{
    grpc_slice s = grpc_slice_malloc(len);
    if (len)
        memcpy(GRPC_SLICE_START_PTR(s), bytes, len);
    grpc_byte_buffer *b = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return b;
}

grpc_byte_buffer *rpc__buffer_from_msg(const ProtobufCMessage *msg)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    grpc_slice s = grpc_slice_malloc(n);
    if (n)
        protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(s));
    grpc_byte_buffer *b = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return b;
}

int rpc__buffer_read(grpc_byte_buffer *b, grpc_slice *out)
{
    grpc_byte_buffer_reader r;
    if (!grpc_byte_buffer_reader_init(&r, b)) {
        *out = grpc_empty_slice();
        return COH_EFORMAT;
    }
    *out = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    return COH_OK;
}
