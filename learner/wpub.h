/* wpub.h - the learner's published weight versions: the two newest snapshots, each shared by
 * the downloads that stream it.
 *
 * wpub_publish makes a snapshot the current version; the previous current one stays
 * downloadable (actors that are one version behind finish their download), older ones are
 * freed once their last download lets go. A download takes a reference (wpub_acquire) and
 * gives it back (wpub_release) when its stream ends, however it ends.
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
void wpub_release(wpub_ref *r); /* NULL is fine */

#endif
