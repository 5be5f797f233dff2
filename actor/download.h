/* download.h - the actor's weights side: watching the learner's policy versions
 * (WatchVersions) and downloading them (DownloadWeights) into a verified policy.
 *
 * A download assembles the version in a wt_recv (common/weights.h): chunks are accepted
 * strictly in order, each chunk's CRC-32 is checked, a broken or refused stream resumes at
 * wt_recv_offset (the bytes received and verified so far), and only a complete blob whose
 * whole CRC-32 matches becomes a policy (wt_recv_finish). The actor never samples with a
 * partial version.
 *
 * Threads: download_watch_run and download_run are thread bodies (one thread each); both
 * return when the session stops. download_version blocks the calling thread. All three
 * register again (session_register) when the learner says the actor is unknown, and open
 * their streams through the session, so session_stop cancels them at once.
 */
#ifndef COHORT_ACTOR_DOWNLOAD_H
#define COHORT_ACTOR_DOWNLOAD_H

#include "policy.h"
#include "session.h"
#include "vtrack.h"
#include "weights.h"

/* Outcome of download_version. */
typedef enum download_result {
    DOWNLOAD_OK = 0,      /* *out holds the verified policy */
    DOWNLOAD_SKIP = 1,    /* give this version up (not downloadable any more, never existed,
                           * corrupt beyond resuming, or 20 failed attempts in a row): wait
                           * for a newer notice */
    DOWNLOAD_STOPPED = -1 /* the session is stopping */
} download_result;

/* How the actor asks for weights (all off / 0 by default: the F32 blob in full). */
typedef struct download_opts {
    /* Ask for WEIGHT_WIRE_DTYPE_BF16: half the bytes on the wire, every weight rounded to
     * bfloat16 (nearest even) and widened back. The actor then SAMPLES WITH THE ROUNDED
     * POLICY: its behaviour log-probabilities are those of the bf16-rounded weights, not of
     * the learner's F32 ones (the learner logs every BF16 download it serves). Off by
     * default for that reason. */
    int bf16;
    /* Ask for a delta from the version held (only the tensors that changed: policies with
     * frozen parts). Keeps the held version's F32 blob in memory (one more copy of the
     * weights). The patched result is verified against the version's whole CRC-32; when the
     * learner cannot make a delta it sends the full blob, and a delta that fails to verify
     * is dropped for a full download. Ignored with bf16. */
    int delta;
    /* Largest chunk to ask for. 0 = as large as gRPC's default 4 MiB receive limit allows
     * next to the manifest the notice announced (at most 3 MiB); a channel with a raised
     * max_receive_bytes may ask for more (the learner allows up to 16 MiB). */
    uint32_t max_chunk_bytes;
} download_opts;

/* What a downloader keeps between versions (one cache per downloading thread):
 *  - its download buffers (a wt_pool, common/weights.h): every download through the cache
 *    writes into buffers the previous ones used and gave back, so a steady-state download
 *    touches no fresh pages (page faults on fresh big buffers dominated a download). Costs
 *    one F32 copy of the weights kept between downloads (two with BF16: the BF16 receive
 *    buffer and the widened blob; with delta: the delta's receive buffer and a spare blob);
 *  - with download_opts.delta: the verified F32 blob of the version it holds, the base of
 *    the next delta. A download that fails leaves it as it was, except a delta whose
 *    patched result fails the version's CRC (the base is then suspect and dropped). */
typedef struct download_cache download_cache;
int download_cache_create(download_cache **out); /* COH_ENOMEM */
void download_cache_destroy(download_cache *c);  /* NULL is fine */
/* Version whose blob the cache holds, -1 if none. */
int64_t download_cache_version(const download_cache *c);
/* The held blob (NULL, *len 0 if none): for tests. */
const void *download_cache_blob(const download_cache *c, size_t *len);
/* Buffer reuse so far (wt_pool_stats; all zero for NULL). */
void download_cache_stats(const download_cache *c, wt_pool_stats *st);

/* Download version nt (as a VersionNotice announced it) into a verified policy. Resumes
 * broken streams at the verified offset with back-off (200 ms doubling to 5 s). The tokenizer
 * comes from the notice's manifest, else from the first chunk's, else the default one; the
 * config.json likewise. FAILED_PRECONDITION / NOT_FOUND (not an unknown actor) give
 * DOWNLOAD_SKIP; so does a chunk naming another version, size or CRC than the notice. */
download_result download_version(session *s, const vtrack_notice *nt, policy **out);
/* download_version with options (NULL = defaults) and a cache (NULL = none: no delta). A
 * BF16 or delta stream is checked against the totals its first chunk announces (the bytes
 * actually sent); a delta's base version, result size and CRC against the notice and the
 * cache. */
download_result download_version_opts(session *s, const vtrack_notice *nt,
                                      const download_opts *o, download_cache *cache,
                                      policy **out);

/* Thread body: wait for a notice worth downloading (vtrack_wait_download), download it,
 * publish the verified policy (vtrack_publish); a skipped notice is not tried again until a
 * newer one (or a re-watch) arrives. */
void download_run(session *s, vtrack *vt);
/* download_run with options (NULL = defaults); keeps its own download_cache, so that its
 * download buffers are reused from one version to the next. */
void download_run_opts(session *s, vtrack *vt, const download_opts *o);

/* Thread body: WatchVersions, recording every VersionNotice in vt (vtrack_notice_seen);
 * re-watches at once when a stream that delivered reaches its deadline or ends OK, registers
 * again for an unknown actor, and reconnects with back-off otherwise. */
void download_watch_run(session *s, vtrack *vt);

#endif
