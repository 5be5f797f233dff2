/* wpub.c - the learner's published weight versions (see wpub.h). */
#include "wpub.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

struct wpub_ref {
    wt_snapshot *snap;
    int refs; /* the publisher's own (while one of the two newest) + one per download */
    wt_snapshot *bf16;     /* made at the first BF16 request */
    wt_snapshot *delta;    /* made at the first delta request, from version delta_from */
    int64_t delta_from;
    int64_t no_delta_from; /* a delta from this version cannot be made (layouts differ) */
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
        wt_snapshot_destroy(r->bf16);
        wt_snapshot_destroy(r->delta);
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
    r->delta_from = -1;
    r->no_delta_from = -1;
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

int wpub_variant(wpub *p, wpub_ref *r, wt_wire wire, int64_t delta_base, wt_snapshot **out,
                 char *why, size_t why_len, coh_err *err)
{
    *out = NULL;
    if (why && why_len)
        why[0] = 0;
    int64_t v = wt_snapshot_version(r->snap);
    if (wire == WT_WIRE_F32) {
        *out = wt_snapshot_retain(r->snap);
        return COH_OK;
    }
    if (wire == WT_WIRE_BF16) {
        if (!r->bf16) {
            int rc = wt_snapshot_make_bf16(r->snap, &r->bf16, err);
            if (rc)
                return rc;
        }
        *out = wt_snapshot_retain(r->bf16);
        return COH_OK;
    }
    if (wire != WT_WIRE_DELTA)
        return coh_fail(err, COH_EINVAL, "unknown weight wire format %d", (int)wire);
    if (r->delta && r->delta_from == delta_base) {
        *out = wt_snapshot_retain(r->delta);
        return COH_OK;
    }
    const wpub_ref *base = p->cur && wt_snapshot_version(p->cur->snap) == delta_base ? p->cur
                           : p->prev && wt_snapshot_version(p->prev->snap) == delta_base
                               ? p->prev
                               : NULL;
    const char *note = NULL;
    if (delta_base >= v)
        note = "the base version is not older than the requested one";
    else if (!base)
        note = "the base version is no longer kept";
    else if (r->no_delta_from == delta_base)
        note = "the two versions have different tensor layouts";
    if (!note) {
        wt_snapshot *d = NULL;
        coh_err e2;
        int rc = wt_snapshot_make_delta(base->snap, r->snap, &d, &e2);
        if (rc == COH_EUNSUPPORTED) {
            r->no_delta_from = delta_base;
            note = "the two versions have different tensor layouts";
        } else if (rc) {
            *err = e2;
            return rc;
        } else {
            wt_snapshot_destroy(r->delta);
            r->delta = d;
            r->delta_from = delta_base;
            *out = wt_snapshot_retain(d);
            return COH_OK;
        }
    }
    if (why && why_len)
        snprintf(why, why_len, "no delta from version %lld to %lld (%s): full download",
                 (long long)delta_base, (long long)v, note);
    *out = wt_snapshot_retain(r->snap);
    return COH_OK;
}
