/* history.c - the learner's recent step records (see history.h). */
#include "history.h"

#include <stdlib.h>

struct mhist {
    mhist_rec *ring;
    int cap;
    long first, end;
};

int mhist_create(int capacity, mhist **out, coh_err *err)
{
    *out = NULL;
    if (capacity < 1 || capacity > (1 << 20))
        return coh_fail(err, COH_EINVAL, "mhist_create: capacity must be 1..2^20, got %d",
                        capacity);
    mhist *h = calloc(1, sizeof *h);
    if (h)
        h->ring = calloc((size_t)capacity, sizeof *h->ring);
    if (!h || !h->ring) {
        free(h);
        return coh_fail(err, COH_ENOMEM, "out of memory for %d step records", capacity);
    }
    h->cap = capacity;
    *out = h;
    return COH_OK;
}

void mhist_destroy(mhist *h)
{
    if (h) {
        free(h->ring);
        free(h);
    }
}

void mhist_push(mhist *h, const mhist_rec *r)
{
    long s = r->m.step;
    if (s < 0)
        return;
    if (h->first == h->end || s + 1 < h->end || s > h->end)
        h->first = s; /* empty, went back (restart) or skipped ahead: start over */
    h->ring[s % h->cap] = *r;
    h->end = s + 1;
    if (h->end - h->first > h->cap)
        h->first = h->end - h->cap;
}

long mhist_first(const mhist *h) { return h->first; }
long mhist_end(const mhist *h) { return h->end; }

const mhist_rec *mhist_get(const mhist *h, long step)
{
    if (step < h->first || step >= h->end)
        return NULL;
    return &h->ring[step % h->cap];
}

const mhist_rec *mhist_last(const mhist *h)
{
    return h->first == h->end ? NULL : &h->ring[(h->end - 1) % h->cap];
}
