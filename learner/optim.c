/* optim.c - AdamW with decoupled weight decay, global grad-norm clipping and the
 * learning-rate schedule (see optim.h).
 *
 * Segments say which parameter ranges are weight-decayed; they are kept sorted by offset
 * (overlaps are refused), and a step walks the parameter vector once, range by range, with
 * decay on the decayed segments and none on everything else. A gradient holding a NaN or an
 * infinity is detected before anything is written, so a skipped step changes nothing.
 * The update itself runs in float, vectorised (kern_adamw), with the clip factor applied to
 * the gradient in the same pass; the gradient norm is summed in double.
 */
#include "optim.h"

#include "kern.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define OPTIM_CLIP_EPS 1e-6

struct adamw {
    size_t n;
    float *m, *v;
    long t;              /* completed steps */
    optim_segment *segs; /* sorted by offset, disjoint */
    int n_segs;
};

optim_config optim_config_default(void)
{
    optim_config c;
    memset(&c, 0, sizeof c);
    c.lr = 1e-3f;
    c.beta1 = 0.9f;
    c.beta2 = 0.99f;
    c.eps = 1e-8f;
    c.weight_decay = 0.0f;
    c.grad_clip = 1.0f;
    c.warmup_steps = 0;
    c.total_steps = 0;
    c.schedule = SCHED_CONSTANT;
    c.min_lr_ratio = 0.0f;
    return c;
}

static const char *const schedule_names[] = {"constant", "linear", "cosine"};
#define N_SCHEDULES ((int)(sizeof schedule_names / sizeof schedule_names[0]))

const char *optim_schedule_name(optim_schedule s)
{
    return (int)s >= 0 && (int)s < N_SCHEDULES ? schedule_names[s] : "unknown";
}

int optim_parse_schedule(const char *s, optim_schedule *out, coh_err *err)
{
    for (int i = 0; s && i < N_SCHEDULES; i++)
        if (strcmp(s, schedule_names[i]) == 0) {
            *out = (optim_schedule)i;
            return COH_OK;
        }
    return coh_fail(err, COH_EINVAL,
                    "unknown learning-rate schedule \"%s\"; valid schedules are constant, "
                    "linear, cosine",
                    s ? s : "(null)");
}

float optim_lr_at(const optim_config *c, long step)
{
    double lr = c->lr;
    if (step < 0)
        step = 0;
    if (c->warmup_steps > 0 && step < c->warmup_steps)
        return (float)(lr * (double)(step + 1) / (double)c->warmup_steps);
    if (c->schedule == SCHED_CONSTANT || c->total_steps <= 0)
        return (float)lr;
    long start = c->warmup_steps > 0 ? c->warmup_steps : 0;
    long span = (long)c->total_steps - start;
    double progress = span > 0 ? (double)(step - start) / (double)span : 1.0;
    if (progress > 1.0)
        progress = 1.0;
    double floor_lr = (double)c->min_lr_ratio * lr;
    double frac = c->schedule == SCHED_LINEAR ? 1.0 - progress
                                              : 0.5 * (1.0 + cos(M_PI * progress));
    return (float)(floor_lr + (lr - floor_lr) * frac);
}

double optim_grad_norm(const float *g, size_t n)
{
    return sqrt(kern_sumsq(g, n));
}

static int seg_cmp(const void *a, const void *b)
{
    size_t x = ((const optim_segment *)a)->offset, y = ((const optim_segment *)b)->offset;
    return x < y ? -1 : x > y;
}

int adamw_create(size_t n_params, const optim_segment *segs, int n_segs, adamw **out,
                 coh_err *err)
{
    if (!out)
        return coh_fail(err, COH_EINVAL, "adamw_create: output pointer is NULL");
    *out = NULL;
    if (n_params == 0)
        return coh_fail(err, COH_EINVAL, "optimizer over 0 parameters; there is nothing to train");
    if (n_segs < 0 || (n_segs > 0 && !segs))
        return coh_fail(err, COH_EINVAL, "optimizer segment list: %d segments at %p", n_segs,
                        (const void *)segs);
    for (int i = 0; i < n_segs; i++)
        if (segs[i].offset > n_params || segs[i].n > n_params - segs[i].offset)
            return coh_fail(err, COH_ERANGE,
                            "optimizer segment %d covers [%zu, %zu + %zu) but there are only "
                            "%zu parameters",
                            i, segs[i].offset, segs[i].offset, segs[i].n, n_params);

    adamw *o = calloc(1, sizeof *o);
    if (!o)
        return coh_fail(err, COH_ENOMEM, "out of memory for the optimizer");
    o->n = n_params;
    o->m = calloc(n_params, sizeof *o->m);
    o->v = calloc(n_params, sizeof *o->v);
    if (n_segs > 0)
        o->segs = malloc((size_t)n_segs * sizeof *o->segs);
    if (!o->m || !o->v || (n_segs > 0 && !o->segs)) {
        adamw_destroy(o);
        return coh_fail(err, COH_ENOMEM,
                        "out of memory for the AdamW moments of %zu parameters (%zu MiB)",
                        n_params, 2 * n_params * sizeof(float) >> 20);
    }
    if (n_segs > 0) {
        memcpy(o->segs, segs, (size_t)n_segs * sizeof *segs);
        qsort(o->segs, (size_t)n_segs, sizeof *o->segs, seg_cmp);
    }
    o->n_segs = n_segs;
    for (int i = 1; i < n_segs; i++) {
        const optim_segment *a = &o->segs[i - 1], *b = &o->segs[i];
        if (a->offset + a->n > b->offset) {
            int rc = coh_fail(err, COH_EINVAL,
                              "optimizer segments [%zu, %zu) and [%zu, %zu) overlap; each "
                              "parameter may belong to one segment only",
                              a->offset, a->offset + a->n, b->offset, b->offset + b->n);
            adamw_destroy(o);
            return rc;
        }
    }
    *out = o;
    return COH_OK;
}

void adamw_destroy(adamw *o)
{
    if (!o)
        return;
    free(o->m);
    free(o->v);
    free(o->segs);
    free(o);
}

float *adamw_m(adamw *o) { return o->m; }
float *adamw_v(adamw *o) { return o->v; }
long adamw_steps(const adamw *o) { return o->t; }
void adamw_set_steps(adamw *o, long t) { o->t = t < 0 ? 0 : t; }
size_t adamw_size(const adamw *o) { return o->n; }

/* AdamW update of [lo, hi) (kern.h, in float) with decoupled decay wd (0 = none): the
 * clip factor is applied to the gradient in the same pass. */
static void update_range(adamw *o, kern_adamw_k k, double lr, double wd, float *p, float *g,
                         size_t lo, size_t hi)
{
    if (hi <= lo)
        return;
    k.keep = (float)(1.0 - lr * wd);
    kern_adamw(p + lo, g + lo, o->m + lo, o->v + lo, hi - lo, &k);
}

static int check_optim_config(const optim_config *c, coh_err *err)
{
    if (!(c->beta1 >= 0.0f && c->beta1 < 1.0f) || !(c->beta2 >= 0.0f && c->beta2 < 1.0f))
        return coh_fail(err, COH_EINVAL, "AdamW betas are %g and %g; both must be in [0, 1)",
                        (double)c->beta1, (double)c->beta2);
    if (!(c->eps > 0.0f) || !isfinite(c->eps))
        return coh_fail(err, COH_EINVAL, "AdamW eps is %g; it must be a finite number > 0",
                        (double)c->eps);
    if (!(c->weight_decay >= 0.0f) || !isfinite(c->weight_decay))
        return coh_fail(err, COH_EINVAL, "weight_decay is %g; it must be a finite number >= 0",
                        (double)c->weight_decay);
    if (!isfinite(c->grad_clip))
        return coh_fail(err, COH_EINVAL, "grad_clip is %g; it must be finite (<= 0 turns it off)",
                        (double)c->grad_clip);
    if (!(c->lr >= 0.0f) || !isfinite(c->lr))
        return coh_fail(err, COH_EINVAL, "learning rate is %g; it must be a finite number >= 0",
                        (double)c->lr);
    return COH_OK;
}

int adamw_step(adamw *o, const optim_config *c, float *params, float *grads, float lr_override,
               adamw_stats *st, coh_err *err)
{
    if (!o || !c || !params || !grads)
        return coh_fail(err, COH_EINVAL, "adamw_step: optimizer, config, params or grads is NULL");
    int rc = check_optim_config(c, err);
    if (rc != COH_OK)
        return rc;
    adamw_stats s;
    memset(&s, 0, sizeof s);
    s.lr = lr_override > 0.0f ? lr_override : optim_lr_at(c, o->t);
    s.grad_norm = optim_grad_norm(grads, o->n);
    s.clip_scale = 1.0;
    if (!isfinite(s.grad_norm)) {
        s.skipped = 1;
        if (st)
            *st = s;
        size_t bad = 0;
        while (bad < o->n && isfinite(grads[bad]))
            bad++;
        return coh_fail(err, COH_ENONFINITE,
                        "gradient is not finite (element %zu of %zu is %g); step %ld skipped, "
                        "parameters and optimizer state unchanged",
                        bad, o->n, bad < o->n ? (double)grads[bad] : s.grad_norm, o->t + 1);
    }
    if (!isfinite(s.lr) || s.lr < 0.0f)
        return coh_fail(err, COH_EINVAL, "learning rate for step %ld is %g; it must be finite "
                        "and >= 0", o->t, (double)s.lr);
    if (c->grad_clip > 0.0f) {
        double scale = (double)c->grad_clip / (s.grad_norm + OPTIM_CLIP_EPS);
        if (scale < 1.0)
            s.clip_scale = scale;
    }

    o->t++;
    double b1 = c->beta1, b2 = c->beta2, lr = s.lr;
    double bc1 = 1.0 - pow(b1, (double)o->t), bc2 = 1.0 - pow(b2, (double)o->t);
    kern_adamw_k k;
    k.b1 = (float)b1;
    k.omb1 = (float)(1.0 - b1);
    k.b2 = (float)b2;
    k.omb2 = (float)(1.0 - b2);
    k.gscale = (float)s.clip_scale;
    k.keep = 1.0f;
    k.step = (float)(lr / bc1);
    k.isbc2 = (float)(1.0 / sqrt(bc2));
    k.eps = c->eps;
    double wd = c->weight_decay;
    size_t pos = 0;
    for (int i = 0; i < o->n_segs; i++) {
        const optim_segment *sg = &o->segs[i];
        update_range(o, k, lr, 0.0, params, grads, pos, sg->offset);
        update_range(o, k, lr, sg->decay ? wd : 0.0, params, grads, sg->offset,
                     sg->offset + sg->n);
        pos = sg->offset + sg->n;
    }
    update_range(o, k, lr, 0.0, params, grads, pos, o->n);
    if (st)
        *st = s;
    return COH_OK;
}
