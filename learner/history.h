/* history.h - the learner's recent step records, for Monitor.WatchMetrics and Status.
 *
 * A ring of the last `capacity` step records, indexed by step number: steps [first, end) are
 * held; pushing step s makes end = s + 1 (a restarted learner may push a step lower than the
 * last one: the history then restarts at it). The last pushed record is the "last-step row"
 * that Status shows; it is always one whole record (never a mix of two steps).
 *
 * Not thread-safe: the learner's loop thread pushes and reads.
 */
#ifndef COHORT_HISTORY_H
#define COHORT_HISTORY_H

#include "err.h"
#include "trainer.h"

/* One step as Monitor reports it. */
typedef struct mhist_rec {
    trainer_metrics m;
    double reward_latency_ms;             /* mean reward latency of the step's groups */
    long dropped_total[TRAINER_DROP_N];   /* cumulative drops by reason up to this step */
} mhist_rec;

typedef struct mhist mhist; /* opaque */

int mhist_create(int capacity, mhist **out, coh_err *err);
void mhist_destroy(mhist *h); /* NULL is fine */

/* Record step r->m.step (copied). */
void mhist_push(mhist *h, const mhist_rec *r);
long mhist_first(const mhist *h); /* oldest step held */
long mhist_end(const mhist *h);   /* one past the newest step held (first == end: empty) */
/* The record of step s, or NULL when it is not held. Valid until the next push. */
const mhist_rec *mhist_get(const mhist *h, long step);
/* The newest record, or NULL when none. */
const mhist_rec *mhist_last(const mhist *h);

#endif
