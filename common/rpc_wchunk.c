/* rpc_wchunk.c - WeightChunk without copies (see rpc_wchunk.h). */
#include "rpc_wchunk.h"
#include "tsan.h"

#include <stdlib.h>
#include <string.h>

/* ---- sender ------------------------------------------------------------------------------- */

/* gRPC drops the slice's last reference on one of its own threads: the hand-off of the
 * snapshot through gRPC is invisible to TSan (see tsan.h), hence the annotations. */
static void wchunk_release_(void *snap)
{
    COH_TSAN_ACQUIRE(snap);
    wt_snapshot_destroy(snap);
}

int wchunk_send(rpc_call *call, const Cohort__V1__WeightChunk *fields, const wt_snapshot *s,
                size_t offset, size_t len, rpc_sent_cb cb, void *data)
{
    if (fields->data.len || offset > wt_snapshot_size(s) || len > wt_snapshot_size(s) - offset)
        return COH_EINVAL;
    size_t n = protobuf_c_message_get_packed_size(&fields->base);
    uint8_t stack[1024];
    uint8_t *h = n + 11 <= sizeof stack ? stack : malloc(n + 11);
    if (!h)
        return COH_ENOMEM;
    protobuf_c_message_pack(&fields->base, h);
    size_t hl = n;
    if (len) { /* field 3 (data), wire type 2: tag, varint length; the bytes follow */
        h[hl++] = 3 << 3 | 2;
        uint64_t v = len;
        do {
            h[hl++] = (uint8_t)(v & 0x7f) | (v > 0x7f ? 0x80 : 0);
            v >>= 7;
        } while (v);
    }
    rpc_part parts[2] = {{h, hl, NULL, NULL}, {NULL, 0, NULL, NULL}};
    size_t np = 1;
    if (len) {
        parts[1].bytes = (const uint8_t *)wt_snapshot_blob(s) + offset;
        parts[1].len = len;
        parts[1].release = wchunk_release_;
        parts[1].release_data = wt_snapshot_retain(s);
        COH_TSAN_RELEASE(parts[1].release_data);
        np = 2;
    }
    int rc = rpc_call_send_parts(call, parts, np, cb, data);
    if (h != stack)
        free(h);
    return rc;
}

/* ---- receiver ----------------------------------------------------------------------------- */

typedef struct wchunk_cur {
    const rpc_piece *p;
    size_t n, i, at; /* piece i, byte at */
} wchunk_cur;

static int wchunk_more_(wchunk_cur *c)
{
    while (c->i < c->n && c->at == c->p[c->i].len) {
        c->i++;
        c->at = 0;
    }
    return c->i < c->n;
}

static int wchunk_varint_(wchunk_cur *c, uint64_t *out)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (!wchunk_more_(c))
            return 0;
        uint8_t b = c->p[c->i].bytes[c->at++];
        if (shift == 63 && b > 1)
            return 0;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 1;
        }
    }
    return 0;
}

/* Walk len bytes; with seg non-NULL append each piece-sized segment to v's data list. */
static int wchunk_take_(wchunk_cur *c, size_t len, wchunk_view *v, int as_data)
{
    while (len) {
        if (!wchunk_more_(c))
            return 0;
        size_t k = c->p[c->i].len - c->at;
        if (k > len)
            k = len;
        if (as_data) {
            if (v->ndata == v->seg_cap_) {
                size_t cap = v->seg_cap_ ? 2 * v->seg_cap_ : 8;
                wt_piece *g = realloc(v->seg_, cap * sizeof *g);
                if (!g)
                    return -1;
                v->seg_ = g;
                v->seg_cap_ = cap;
            }
            v->seg_[v->ndata].data = c->p[c->i].bytes + c->at;
            v->seg_[v->ndata].len = k;
            v->ndata++;
        }
        c->at += k;
        len -= k;
    }
    return 1;
}

/* The next len bytes as one contiguous buffer: in place when they lie in one piece, else
 * gathered into *own (the caller frees). */
static const uint8_t *wchunk_gather_(wchunk_cur *c, size_t len, uint8_t **own)
{
    *own = NULL;
    static const uint8_t empty[1];
    if (!len)
        return empty;
    if (wchunk_more_(c) && c->p[c->i].len - c->at >= len) {
        const uint8_t *p = c->p[c->i].bytes + c->at;
        c->at += len;
        return p;
    }
    uint8_t *b = malloc(len);
    if (!b)
        return NULL;
    size_t got = 0;
    while (got < len && wchunk_more_(c)) {
        size_t k = c->p[c->i].len - c->at;
        if (k > len - got)
            k = len - got;
        memcpy(b + got, c->p[c->i].bytes + c->at, k);
        got += k;
        c->at += k;
    }
    if (got < len) {
        free(b);
        return NULL;
    }
    *own = b;
    return b;
}

void wchunk_view_init(wchunk_view *v) { memset(v, 0, sizeof *v); }

static void wchunk_drop_subs_(wchunk_view *v)
{
    if (v->manifest)
        protobuf_c_message_free_unpacked(&v->manifest->base, NULL);
    if (v->delta)
        protobuf_c_message_free_unpacked(&v->delta->base, NULL);
    v->manifest = NULL;
    v->delta = NULL;
}

void wchunk_view_clear(wchunk_view *v)
{
    wchunk_drop_subs_(v);
    free(v->seg_);
    memset(v, 0, sizeof *v);
}

int wchunk_decode(wchunk_view *v, const rpc_piece *pieces, size_t n, coh_err *err)
{
    wchunk_drop_subs_(v);
    wt_piece *seg = v->seg_;
    size_t cap = v->seg_cap_;
    memset(v, 0, sizeof *v);
    v->seg_ = seg;
    v->seg_cap_ = cap;
    wchunk_cur c = {pieces, n, 0, 0};
    while (wchunk_more_(&c)) {
        uint64_t key, val;
        if (!wchunk_varint_(&c, &key) || key >> 3 == 0 || key >> 3 > 0x1fffffff)
            return coh_fail(err, COH_EFORMAT, "malformed WeightChunk: bad field key");
        unsigned field = (unsigned)(key >> 3), wt = (unsigned)(key & 7);
        int known_varint = field == 1 || field == 2 || field == 4 || field == 5 ||
                           field == 6 || field == 8;
        int known_len = field == 3 || field == 7 || field == 9;
        if ((known_varint && wt != 0) || (known_len && wt != 2))
            return coh_fail(err, COH_EFORMAT,
                            "malformed WeightChunk: field %u has wire type %u", field, wt);
        switch (wt) {
        case 0:
            if (!wchunk_varint_(&c, &val))
                return coh_fail(err, COH_EFORMAT, "malformed WeightChunk: truncated varint");
            switch (field) {
            case 1: v->version = (int64_t)val; break;
            case 2: v->offset = val; break;
            case 4: v->chunk_crc32 = (uint32_t)val; break;
            case 5: v->total_bytes = val; break;
            case 6: v->total_crc32 = (uint32_t)val; break;
            case 8: v->wire_dtype = (int)(int32_t)val; break;
            default: break;
            }
            break;
        case 1:
        case 5:
            if (wchunk_take_(&c, wt == 1 ? 8 : 4, v, 0) != 1)
                return coh_fail(err, COH_EFORMAT, "malformed WeightChunk: truncated field");
            break;
        case 2: {
            if (!wchunk_varint_(&c, &val) || val > ((uint64_t)1 << 40))
                return coh_fail(err, COH_EFORMAT, "malformed WeightChunk: bad length");
            size_t len = (size_t)val;
            if (field == 3) {
                v->ndata = 0; /* the last occurrence wins */
                int t = wchunk_take_(&c, len, v, 1);
                if (t < 0)
                    return coh_fail(err, COH_ENOMEM, "out of memory decoding a WeightChunk");
                if (!t)
                    return coh_fail(err, COH_EFORMAT, "malformed WeightChunk: truncated data");
                v->data_len = len;
            } else if (field == 7 || field == 9) {
                uint8_t *own;
                const uint8_t *b = wchunk_gather_(&c, len, &own);
                if (!b)
                    return coh_fail(err, COH_EFORMAT,
                                    "malformed WeightChunk: truncated sub-message");
                ProtobufCMessage *m = protobuf_c_message_unpack(
                    field == 7 ? &cohort__v1__weight_manifest__descriptor
                               : &cohort__v1__weight_delta__descriptor,
                    NULL, len, b);
                free(own);
                if (!m)
                    return coh_fail(err, COH_EFORMAT, "malformed WeightChunk: bad %s",
                                    field == 7 ? "manifest" : "delta");
                if (field == 7) {
                    if (v->manifest)
                        protobuf_c_message_free_unpacked(&v->manifest->base, NULL);
                    v->manifest = (Cohort__V1__WeightManifest *)m;
                } else {
                    if (v->delta)
                        protobuf_c_message_free_unpacked(&v->delta->base, NULL);
                    v->delta = (Cohort__V1__WeightDelta *)m;
                }
            } else if (wchunk_take_(&c, len, v, 0) != 1) {
                return coh_fail(err, COH_EFORMAT, "malformed WeightChunk: truncated field");
            }
            break;
        }
        default:
            return coh_fail(err, COH_EFORMAT, "malformed WeightChunk: wire type %u", wt);
        }
    }
    v->data = v->seg_;
    return COH_OK;
}
