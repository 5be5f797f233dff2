/* weights.h - a policy version as bytes on the wire: the sender's snapshot and the receiver's
 * resumable, checksummed assembly.
 *
 * A snapshot is the checkpoint's two files in memory (ckpt_to_buffer): config.json text and
 * the model.safetensors blob, with the CRC-32 (zlib) of the blob. The learner keeps one per
 * version it serves and cuts it into chunks; each chunk carries its offset and its own CRC-32.
 * Checksums are computed once per version: wt_snapshot_make records the CRC-32 of every
 * WT_CRC_BLOCK-byte block, and a chunk's CRC is combined from them (plus at most two partial
 * blocks at its ends), so serving a version to many actors costs no checksum pass per stream.
 *
 * A snapshot is reference-counted (wt_snapshot_retain / wt_snapshot_destroy, thread-safe): a
 * sender that hands its bytes to the network without copying (gRPC slices over the blob)
 * retains it per piece and lets go when the network does, on whatever thread that happens.
 * The blob is immutable, so any number of streams read it at once.
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

/* CRC-32 (zlib polynomial) of len bytes, continuing from crc (start with 0). The result is
 * exactly zlib's crc32(); on x86-64 CPUs with PCLMULQDQ and SSE4.1 (checked at run time) it
 * folds 64 bytes per step with carry-less multiplication, elsewhere it calls zlib. */
uint32_t wt_crc32(uint32_t crc, const void *data, size_t len);
/* Which implementation wt_crc32 uses: "pclmul" or "zlib". */
const char *wt_crc32_impl(void);
/* Force zlib's crc32 (force != 0) or the run-time choice (0): for tests and benchmarks. */
void wt_crc32_force_zlib(int force);

/* Block size of the per-version CRC table (chunks aligned to it reuse the table fully). */
#define WT_CRC_BLOCK ((size_t)64 << 10)

/* A piece of bytes (scatter/gather). */
typedef struct wt_piece {
    const void *data;
    size_t len;
} wt_piece;

/* ---- sender ------------------------------------------------------------------------------- */

typedef struct wt_snapshot wt_snapshot; /* opaque, immutable once made */

/* Serialise the policy as version `version`. */
int wt_snapshot_make(const model *m, int64_t version, wt_snapshot **out, coh_err *err);
/* Take one more reference (any thread). Returns s. */
wt_snapshot *wt_snapshot_retain(const wt_snapshot *s);
/* Drop one reference (any thread); the last one frees the snapshot. NULL is fine. */
void wt_snapshot_destroy(wt_snapshot *s);
/* The blob itself (immutable while any reference lives). */
const void *wt_snapshot_blob(const wt_snapshot *s);
int64_t wt_snapshot_version(const wt_snapshot *s);
size_t wt_snapshot_size(const wt_snapshot *s);      /* bytes of the weights blob */
uint32_t wt_snapshot_crc(const wt_snapshot *s);     /* CRC-32 of the whole blob */
const char *wt_snapshot_config(const wt_snapshot *s); /* config.json text */

/* ---- wire variants of a version: BF16 and delta ----
 * A variant is itself a snapshot (refcounted, per-block CRCs, chunked the same way) whose
 * blob is what goes on the wire instead of the F32 file; its version and config are the
 * source's. The learner makes each variant once per version and shares it between streams. */

typedef enum wt_wire {
    WT_WIRE_F32 = 0,  /* the model.safetensors bytes */
    WT_WIRE_BF16 = 1, /* same file, every F32 value rounded to bfloat16 (see learner.proto) */
    WT_WIRE_DELTA = 2 /* only the byte ranges that differ from a base version */
} wt_wire;

/* A byte range of a blob. */
typedef struct wt_range {
    size_t off, len;
} wt_range;

/* float -> bfloat16 bits, round to nearest even (NaN stays a quiet NaN of the same sign). */
uint16_t wt_f32_to_bf16(float f);

/* The BF16 variant of an F32 snapshot: header verbatim except metadata cohort_crc32, which
 * names the CRC of the widened data section, then each F32 value as its bfloat16 (LE).
 * COH_EFORMAT if f32 is not an F32-only safetensors blob. */
int wt_snapshot_make_bf16(const wt_snapshot *f32, wt_snapshot **out, coh_err *err);
/* The delta variant taking base to cur: the blob is the concatenation of cur's ranges that
 * differ from base (the safetensors header, then every tensor whose bytes differ, in
 * offset order). COH_EUNSUPPORTED when the two layouts differ (sizes, header length,
 * tensor names or offsets): send the full blob then. */
int wt_snapshot_make_delta(const wt_snapshot *base, const wt_snapshot *cur, wt_snapshot **out,
                           coh_err *err);
wt_wire wt_snapshot_wire(const wt_snapshot *s);
/* Delta variants only (else 0 / NULL / -1): the ranges of the new blob the delta carries,
 * the names of the changed tensors, the base version, the new blob's size and CRC. */
size_t wt_snapshot_delta_ranges(const wt_snapshot *s, const wt_range **ranges);
size_t wt_snapshot_delta_names(const wt_snapshot *s, const char *const **names);
int64_t wt_snapshot_delta_base(const wt_snapshot *s);
size_t wt_snapshot_delta_result_size(const wt_snapshot *s);
uint32_t wt_snapshot_delta_result_crc(const wt_snapshot *s);

/* The chunk at offset (at most max_len bytes; 0 bytes exactly at the end). Fails with
 * COH_ERANGE when offset is past the end. data points into the snapshot; crc comes from the
 * per-block table (no pass over the bytes when offset and length are block-aligned). */
int wt_snapshot_chunk(const wt_snapshot *s, size_t offset, size_t max_len, const void **data,
                      size_t *len, uint32_t *crc, coh_err *err);

/* ---- reusable download buffers ------------------------------------------------------------ */

/* A pool of up to WT_POOL_MAX big buffers that a receiver takes its buffers from and gives
 * them back to, so that a downloader that fetches version after version writes into memory
 * it already touched: a fresh buffer above glibc's mmap threshold is a new mapping whose every
 * page faults in on first write, and those faults dominated a download's time. The pool
 * keeps what it is given until destroyed (up to WT_POOL_MAX buffers: when full, the smallest
 * is freed), so a downloader holds one (F32) to two (BF16, delta) extra copies of the
 * weights between downloads. Not thread-safe: one pool per downloading thread. */
#define WT_POOL_MAX 2
typedef struct wt_pool wt_pool;
typedef struct wt_pool_stats {
    size_t reused;     /* buffers handed out from the pool */
    size_t fresh;      /* buffers allocated because none in the pool fitted */
    size_t buffers;    /* buffers held now */
    size_t held_bytes; /* their capacity */
} wt_pool_stats;
int wt_pool_create(wt_pool **out, coh_err *err);
void wt_pool_destroy(wt_pool *p); /* frees every buffer held; NULL is fine */
/* A buffer of at least n bytes: the smallest held one that fits and is no more than a third
 * bigger than n (its old contents are garbage), else a fresh one (2 MiB aligned, huge pages
 * asked for when big). *cap is its capacity. NULL when out of memory. p NULL: always fresh. */
void *wt_pool_get(wt_pool *p, size_t n, size_t *cap);
/* Give buf (from wt_pool_get or wt_recv_take_f32, cap its capacity) to the pool; p NULL:
 * free it. buf NULL is fine. */
void wt_pool_put(wt_pool *p, void *buf, size_t cap);
void wt_pool_get_stats(const wt_pool *p, wt_pool_stats *st); /* p NULL: all zero */

/* Tune the C library's allocator for a process that downloads weights version after version
 * (the actor): freed memory stays in the heap instead of going back to the kernel (trim
 * threshold 512 MiB) and blocks up to 64 MiB come from the heap instead of their own
 * mappings, so that gRPC's receive buffers (several MiB each with big chunks and a big
 * HTTP/2 window) are not fresh, page-faulting memory on every download. The price: the
 * process keeps the memory of its busiest moment (RSS does not shrink between versions).
 * Call once at start-up, before other threads. COH_EUNSUPPORTED when the allocator does
 * not take the settings (not glibc's malloc, e.g. under AddressSanitizer): harmless. */
int wt_malloc_keep_memory(void);

/* ---- receiver ----------------------------------------------------------------------------- */

typedef struct wt_recv wt_recv; /* opaque */

/* Expect `total` bytes of version `version` whose CRC-32 is total_crc; config is the
 * version's config.json text (copied). */
int wt_recv_create(int64_t version, size_t total, uint32_t total_crc, const char *config,
                   wt_recv **out, coh_err *err);
/* wt_recv_create taking its buffers (the receive buffer, and the F32 blob that BF16 widening
 * or delta patching makes) from pool and giving back on wt_recv_destroy every one not taken
 * with wt_recv_take_f32. pool (NULL = plain malloc / free) must outlive r. */
int wt_recv_create_pooled(int64_t version, size_t total, uint32_t total_crc, const char *config,
                          wt_pool *pool, wt_recv **out, coh_err *err);
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
/* wt_recv_add for a chunk whose data arrives in n pieces (e.g. the slices of a network
 * message): the pieces are copied straight into the receiver's buffer, then checked; the
 * same refusals, and a refused chunk leaves the receiver unchanged. */
int wt_recv_add_pieces(wt_recv *r, size_t offset, const wt_piece *pieces, size_t n,
                       uint32_t crc, coh_err *err);
/* Make r receive a BF16 blob (WT_WIRE_BF16; total / total_crc of wt_recv_create describe
 * the BF16 bytes): wt_recv_finish widens it to the F32 file before building the model. */
void wt_recv_set_bf16(wt_recv *r);
/* Make r receive a delta (WT_WIRE_DELTA; total / total_crc describe the concatenated
 * ranges): base (base_len bytes, the verified F32 blob of the base version; borrowed, it
 * must stay alive and unchanged until wt_recv_finish returns) patched with the n ranges
 * must give result_size bytes whose CRC-32 is result_crc. COH_EINVAL when the ranges are
 * not sorted, overlap, run past result_size or do not add up to total; COH_ERANGE when
 * base_len != result_size (the layouts differ). */
int wt_recv_set_delta(wt_recv *r, const void *base, size_t base_len, const wt_range *ranges,
                      size_t n, size_t result_size, uint32_t result_crc, coh_err *err);
/* All bytes in: verify the whole blob's CRC and build the model (every check ckpt_load
 * makes). COH_ESTATE when bytes are missing, COH_EFORMAT when the total CRC differs (for a
 * delta: also when the patched result's CRC differs from result_crc). */
int wt_recv_finish(wt_recv *r, model **out, coh_err *err);
/* After a successful wt_recv_finish: hand over the verified F32 blob the model was built
 * from, e.g. to keep as the base of a later delta: the caller frees it (free) or gives it
 * back to a pool (wt_pool_put with *cap, its capacity; cap may be NULL). NULL (len and cap
 * 0) when it was already taken or finish did not succeed. The model does not refer to it. */
void *wt_recv_take_f32(wt_recv *r, size_t *len, size_t *cap);

#endif
