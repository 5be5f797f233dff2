/* wpub.c - the learner's published weight versions (see wpub.h). */
#include "wpub.h"

#include <inttypes.h>
#include <stdlib.h>

struct wpub_ref {
    wt_snapshot *snap;
    int refs; /* the publisher's own (while one of the two newest) + one per download */
};

struct wpub {
    wpub_ref *cur, *prev;
};

int wpub_create(wpub **out, coh_err *err)
{
    *out = calloc(1, sizeof **out);
    return *out ? COH_OK : coh_fail(err, COH_ENOMEM, "out of memory");
}

void wpub_release(wpub_ref *r)
{
    if (r && --r->refs == 0) {
        wt_snapshot_destroy(r->snap);
        free(r);
    }
}

void wpub_destroy(wpub *p)
{
    if (!p)
        return;
    wpub_release(p->cur);
    wpub_release(p->prev);
    free(p);
}

int wpub_publish(wpub *p, wt_snapshot *s, coh_err *err)
{
    wpub_ref *r = calloc(1, sizeof *r);
    if (!r) {
        wt_snapshot_destroy(s);
        return coh_fail(err, COH_ENOMEM, "out of memory publishing a version");
    }
    r->snap = s;
    r->refs = 1;
    wpub_release(p->prev);
    p->prev = p->cur;
    p->cur = r;
    return COH_OK;
}

const wt_snapshot *wpub_current(const wpub *p) { return p->cur ? p->cur->snap : NULL; }

int64_t wpub_current_version(const wpub *p)
{
    return p->cur ? wt_snapshot_version(p->cur->snap) : -1;
}

wpub_verdict wpub_acquire(wpub *p, int64_t v, wpub_ref **out, coh_err *err)
{
    *out = NULL;
    if (!p->cur) {
        coh_fail(err, COH_ESTATE, "no version is published yet; retry shortly");
        return WPUB_NONE;
    }
    wpub_ref *r = wt_snapshot_version(p->cur->snap) == v                 ? p->cur
                  : p->prev && wt_snapshot_version(p->prev->snap) == v ? p->prev
                                                                       : NULL;
    int64_t cv = wt_snapshot_version(p->cur->snap);
    if (!r) {
        int future = v > cv;
        coh_fail(err, future ? COH_ENOTFOUND : COH_ESTATE,
                 "version %" PRId64 " %s; the newest is %" PRId64, v,
                 future ? "does not exist" : "is no longer kept", cv);
        return future ? WPUB_FUTURE : WPUB_GONE;
    }
    r->refs++;
    *out = r;
    return WPUB_OK;
}

const wt_snapshot *wpub_ref_snapshot(const wpub_ref *r) { return r->snap; }
