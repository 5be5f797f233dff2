/* vtrack.h - the actor's version tracking: the newest VersionNotice seen, the version the
 * actor holds verified, the learner's current version, and the "pending" slot through which
 * the downloader hands a verified policy to the sampling loop.
 *
 * Threads: every function may be called from any thread (one mutex and one condition
 * variable inside). The watcher records notices (vtrack_notice_seen), the downloader waits
 * for work (vtrack_wait_download) and publishes policies (vtrack_publish), the sampling loop
 * takes them (vtrack_take, vtrack_wait_policy) between groups, so it never samples with a
 * partial version and keeps sampling with its old one meanwhile.
 *
 * Ownership: notices are copied in and out (vtrack_notice_free releases a copy). A published
 * policy belongs to vtrack until vtrack_take hands it to the caller; a pending policy that
 * a newer one replaces before anyone took it is destroyed, and vtrack_destroy destroys
 * the one still pending.
 *
 * Stopping: vtrack_stop wakes every waiter for good; the waits then return "stopped".
 */
#ifndef COHORT_ACTOR_VTRACK_H
#define COHORT_ACTOR_VTRACK_H

#include <stdint.h>

#include "err.h"
#include "policy.h"

/* What a VersionNotice says (a caller-owned value; strings malloc'd, free with
 * vtrack_notice_free). */
typedef struct vtrack_notice {
    int64_t version;
    uint64_t total_bytes;
    uint32_t checksum;
    int has_manifest;     /* the notice carried a manifest (then tokenizer_json is known) */
    char *config_json;    /* NULL: the first chunk's manifest gives it */
    char *tokenizer_json; /* NULL = none (default tokenizer) */
} vtrack_notice;

/* Free the strings and zero the struct. NULL is fine. */
void vtrack_notice_free(vtrack_notice *n);

typedef struct vtrack vtrack; /* opaque */

/* Nothing seen, nothing held (held version -1), learner version -1. */
int vtrack_create(vtrack **out, coh_err *err);
/* Frees the pending policy if any. No thread may use vt any more. NULL is fine. */
void vtrack_destroy(vtrack *vt);

/* Record a notice as the newest (copied; strings "" are stored as NULL). It also becomes the
 * learner's current version. Wakes the downloader. COH_ENOMEM leaves the previous notice. */
int vtrack_notice_seen(vtrack *vt, const vtrack_notice *n);
/* Wait until there is a notice worth downloading: one whose (version, checksum) differs from
 * the held one and whose sequence number is not skip_seq (a notice the caller gave up on;
 * -1 = none). Returns 0 with a copy in *out and its sequence number in *seq, 1 when stopped
 * (*out zeroed), COH_ENOMEM. */
int vtrack_wait_download(vtrack *vt, long skip_seq, vtrack_notice *out, long *seq);

/* Hand a verified policy to the sampling loop (p taken over; NULL is COH_EINVAL). It becomes
 * the held version; a pending one not yet taken is destroyed. Wakes vtrack_wait_policy. */
int vtrack_publish(vtrack *vt, policy *p);
/* The pending policy (the caller owns it now), or NULL when none is pending. */
policy *vtrack_take(vtrack *vt);
/* Wait until a policy is pending and take it; NULL when stopped. */
policy *vtrack_wait_policy(vtrack *vt);

/* Newest verified version (pending or in use), -1 = none; *checksum (may be NULL) its CRC. */
int64_t vtrack_held(vtrack *vt, uint32_t *checksum);

/* The learner's current version as last heard: set outright from a registration (the learner
 * may have restarted from an older checkpoint), raised only by a heartbeat (a notice may be
 * newer). -1 before anything was heard. */
void vtrack_set_learner_version(vtrack *vt, int64_t version);
void vtrack_raise_learner_version(vtrack *vt, int64_t version);
int64_t vtrack_learner_version(vtrack *vt);

/* Wake every waiter; from now on waits return at once as stopped. */
void vtrack_stop(vtrack *vt);

#endif
