/* weights.h - a policy version as bytes on the wire: the sender's snapshot and the receiver's
 * resumable, checksummed assembly.
 *
 * A snapshot is the checkpoint's two files in memory (ckpt_to_buffer): config.json text and
 * the model.safetensors blob, with the CRC-32 (zlib) of the blob. The learner keeps one per
 * version it serves and cuts it into chunks; each chunk carries its offset and its own CRC-32.
 *
 * The receiver accepts chunks strictly in order from its current offset (a broken download
 * resumes by asking for wt_recv_offset()), checks each chunk's CRC, and only when every byte
 * is there and the whole blob's CRC matches does wt_recv_finish build the model: an actor
 * never samples with a version it does not hold completely and verified.
 */
#ifndef COHORT_WEIGHTS_H
#define COHORT_WEIGHTS_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "model.h"

/* CRC-32 (zlib polynomial) of len bytes, continuing from crc (start with 0). */
uint32_t wt_crc32(uint32_t crc, const void *data, size_t len);

/* ---- sender ------------------------------------------------------------------------------- */

typedef struct wt_snapshot wt_snapshot; /* opaque, immutable once made */

/* Serialise the policy as version `version`. */
int wt_snapshot_make(const model *m, int64_t version, wt_snapshot **out, coh_err *err);
void wt_snapshot_destroy(wt_snapshot *s);
int64_t wt_snapshot_version(const wt_snapshot *s);
size_t wt_snapshot_size(const wt_snapshot *s);      /* bytes of the weights blob */
uint32_t wt_snapshot_crc(const wt_snapshot *s);     /* CRC-32 of the whole blob */
const char *wt_snapshot_config(const wt_snapshot *s); /* config.json text */

/* The chunk at offset (at most max_len bytes; 0 bytes exactly at the end). Fails with
 * COH_ERANGE when offset is past the end. data points into the snapshot. */
int wt_snapshot_chunk(const wt_snapshot *s, size_t offset, size_t max_len, const void **data,
                      size_t *len, uint32_t *crc, coh_err *err);

/* ---- receiver ----------------------------------------------------------------------------- */

typedef struct wt_recv wt_recv; /* opaque */

/* Expect `total` bytes of version `version` whose CRC-32 is total_crc; config is the
 * version's config.json text (copied). */
int wt_recv_create(int64_t version, size_t total, uint32_t total_crc, const char *config,
                   wt_recv **out, coh_err *err);
void wt_recv_destroy(wt_recv *r);
int64_t wt_recv_version(const wt_recv *r);
/* Bytes received and verified so far: where a resumed download starts. */
size_t wt_recv_offset(const wt_recv *r);
int wt_recv_complete(const wt_recv *r);

/* Add the chunk at offset. Refused, leaving the receiver unchanged: COH_EINVAL when offset is
 * not wt_recv_offset() (a gap or an overlap), COH_EFORMAT when crc does not match the bytes,
 * COH_ERANGE when the chunk runs past total. */
int wt_recv_add(wt_recv *r, size_t offset, const void *data, size_t len, uint32_t crc,
                coh_err *err);
/* All bytes in: verify the whole blob's CRC and build the model (every check ckpt_load
 * makes). COH_ESTATE when bytes are missing, COH_EFORMAT when the total CRC differs. */
int wt_recv_finish(wt_recv *r, model **out, coh_err *err);

#endif
