/* wpub.h - the learner's published weight versions: the two newest snapshots, each shared by
 * the downloads that stream it.
 *
 * wpub_publish makes a snapshot the current version; the previous current one stays
 * downloadable (actors that are one version behind finish their download), older ones are
 * freed once their last download lets go. A download takes a reference (wpub_acquire) and
 * gives it back (wpub_release) when its stream ends, however it ends.
 *
 * Wire variants (wpub_variant): a download may ask for a version in BF16 or as a delta from
 * an older version it holds. Each variant is made once, at its first request, and kept with
 * the version, so every stream and every actor shares it (and its CRC table).
 *
 * Not thread-safe: the learner's loop thread publishes and serves downloads. (The update
 * worker makes a snapshot on its own thread, then hands it to the loop thread, which
 * publishes it.)
 */
#ifndef COHORT_WPUB_H
#define COHORT_WPUB_H

#include <stdint.h>

#include "err.h"
#include "weights.h"

typedef struct wpub wpub;         /* opaque */
typedef struct wpub_ref wpub_ref; /* a counted reference to one published snapshot */

typedef enum wpub_verdict {
    WPUB_OK = 0,
    WPUB_FUTURE,  /* the version does not exist (yet): NOT_FOUND */
    WPUB_GONE,    /* the version is no longer kept: FAILED_PRECONDITION */
    WPUB_NONE     /* nothing published yet: UNAVAILABLE */
} wpub_verdict;

int wpub_create(wpub **out, coh_err *err);
/* Drops the publisher's own references; snapshots still held by downloads live on until
 * their wpub_release. NULL is fine. */
void wpub_destroy(wpub *p);

/* Publish s (ownership passes in, also on failure) as the current version. */
int wpub_publish(wpub *p, wt_snapshot *s, coh_err *err);
/* The current snapshot, or NULL before the first publish (not a reference: valid until the
 * next publish). */
const wt_snapshot *wpub_current(const wpub *p);
int64_t wpub_current_version(const wpub *p); /* -1 before the first publish */

/* A reference to version v for a download; err says which version to fetch instead. */
wpub_verdict wpub_acquire(wpub *p, int64_t v, wpub_ref **out, coh_err *err);
const wt_snapshot *wpub_ref_snapshot(const wpub_ref *r);
/* What a download of r's version sends: wire WT_WIRE_F32 (the snapshot itself) or
 * WT_WIRE_BF16, or with wire WT_WIRE_DELTA the delta from version delta_base. A delta falls
 * back to the full F32 snapshot (a note in *why, if non-NULL, says why) when delta_base is
 * not kept any more, is not older than r's version, or has another tensor layout; check
 * wt_snapshot_wire(*out). *out is a new reference (wt_snapshot_destroy it when the stream
 * ends). COH_ENOMEM; COH_EFORMAT (no BF16 of a blob that is not F32-only); COH_EINVAL
 * (unknown wire). */
int wpub_variant(wpub *p, wpub_ref *r, wt_wire wire, int64_t delta_base, wt_snapshot **out,
                 char *why, size_t why_len, coh_err *err);
void wpub_release(wpub_ref *r); /* NULL is fine */

#endif
