/* vtrack.c - the actor's version tracking (see vtrack.h). */
#include "vtrack.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct vtrack {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* new notice, new pending policy, stop */
    int stopped;
    int have_notice;
    vtrack_notice latest;
    long seq; /* bumps on every notice */
    policy *pending;
    int64_t held_version;
    uint32_t held_checksum;
    int64_t learner_version;
};

void vtrack_notice_free(vtrack_notice *n)
{
    if (!n)
        return;
    free(n->config_json);
    free(n->tokenizer_json);
    memset(n, 0, sizeof *n);
}

/* A copy of s, NULL for NULL or ""; *fail set on allocation failure. */
static char *vtrack_dup_(const char *s, int *fail)
{
    if (!s || !*s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        *fail = 1;
    return d;
}

static int vtrack_copy_(vtrack_notice *dst, const vtrack_notice *src)
{
    int fail = 0;
    *dst = *src;
    dst->config_json = vtrack_dup_(src->config_json, &fail);
    dst->tokenizer_json = vtrack_dup_(src->tokenizer_json, &fail);
    if (fail) {
        vtrack_notice_free(dst);
        return COH_ENOMEM;
    }
    return COH_OK;
}

int vtrack_create(vtrack **out, coh_err *err)
{
    *out = NULL;
    vtrack *vt = calloc(1, sizeof *vt);
    if (!vt)
        return coh_fail(err, COH_ENOMEM, "out of memory for the version tracker");
    if (pthread_mutex_init(&vt->mu, NULL)) {
        free(vt);
        return coh_fail(err, COH_ENOMEM, "cannot create the version tracker's mutex");
    }
    if (pthread_cond_init(&vt->cv, NULL)) {
        pthread_mutex_destroy(&vt->mu);
        free(vt);
        return coh_fail(err, COH_ENOMEM, "cannot create the version tracker's condition");
    }
    vt->held_version = -1;
    vt->learner_version = -1;
    *out = vt;
    return COH_OK;
}

void vtrack_destroy(vtrack *vt)
{
    if (!vt)
        return;
    policy_destroy(vt->pending);
    vtrack_notice_free(&vt->latest);
    pthread_cond_destroy(&vt->cv);
    pthread_mutex_destroy(&vt->mu);
    free(vt);
}

int vtrack_notice_seen(vtrack *vt, const vtrack_notice *n)
{
    vtrack_notice copy;
    if (vtrack_copy_(&copy, n))
        return COH_ENOMEM;
    pthread_mutex_lock(&vt->mu);
    vtrack_notice_free(&vt->latest);
    vt->latest = copy;
    vt->have_notice = 1;
    vt->learner_version = n->version;
    vt->seq++;
    pthread_cond_broadcast(&vt->cv);
    pthread_mutex_unlock(&vt->mu);
    return COH_OK;
}

int vtrack_wait_download(vtrack *vt, long skip_seq, vtrack_notice *out, long *seq)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&vt->mu);
    while (!vt->stopped &&
           !(vt->have_notice && vt->seq != skip_seq &&
             (vt->latest.version != vt->held_version ||
              vt->latest.checksum != vt->held_checksum)))
        pthread_cond_wait(&vt->cv, &vt->mu);
    if (vt->stopped) {
        pthread_mutex_unlock(&vt->mu);
        return 1;
    }
    *seq = vt->seq;
    int rc = vtrack_copy_(out, &vt->latest);
    pthread_mutex_unlock(&vt->mu);
    return rc;
}

int vtrack_publish(vtrack *vt, policy *p)
{
    if (!p)
        return COH_EINVAL;
    pthread_mutex_lock(&vt->mu);
    policy *old = vt->pending; /* never adopted: the newer one replaces it */
    vt->pending = p;
    vt->held_version = policy_version(p);
    vt->held_checksum = policy_checksum(p);
    pthread_cond_broadcast(&vt->cv);
    pthread_mutex_unlock(&vt->mu);
    policy_destroy(old);
    return COH_OK;
}

policy *vtrack_take(vtrack *vt)
{
    pthread_mutex_lock(&vt->mu);
    policy *p = vt->pending;
    vt->pending = NULL;
    pthread_mutex_unlock(&vt->mu);
    return p;
}

policy *vtrack_wait_policy(vtrack *vt)
{
    pthread_mutex_lock(&vt->mu);
    while (!vt->stopped && !vt->pending)
        pthread_cond_wait(&vt->cv, &vt->mu);
    policy *p = NULL;
    if (!vt->stopped) {
        p = vt->pending;
        vt->pending = NULL;
    }
    pthread_mutex_unlock(&vt->mu);
    return p;
}

int64_t vtrack_held(vtrack *vt, uint32_t *checksum)
{
    pthread_mutex_lock(&vt->mu);
    int64_t v = vt->held_version;
    if (checksum)
        *checksum = vt->held_checksum;
    pthread_mutex_unlock(&vt->mu);
    return v;
}

void vtrack_set_learner_version(vtrack *vt, int64_t version)
{
    pthread_mutex_lock(&vt->mu);
    vt->learner_version = version;
    pthread_mutex_unlock(&vt->mu);
}

void vtrack_raise_learner_version(vtrack *vt, int64_t version)
{
    pthread_mutex_lock(&vt->mu);
    if (version > vt->learner_version)
        vt->learner_version = version;
    pthread_mutex_unlock(&vt->mu);
}

int64_t vtrack_learner_version(vtrack *vt)
{
    pthread_mutex_lock(&vt->mu);
    int64_t v = vt->learner_version;
    pthread_mutex_unlock(&vt->mu);
    return v;
}

void vtrack_stop(vtrack *vt)
{
    pthread_mutex_lock(&vt->mu);
    vt->stopped = 1;
    pthread_cond_broadcast(&vt->cv);
    pthread_mutex_unlock(&vt->mu);
}
