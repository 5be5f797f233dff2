/* optim.c - AdamW with decoupled weight decay, global grad-norm clipping and the
 * learning-rate schedule (see optim.h).
 *
 * Segments say which parameter ranges are weight-decayed; they are kept sorted by offset
 * (overlaps are refused), and a step walks the parameter vector once, range by range, with
 * decay on the decayed segments and none on everything else. A gradient holding a NaN or an
 * infinity is detected before anything is written, so a skipped step changes nothing.
 * The update itself runs in float, vectorised (kern_adamw), with the clip factor applied to
 * the gradient in the same pass; the gradient norm is summed in double over fixed chunks.
 * Both run on as many threads as OpenBLAS's pool has (mm_parallel's workers); the results do
 * not depend on the number of threads.
 */
#include "optim.h"

#include "kern.h"
#include "linalg.h"
#include "mm.h"

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
    double *chunk;       /* per-chunk sums of squares (chunked_norm) */
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

/* Sum of squares over fixed chunks of OPTIM_CHUNK, the chunks' sums added in order: the same
 * result however many threads compute the chunks. */
#define OPTIM_CHUNK ((size_t)1 << 16)

typedef struct sumsq_task {
    const float *g;
    size_t n;
    double *chunk; /* [nchunks] */
} sumsq_task;

static void sumsq_part(void *ctx, int p, int parts)
{
    const sumsq_task *t = ctx;
    size_t nch = (t->n + OPTIM_CHUNK - 1) / OPTIM_CHUNK;
    size_t c0 = nch * (size_t)p / (size_t)parts, c1 = nch * (size_t)(p + 1) / (size_t)parts;
    for (size_t c = c0; c < c1; c++) {
        size_t lo = c * OPTIM_CHUNK, len = t->n - lo < OPTIM_CHUNK ? t->n - lo : OPTIM_CHUNK;
        t->chunk[c] = kern_sumsq(t->g + lo, len);
    }
}

/* chunk: scratch of (n + OPTIM_CHUNK - 1) / OPTIM_CHUNK doubles, or NULL (one thread). */
static double chunked_norm(const float *g, size_t n, double *chunk, int threads)
{
    double s = 0.0;
    if (!chunk) {
        for (size_t lo = 0; lo < n; lo += OPTIM_CHUNK)
            s += kern_sumsq(g + lo, n - lo < OPTIM_CHUNK ? n - lo : OPTIM_CHUNK);
        return sqrt(s);
    }
    sumsq_task t = {g, n, chunk};
    mm_parallel(threads, sumsq_part, &t);
    size_t nch = (n + OPTIM_CHUNK - 1) / OPTIM_CHUNK;
    for (size_t c = 0; c < nch; c++)
        s += chunk[c];
    return sqrt(s);
}

double optim_grad_norm(const float *g, size_t n)
{
    return chunked_norm(g, n, NULL, 1);
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
    o->chunk = calloc((n_params + OPTIM_CHUNK - 1) / OPTIM_CHUNK, sizeof *o->chunk);
    if (n_segs > 0)
        o->segs = malloc((size_t)n_segs * sizeof *o->segs);
    if (!o->m || !o->v || !o->chunk || (n_segs > 0 && !o->segs)) {
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
    free(o->chunk);
    free(o);
}

float *adamw_m(adamw *o) { return o->m; }
float *adamw_v(adamw *o) { return o->v; }
long adamw_steps(const adamw *o) { return o->t; }
void adamw_set_steps(adamw *o, long t) { o->t = t < 0 ? 0 : t; }
size_t adamw_size(const adamw *o) { return o->n; }

/* One step's ranges [lo, hi) with their decay factor keep = 1 - lr wd, updated by kern_adamw
 * (in float, the clip factor applied to the gradient in the same pass); the parts of
 * mm_parallel split every range. */
typedef struct step_task {
    adamw *o;
    float *p, *g;
    kern_adamw_k k;
    int n;
    size_t lo[3], hi[3]; /* at most: before a segment, the segment, after the last */
    float keep[3];
} step_task;

static void step_part(void *ctx, int part, int parts)
{
    const step_task *t = ctx;
    for (int r = 0; r < t->n; r++) {
        size_t len = t->hi[r] - t->lo[r];
        size_t a = t->lo[r] + (len * (size_t)part / (size_t)parts & ~(size_t)15);
        size_t b = part + 1 == parts ? t->hi[r]
                                     : t->lo[r] + (len * (size_t)(part + 1) / (size_t)parts & ~(size_t)15);
        if (b <= a)
            continue;
        kern_adamw_k k = t->k;
        k.keep = t->keep[r];
        kern_adamw(t->p + a, t->g + a, t->o->m + a, t->o->v + a, b - a, &k);
    }
}

static void update_range(step_task *t, double lr, double wd, size_t lo, size_t hi, int threads)
{
    if (hi <= lo)
        return;
    t->lo[t->n] = lo;
    t->hi[t->n] = hi;
    t->keep[t->n] = (float)(1.0 - lr * wd);
    if (++t->n == 3) {
        mm_parallel(threads, step_part, t);
        t->n = 0;
    }
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
    int threads = la_blas_threads();
    s.grad_norm = chunked_norm(grads, o->n, o->chunk, threads);
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
    step_task t;
    memset(&t, 0, sizeof t);
    t.o = o;
    t.p = params;
    t.g = grads;
    t.k = k;
    size_t pos = 0;
    for (int i = 0; i < o->n_segs; i++) {
        const optim_segment *sg = &o->segs[i];
        update_range(&t, lr, 0.0, pos, sg->offset, threads);
        update_range(&t, lr, sg->decay ? wd : 0.0, sg->offset, sg->offset + sg->n, threads);
        pos = sg->offset + sg->n;
    }
    update_range(&t, lr, 0.0, pos, o->n, threads);
    if (t.n > 0)
        mm_parallel(threads, step_part, &t);
    if (st)
        *st = s;
    return COH_OK;
}
