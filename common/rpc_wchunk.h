/* rpc_wchunk.h - WeightChunk (proto/cohort/v1/learner.proto) on the wire without copies.
 *
 * Sender: wchunk_send puts one chunk on a server stream as two parts: the chunk's other
 * fields, packed by protobuf-c, followed by the tag and length of `data`; then the data
 * itself, BORROWED from the snapshot's blob (a gRPC slice over it, no copy). The snapshot is
 * retained for that slice and released when gRPC lets go of it (wt_snapshot_retain /
 * wt_snapshot_destroy are thread-safe), so a version may be unpublished while streams still
 * send it. The encoding is a valid WeightChunk (fields may come in any order in protobuf;
 * `data` comes last), which every protobuf library decodes.
 *
 * Receiver: wchunk_decode parses a WeightChunk straight from the pieces gRPC received it in
 * (rpc_stream_next_pieces): the scalar fields are read, `data` is described as pieces that
 * point into the message (no copy: wt_recv_add_pieces then copies them once, into the
 * download buffer), and the small sub-messages (manifest, delta) are unpacked with
 * protobuf-c. Unknown fields are skipped (forward compatible); a repeated field keeps its
 * last value. A malformed message is refused with COH_EFORMAT and a message.
 *
 * Module prefix wchunk_ (file named rpc_* because it belongs to the gRPC layer's library).
 */
#ifndef COHORT_RPC_WCHUNK_H
#define COHORT_RPC_WCHUNK_H

#include <stddef.h>
#include <stdint.h>

#include "cohort/v1/learner.pb-c.h"
#include "err.h"
#include "rpc.h"
#include "weights.h"

/* Send the chunk `fields` (every field but data, which must be empty) with data =
 * [offset, offset + len) of s's blob. As rpc_call_send (COH_EINVAL also when the range is
 * not inside the blob); cb runs as for rpc_call_send. */
int wchunk_send(rpc_call *call, const Cohort__V1__WeightChunk *fields, const wt_snapshot *s,
                size_t offset, size_t len, rpc_sent_cb cb, void *data);

/* A decoded WeightChunk. data points into the pieces given to wchunk_decode (valid as long
 * as they are); manifest / delta are NULL when absent. */
typedef struct wchunk_view {
    int64_t version;
    uint64_t offset, total_bytes;
    uint32_t chunk_crc32, total_crc32;
    int wire_dtype;
    const wt_piece *data;
    size_t ndata;    /* pieces of data */
    size_t data_len; /* bytes of data */
    Cohort__V1__WeightManifest *manifest;
    Cohort__V1__WeightDelta *delta;
    /* private */
    wt_piece *seg_;
    size_t seg_cap_;
} wchunk_view;

void wchunk_view_init(wchunk_view *v);
/* Free what the view holds (it may be decoded into again after wchunk_view_init). */
void wchunk_view_clear(wchunk_view *v);
/* Decode a WeightChunk given as n pieces into v (whose previous contents are dropped). */
int wchunk_decode(wchunk_view *v, const rpc_piece *pieces, size_t n, coh_err *err);

#endif
