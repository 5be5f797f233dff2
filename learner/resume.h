/* resume.h - the learner service's place in the RL data, saved in every checkpoint
 * (cluster_state.json) so that a restarted learner goes on exactly where it was.
 *
 * Saved: the prompt cursor (next new prompt index), every prompt not yet settled (the
 * lease table's orphans and live leases, lease_pending), the acceptance number of the last
 * group whose training the checkpoint holds (consumed_seq) and the next acceptance number.
 *
 * After a restart the learner replays the accepted-group log (acklog.h) after consumed_seq;
 * rsm_plan then says where the prompts stand: groups logged after the checkpoint settled
 * their prompts, prompts handed out after the checkpoint whose groups never came back go out
 * again, and the cursor continues after the highest prompt seen. So no prompt is lost, and
 * no accepted group is trained twice or never.
 *
 * Pure functions and files; no threads.
 */
#ifndef COHORT_RESUME_H
#define COHORT_RESUME_H

#include <stdint.h>

#include "err.h"

#define RSM_FILE "cluster_state.json"

typedef struct rsm_state {
    uint64_t cursor;       /* next new prompt index */
    uint64_t consumed_seq; /* groups with seq <= this are in the checkpoint's weights */
    uint64_t next_seq;     /* acceptance number of the next accepted group */
    uint64_t *pending;     /* prompts not settled, in the order to issue them again */
    int n_pending;
} rsm_state;

/* JSON text of s (malloc'd) into *text. */
int rsm_to_json(const rsm_state *s, char **text, coh_err *err);
/* Parse JSON text; s->pending is malloc'd (rsm_free). A missing or malformed field is
 * COH_EFORMAT naming it. */
int rsm_from_json(const char *text, rsm_state *s, coh_err *err);
/* Read dir/cluster_state.json; COH_ENOTFOUND when the checkpoint has none (one written by
 * cohort-train or by an older learner). */
int rsm_load(const char *dir, rsm_state *s, coh_err *err);
void rsm_free(rsm_state *s);

/* Where prompts stand after replaying logged groups whose prompts are logged[0..n_logged):
 * *requeue (malloc'd, *n_requeue entries) = the saved pending prompts, then the prompts in
 * [s->cursor, *cursor) handed out after the checkpoint, leaving out every logged prompt,
 * without duplicates, in that order; *cursor = max(s->cursor, highest logged prompt + 1). */
int rsm_plan(const rsm_state *s, const uint64_t *logged, int n_logged, uint64_t **requeue,
             int *n_requeue, uint64_t *cursor, coh_err *err);

#endif
