/* trainer.c - single-process SFT -> RAFT -> RL training loop (see trainer.h). */
#include "trainer.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "checkpoint.h"
#include "fsutil.h"
#include "rng.h"
#include "safetensors.h"
#include "softmax.h"
#include "tokenizer.h"
#include "trainopt.h"

enum { PHASE_SFT, PHASE_RAFT, PHASE_RL, PHASE_DONE };
static const char *const phase_names[] = {"sft", "raft", "rl", "done"};

struct trainer {
    trainer_config c;
    model *policy, *ref;
    tokenizer *tok;
    task *task;
    adamw *opt;
    sampler *smp;
    model_ws *ws;
    rng rng;
    long step;          /* completed optimizer steps */
    uint64_t cursor;    /* next training item index */
    int until_hits;     /* consecutive SFT evaluations at or above sft_until */
    double time_base;   /* seconds already spent before this process (resume) */
    double t0;          /* wall clock at create */
    FILE *metrics;

    /* batch buffers, sized for max_B sequences of max_T tokens */
    int max_B, max_T;
    int ws_T;           /* the model workspace holds max_B x ws_T tokens (grown on demand) */
    int *tokens;        /* [max_B, max_T] */
    float *beh;         /* [max_B, max_T] behaviour log-probs per completion token */
    float *reflp;       /* [max_B, max_T] */
    float *adv;         /* [max_B, max_T] */
    int *use;           /* [max_B] */
    loss_seq *seqs;     /* [max_B] */
    double *rewards;    /* [max_B] */
    float *grads;       /* [n_params] */
    /* sampling scratch for one group */
    int *s_tok, *s_len;
    float *s_lp;
    /* trainer_set_checkpoint_file: an extra file in every checkpoint folder */
    char extra_name[64];
    char *extra_text;
};

static const char *const k_drop_names[TRAINER_DROP_N] = {
    "zero_signal", "stale", "reward_failed", "invalid", "temperature", "lease_expired",
    "lease_lost"};

const char *trainer_drop_name(int reason)
{
    return reason >= 0 && reason < TRAINER_DROP_N ? k_drop_names[reason] : "unknown";
}

/* ---- small helpers ------------------------------------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static long total_steps(const trainer_config *c)
{
    return (long)c->sft_steps + c->raft_steps + c->rl_steps;
}

/* Phase of the step about to run, and its index within the phase. */
static int phase_of(const trainer_config *c, long step, long *phase_step)
{
    long s = step;
    if (s < c->sft_steps) {
        *phase_step = s;
        return PHASE_SFT;
    }
    s -= c->sft_steps;
    if (s < c->raft_steps) {
        *phase_step = s;
        return PHASE_RAFT;
    }
    s -= c->raft_steps;
    if (s < c->rl_steps) {
        *phase_step = s;
        return PHASE_RL;
    }
    *phase_step = 0;
    return PHASE_DONE;
}

trainer_config trainer_config_default(void)
{
    trainer_config c;
    memset(&c, 0, sizeof c);
    snprintf(c.out_dir, sizeof c.out_dir, "runs/addition");
    snprintf(c.task, sizeof c.task, "addition");
    c.task_cfg = task_config_default();
    c.task_cfg.digits = 2;
    c.model = model_config_default(98);
    c.model.max_seq = 32;
    c.seed = 1;
    c.sft_steps = 800;
    c.sft_demos = 500; /* scarce demonstrations: where RL earns its keep */
    c.sft_until = 0.0f;
    c.sft_batch = 64;
    c.sft_lr = 3e-3f;
    c.sft_warmup = 20;
    c.raft_steps = 0;
    c.raft_threshold = 1.0f;
    c.rl_steps = 700;
    c.prompts_per_step = 32;
    c.group_size = 16;
    c.rl_lr = 5e-4f;
    c.rl_warmup = 0;
    c.loss = loss_config_default();
    c.optim = optim_config_default();
    c.optim.beta2 = 0.99f;
    c.optim.grad_clip = 1.0f;
    c.sampling = sample_params_default();
    c.sampling.max_new_tokens = 8;
    c.sampling.eos_id = TOK_EOS;
    c.loss.max_new_tokens = c.sampling.max_new_tokens;
    c.format_weight = 0.0f;
    c.eval_every = 25;
    c.eval_size = 200;
    c.ckpt_every = 100;
    c.log_every_sft = 20;
    return c;
}

long trainer_current_step(const trainer *t) { return t->step; }
const trainer_config *trainer_get_config(const trainer *t) { return &t->c; }
const tokenizer *trainer_tokenizer(const trainer *t) { return t->tok; }
long trainer_total_steps(const trainer *t) { return total_steps(&t->c); }
model *trainer_policy(trainer *t) { return t->policy; }

int trainer_has_next(const trainer *t) { return t->step < total_steps(&t->c); }

/* Encode the tokenizer's BOS (when it adds one) + text into ids; returns the count or a
 * negative code. */
static int encode_prompt(const trainer *t, const char *text, int *ids, int cap, coh_err *err)
{
    int n = 0, bos = tok_add_bos(t->tok) && tok_bos_id(t->tok) >= 0;
    if (bos)
        ids[0] = tok_bos_id(t->tok);
    int rc = tok_encode(t->tok, text, ids + bos, cap - bos, &n, err);
    return rc ? rc : n + bos;
}

/* 1 when id ends a completion (the sampler's eos_id or one of its stop ids). */
static int is_stop(const trainer *t, int id)
{
    const sample_params *sp = &t->c.sampling;
    if (id == sp->eos_id)
        return 1;
    for (int i = 0; i < sp->n_stop; i++)
        if (id == sp->stop_ids[i])
            return 1;
    return 0;
}

/* Where sampled completion comp[0..L) ends: at a stop string of the run (--stop; the kept
 * tokens end with the token that completes it, and their whole text is the completion's), or
 * else as sampled, with the text leaving out a final EOS / stop id. Returns the number of
 * tokens kept and sets *text_len to how many of them make the text; a negative code on
 * failure. */
static int completion_end(const trainer *t, const int *comp, int L, int *text_len,
                          coh_err *err)
{
    if (t->c.stop.n > 0) {
        int which, cut = stops_cut(t->tok, comp, L, &t->c.stop, &which, err);
        if (cut < 0)
            return cut;
        if (which >= 0) {
            *text_len = cut;
            return cut;
        }
    }
    *text_len = L > 0 && is_stop(t, comp[L - 1]) ? L - 1 : L;
    return L;
}

/* ---- settings record ------------------------------------------------------------------------ */

/* Every setting of the run (trainopt.c's table), recorded in checkpoints and at the head of
 * the metrics file. */
static cJSON *settings_json(const trainer_config *c)
{
    return topt_to_json(c);
}

/* Restore the settings recorded in a checkpoint: all but how and where this process runs
 * (topt_merge_resume); step counts are the caller's, within the rule below. */
static int settings_apply(trainer_config *c, const cJSON *o, long step, coh_err *err)
{
    int rc = topt_merge_resume(c, o, err);
    if (rc)
        return coh_wrap(err, rc, "the checkpoint's settings");
    /* A completed phase keeps its recorded length (the step -> phase mapping depends on it);
     * a phase still to finish may be lengthened from the command line. (Validated above.) */
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "sft_steps");
    if (cJSON_IsNumber(v) && v->valuedouble >= 0) {
        int rec = (int)v->valuedouble;
        if (step >= (long)rec || rec > c->sft_steps)
            c->sft_steps = rec;
    }
    v = cJSON_GetObjectItemCaseSensitive(o, "raft_steps");
    if (cJSON_IsNumber(v) && v->valuedouble >= 0) {
        int rec = (int)v->valuedouble;
        if (step >= (long)rec + c->sft_steps || rec > c->raft_steps)
            c->raft_steps = rec;
    }
    c->sampling.temperature = c->loss.temperature;
    c->loss.max_new_tokens = c->sampling.max_new_tokens;
    return COH_OK;
}

/* ---- lifecycle ----------------------------------------------------------------------------- */

static int optimizer_create(trainer *t, coh_err *err)
{
    int n = model_num_tensors(t->policy);
    optim_segment *segs = calloc((size_t)n, sizeof *segs);
    if (!segs)
        return coh_fail(err, COH_ENOMEM, "optimizer: out of memory");
    for (int i = 0; i < n; i++) {
        const model_tensor *mt = model_tensor_at(t->policy, i);
        segs[i].offset = mt->offset;
        segs[i].n = mt->numel;
        segs[i].decay = mt->ndim == 2; /* no decay on norm weights */
    }
    int rc = adamw_create(model_num_params(t->policy), segs, n, &t->opt, err);
    free(segs);
    return rc;
}

static int buffers_create(trainer *t, coh_err *err)
{
    const trainer_config *c = &t->c;
    const model_config *mc = model_get_config(t->policy);
    /* the SFT batch only counts when the run has SFT steps (a long-context policy trained
     * only by RL never needs sft_batch rows) */
    int B = c->prompts_per_step * c->group_size;
    if (c->sft_steps > 0 && c->sft_batch > B)
        B = c->sft_batch;
    t->max_B = B;
    t->max_T = mc->max_seq;
    size_t BT = (size_t)B * (size_t)t->max_T;
    t->tokens = calloc(BT, sizeof(int));
    t->beh = calloc(BT, sizeof(float));
    t->reflp = calloc(BT, sizeof(float));
    t->adv = calloc(BT, sizeof(float));
    t->use = calloc((size_t)B, sizeof(int));
    t->seqs = calloc((size_t)B, sizeof(loss_seq));
    t->rewards = calloc((size_t)B, sizeof(double));
    t->grads = calloc(model_num_params(t->policy), sizeof(float));
    size_t G = (size_t)(c->group_size > 0 ? c->group_size : 1);
    size_t M = (size_t)c->sampling.max_new_tokens;
    t->s_tok = calloc(G * M, sizeof(int));
    t->s_lp = calloc(G * M, sizeof(float));
    t->s_len = calloc(G, sizeof(int));
    if (!t->tokens || !t->beh || !t->reflp || !t->adv || !t->use || !t->seqs || !t->rewards ||
        !t->grads || !t->s_tok || !t->s_lp || !t->s_len)
        return coh_fail(err, COH_ENOMEM, "trainer: out of memory for batch buffers");
    /* the model workspace (activations and logits: B x T x V floats) is made for the
     * longest batch seen, not for max_position_embeddings: see ensure_ws */
    return sampler_create(t->policy, (int)G, t->max_T, &t->smp, err);
}

static int open_metrics(trainer *t, int resume, coh_err *err)
{
    char path[600];
    snprintf(path, sizeof path, "%s/metrics.jsonl", t->c.out_dir);
    t->metrics = fopen(path, resume ? "a" : "w");
    if (!t->metrics)
        return coh_fail(err, COH_EIO, "cannot open metrics file %s: %s", path, strerror(errno));
    if (!resume) {
        cJSON *head = cJSON_CreateObject();
        cJSON_AddItemToObject(head, "settings", settings_json(&t->c));
        char *s = cJSON_PrintUnformatted(head);
        fprintf(t->metrics, "%s\n", s);
        fflush(t->metrics);
        free(s);
        cJSON_Delete(head);
    }
    return COH_OK;
}

static int load_reference(trainer *t, coh_err *err)
{
    char dir[600];
    snprintf(dir, sizeof dir, "%s/reference", t->c.out_dir);
    int rc = ckpt_load(dir, &t->ref, NULL, err);
    if (rc)
        return coh_wrap(err, rc, "loading the frozen reference policy from %s", dir);
    return COH_OK;
}

static int resume_from_latest(trainer *t, coh_err *err)
{
    char path[1024], *buf = NULL;
    size_t len = 0;
    snprintf(path, sizeof path, "%s/checkpoints/latest", t->c.out_dir);
    int rc = fs_read_all(path, &buf, &len, err);
    if (rc)
        return coh_wrap(err, rc, "--resume: no checkpoint to resume from in %s", t->c.out_dir);
    while (len && (buf[len - 1] == '\n' || buf[len - 1] == ' '))
        buf[--len] = '\0';
    char dir[700];
    snprintf(dir, sizeof dir, "%s/checkpoints/%s", t->c.out_dir, buf);
    free(buf);

    snprintf(path, sizeof path, "%s/trainer_state.json", dir);
    rc = fs_read_all(path, &buf, &len, err);
    if (rc)
        return rc;
    cJSON *st = cJSON_Parse(buf);
    free(buf);
    if (!st)
        return coh_fail(err, COH_EFORMAT, "%s is not valid JSON; the checkpoint is damaged", path);
    const cJSON *step = cJSON_GetObjectItemCaseSensitive(st, "step");
    const cJSON *cur = cJSON_GetObjectItemCaseSensitive(st, "cursor");
    const cJSON *rngj = cJSON_GetObjectItemCaseSensitive(st, "rng");
    const cJSON *settings = cJSON_GetObjectItemCaseSensitive(st, "settings");
    const cJSON *adam = cJSON_GetObjectItemCaseSensitive(st, "adam_steps");
    const cJSON *tim = cJSON_GetObjectItemCaseSensitive(st, "time_s");
    const cJSON *hits = cJSON_GetObjectItemCaseSensitive(st, "sft_until_hits");
    t->until_hits = cJSON_IsNumber(hits) ? (int)hits->valuedouble : 0;
    if (!cJSON_IsNumber(step) || !cJSON_IsString(cur) || !cJSON_IsArray(rngj) ||
        cJSON_GetArraySize(rngj) != 4 || !cJSON_IsObject(settings) || !cJSON_IsNumber(adam)) {
        cJSON_Delete(st);
        return coh_fail(err, COH_EFORMAT,
                        "%s lacks step, cursor, rng, adam_steps or settings; the checkpoint is "
                        "damaged or was not written by cohort-train",
                        path);
    }
    t->step = (long)step->valuedouble;
    rc = settings_apply(&t->c, settings, t->step, err);
    t->cursor = strtoull(cur->valuestring, NULL, 10);
    for (int i = 0; i < 4; i++)
        t->rng.s[i] = strtoull(cJSON_GetArrayItem(rngj, i)->valuestring, NULL, 16);
    long adam_steps = (long)adam->valuedouble;
    t->time_base = cJSON_IsNumber(tim) ? tim->valuedouble : 0.0;
    cJSON_Delete(st);
    if (rc)
        return rc;

    rc = ckpt_load(dir, &t->policy, &t->tok, err);
    if (rc)
        return rc;
    if (!t->tok)
        return coh_fail(err, COH_ENOTFOUND, "%s has no tokenizer.json; cannot train on text", dir);
    rc = optimizer_create(t, err);
    if (rc)
        return rc;
    snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
    st_file *f = NULL;
    rc = st_open(path, &f, err);
    if (rc)
        return rc;
    size_t n = model_num_params(t->policy);
    rc = st_read_f32(f, "adamw.m", adamw_m(t->opt), n, err);
    if (!rc)
        rc = st_read_f32(f, "adamw.v", adamw_v(t->opt), n, err);
    st_close(f);
    if (rc)
        return coh_wrap(err, rc, "reading optimizer state %s", path);
    adamw_set_steps(t->opt, adam_steps);
    long ps;
    if (phase_of(&t->c, t->step, &ps) >= PHASE_RL && loss_needs_ref(&t->c.loss) &&
        (t->step > (long)t->c.sft_steps + t->c.raft_steps))
        return load_reference(t, err);
    return COH_OK;
}

/* Positions a sampled sequence may need: <bos>, the task's longest prompt (the built-in
 * tokenizer has one token per character, and the tasks' text is ASCII) and max_new_tokens. */
static int positions_needed(const trainer_config *c, const task *tk)
{
    return 1 + task_max_prompt_len(tk) + c->sampling.max_new_tokens;
}

/* The default random policy (no --model-config, no --init): raise max_position_embeddings
 * so that the longest prompt plus --max-new-tokens fits. */
static int fit_default_model(trainer_config *c, coh_err *err)
{
    task_config tc = c->task_cfg;
    tc.seed = c->seed;
    task *tk = NULL;
    int rc = task_create(c->task, &tc, &tk, err);
    if (rc)
        return rc;
    int need = positions_needed(c, tk);
    task_destroy(tk);
    if (need > c->model.max_seq)
        c->model.max_seq = need;
    return COH_OK;
}

/* A given policy (config, checkpoint) must hold the longest prompt plus max_new_tokens. */
static int check_room(const trainer_config *c, const task *tk, const model *policy,
                      coh_err *err)
{
    int have = model_get_config(policy)->max_seq, need = positions_needed(c, tk);
    if (need <= have)
        return COH_OK;
    int prompt = need - c->sampling.max_new_tokens;
    if (prompt >= have)
        return coh_fail(err, COH_ERANGE,
                        "the longest %s prompt takes %d positions (<bos> included) but the "
                        "policy's max_position_embeddings is %d, leaving no room for "
                        "--max-new-tokens; use a model config with max_position_embeddings >= "
                        "%d",
                        task_name(tk), prompt, have, need);
    return coh_fail(err, COH_ERANGE,
                    "--max-new-tokens %d does not fit the policy: the longest %s prompt takes %d "
                    "positions (<bos> included) and the policy's max_position_embeddings is %d; "
                    "use --max-new-tokens %d or less, or a model config with "
                    "max_position_embeddings >= %d",
                    c->sampling.max_new_tokens, task_name(tk), prompt, have, have - prompt,
                    need);
}

int trainer_create(const trainer_config *c, int resume, trainer **out, coh_err *err)
{
    *out = NULL;
    trainer *t = calloc(1, sizeof *t);
    if (!t)
        return coh_fail(err, COH_ENOMEM, "trainer: out of memory");
    t->c = *c;
    t->c.sampling.temperature = t->c.loss.temperature;
    t->c.loss.max_new_tokens = t->c.sampling.max_new_tokens;
    t->t0 = now_s();
    int rc;
    if (t->c.sft_steps < 0 || t->c.raft_steps < 0 || t->c.rl_steps < 0 || t->c.sft_batch <= 0 ||
        t->c.prompts_per_step <= 0 || t->c.group_size <= 0 || t->c.sampling.max_new_tokens <= 0) {
        rc = coh_fail(err, COH_EINVAL,
                      "step counts must be >= 0 and batch sizes, group size and max_new_tokens "
                      "> 0");
        goto fail;
    }
    if ((rc = fs_mkdirs(t->c.out_dir, err)))
        goto fail;
    rng_init(&t->rng, rng_mix(t->c.seed ^ 0x5eed));
    if (resume) {
        if ((rc = resume_from_latest(t, err)))
            goto fail;
    } else {
        if (t->c.init_from[0]) {
            if ((rc = ckpt_load(t->c.init_from, &t->policy, &t->tok, err)))
                goto fail;
            if (!t->tok) {
                rc = coh_fail(err, COH_ENOTFOUND,
                              "%s has no tokenizer.json; training on text tasks needs the "
                              "built-in tokenizer",
                              t->c.init_from);
                goto fail;
            }
        } else {
            if (!t->c.model_from_config && (rc = fit_default_model(&t->c, err)))
                goto fail;
            if ((rc = tok_create_default(&t->tok, err)))
                goto fail;
            t->c.model.vocab_size = tok_vocab_size(t->tok);
            if ((rc = model_create(&t->c.model, &t->policy, err)))
                goto fail;
            model_init_random(t->policy, t->c.seed);
        }
        if ((rc = optimizer_create(t, err)))
            goto fail;
    }
    t->c.model = *model_get_config(t->policy); /* the settings record the policy's own */
    /* completions end at the tokenizer's EOS (the character tokenizer's <eos>) and at every
     * eos_token_id of the policy's config */
    t->c.sampling.eos_id = tok_eos_id(t->tok);
    t->c.sampling.n_stop = 0;
    if ((rc = sample_params_use_eos(&t->c.sampling, &t->c.model, err)))
        goto fail;
    if (t->c.sampling.eos_id < 0 && t->c.sampling.n_stop > 0)
        t->c.sampling.eos_id = t->c.sampling.stop_ids[0];
    if (tok_vocab_size(t->tok) < t->c.model.vocab_size)
        t->c.sampling.vocab_limit = tok_vocab_size(t->tok);
    t->c.task_cfg.seed = t->c.seed;
    if ((rc = task_create(t->c.task, &t->c.task_cfg, &t->task, err)))
        goto fail;
    if ((rc = check_room(&t->c, t->task, t->policy, err)))
        goto fail;
    if (t->c.eval_size > task_eval_size(t->task))
        t->c.eval_size = task_eval_size(t->task);
    if ((rc = buffers_create(t, err)))
        goto fail;
    if ((rc = open_metrics(t, resume, err)))
        goto fail;
    *out = t;
    return COH_OK;
fail:
    trainer_destroy(t);
    return rc;
}

void trainer_destroy(trainer *t)
{
    if (!t)
        return;
    if (t->metrics)
        fclose(t->metrics);
    model_destroy(t->policy);
    model_destroy(t->ref);
    tok_destroy(t->tok);
    task_destroy(t->task);
    adamw_destroy(t->opt);
    sampler_destroy(t->smp);
    model_ws_destroy(t->ws);
    free(t->tokens);
    free(t->beh);
    free(t->reflp);
    free(t->adv);
    free(t->use);
    free(t->seqs);
    free(t->rewards);
    free(t->grads);
    free(t->s_tok);
    free(t->s_lp);
    free(t->s_len);
    free(t->extra_text);
    free(t);
}

/* ---- checkpoints --------------------------------------------------------------------------- */

int trainer_checkpoint(trainer *t, coh_err *err)
{
    char dir[700], path[1024];
    snprintf(dir, sizeof dir, "%s/checkpoints/step-%06ld", t->c.out_dir, t->step);
    int rc = ckpt_save(dir, t->policy, t->tok, err);
    if (rc)
        return rc;
    size_t n = model_num_params(t->policy);
    st_entry e[2] = {
        {.name = "adamw.m", .ndim = 1, .shape = {(long long)n}, .data = adamw_m(t->opt)},
        {.name = "adamw.v", .ndim = 1, .shape = {(long long)n}, .data = adamw_v(t->opt)},
    };
    snprintf(path, sizeof path, "%s/optimizer.safetensors", dir);
    if ((rc = st_write(path, e, 2, NULL, err)))
        return rc;

    cJSON *st = cJSON_CreateObject();
    long ps;
    cJSON_AddNumberToObject(st, "step", (double)t->step);
    cJSON_AddStringToObject(st, "phase", phase_names[phase_of(&t->c, t->step, &ps)]);
    char num[32];
    snprintf(num, sizeof num, "%" PRIu64, t->cursor);
    cJSON_AddStringToObject(st, "cursor", num);
    cJSON *r = cJSON_AddArrayToObject(st, "rng");
    for (int i = 0; i < 4; i++) {
        snprintf(num, sizeof num, "%016" PRIx64, t->rng.s[i]);
        cJSON_AddItemToArray(r, cJSON_CreateString(num));
    }
    cJSON_AddNumberToObject(st, "adam_steps", (double)adamw_steps(t->opt));
    cJSON_AddNumberToObject(st, "sft_until_hits", t->until_hits);
    cJSON_AddNumberToObject(st, "time_s", t->time_base + now_s() - t->t0);
    if (t->ref)
        cJSON_AddStringToObject(st, "reference", "../../reference");
    else
        cJSON_AddNullToObject(st, "reference");
    cJSON_AddItemToObject(st, "settings", settings_json(&t->c));
    char *text = cJSON_Print(st);
    cJSON_Delete(st);
    snprintf(path, sizeof path, "%s/trainer_state.json", dir);
    rc = fs_write_atomic(path, text, strlen(text), err);
    free(text);
    if (rc)
        return rc;
    if (t->extra_text) {
        snprintf(path, sizeof path, "%s/%s", dir, t->extra_name);
        if ((rc = fs_write_atomic(path, t->extra_text, strlen(t->extra_text), err)))
            return rc;
    }
    char name[32];
    int nl = snprintf(name, sizeof name, "step-%06ld\n", t->step);
    snprintf(path, sizeof path, "%s/checkpoints/latest", t->c.out_dir);
    return fs_write_atomic(path, name, (size_t)nl, err);
}

int trainer_set_checkpoint_file(trainer *t, const char *name, const char *text, coh_err *err)
{
    if (!name || !name[0] || strlen(name) >= sizeof t->extra_name || strchr(name, '/'))
        return coh_fail(err, COH_EINVAL, "checkpoint file name must be a plain file name");
    char *copy = NULL;
    if (text && !(copy = strdup(text)))
        return coh_fail(err, COH_ENOMEM, "out of memory");
    free(t->extra_text);
    t->extra_text = copy;
    snprintf(t->extra_name, sizeof t->extra_name, "%s", name);
    return COH_OK;
}

int trainer_latest_checkpoint(const trainer *t, char *buf, size_t cap, coh_err *err)
{
    char path[1024], *text = NULL;
    size_t len = 0;
    snprintf(path, sizeof path, "%s/checkpoints/latest", t->c.out_dir);
    int rc = fs_read_all(path, &text, &len, err);
    if (rc)
        return coh_fail(err, COH_ENOTFOUND, "no checkpoint in %s/checkpoints", t->c.out_dir);
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r'))
        text[--len] = 0;
    if ((size_t)snprintf(buf, cap, "%s/checkpoints/%s", t->c.out_dir, text) >= cap) {
        free(text);
        return coh_fail(err, COH_ERANGE, "checkpoint path too long");
    }
    free(text);
    return COH_OK;
}

/* ---- evaluation ---------------------------------------------------------------------------- */

int trainer_evaluate(trainer *t, int n, double *accuracy, coh_err *err)
{
    if (n <= 0 || n > t->c.eval_size)
        n = t->c.eval_size;
    sample_params sp = t->c.sampling;
    sp.top_k = 1; /* greedy */
    sp.top_p = 1.0f;
    sp.temperature = 1.0f;
    int ids[256], correct = 0;
    char text[512];
    for (int i = 0; i < n; i++) {
        task_item it;
        task_eval_item(t->task, i, &it);
        int plen = encode_prompt(t, it.prompt, ids, 256, err);
        if (plen < 0)
            return plen;
        int rc = sampler_generate(t->smp, ids, plen, 1, &sp, &t->rng, t->s_tok, NULL, NULL,
                                  t->s_len, err);
        if (rc)
            return rc;
        int L = 0;
        if ((rc = completion_end(t, t->s_tok, t->s_len[0], &L, err)) < 0)
            return rc;
        tok_decode(t->tok, t->s_tok, L, text, sizeof text);
        task_score sc;
        if (task_verify(t->task, &it, text, &sc, NULL) == COH_OK && sc.correct >= 1.0)
            correct++;
    }
    *accuracy = n > 0 ? (double)correct / n : 0.0;
    return COH_OK;
}

/* ---- one step ------------------------------------------------------------------------------ */

/* Put sequence b into the padded batch. */
static void put_seq(trainer *t, int b, const int *prompt, int plen, const int *comp, int clen,
                    const float *beh, double reward, int group)
{
    int *row = t->tokens + (size_t)b * t->max_T;
    memcpy(row, prompt, (size_t)plen * sizeof(int));
    memcpy(row + plen, comp, (size_t)clen * sizeof(int));
    if (beh)
        memcpy(t->beh + (size_t)b * t->max_T, beh, (size_t)clen * sizeof(float));
    loss_seq *s = &t->seqs[b];
    s->tokens = row;
    s->group = group;
    s->prompt_len = plen;
    s->len = plen + clen;
    s->reward = reward;
    s->behaviour_logp = beh ? t->beh + (size_t)b * t->max_T : NULL;
    s->ref_logp = NULL;
}

/* Build an SFT batch of demonstrations. */
static int build_sft_batch(trainer *t, int *B_out, coh_err *err)
{
    int ids[256], comp[256];
    for (int b = 0; b < t->c.sft_batch; b++) {
        task_item it;
        uint64_t idx = t->cursor++;
        /* a limited demonstration set is cycled through; RL prompts come after it */
        task_train_item(t->task, t->c.sft_demos > 0 ? idx % (uint64_t)t->c.sft_demos : idx, &it);
        int plen = encode_prompt(t, it.prompt, ids, 256, err);
        if (plen < 0)
            return plen;
        int clen = 0;
        int rc = tok_encode(t->tok, it.answer, comp, 255, &clen, err);
        if (rc)
            return rc;
        if (t->c.sampling.eos_id >= 0)
            comp[clen++] = t->c.sampling.eos_id;
        if (plen + clen > t->max_T)
            return coh_fail(err, COH_ERANGE,
                            "demonstration of %d tokens exceeds max_position_embeddings %d",
                            plen + clen, t->max_T);
        put_seq(t, b, ids, plen, comp, clen, NULL, 1.0, b);
    }
    *B_out = t->c.sft_batch;
    return COH_OK;
}

/* Sample G completions for prompts_per_step prompts and score them. RAFT keeps only the
 * completions whose reward passes the threshold. */
static int build_rl_batch(trainer *t, int raft, int *B_out, double *sample_tokens,
                          double *sample_time, coh_err *err)
{
    const trainer_config *c = &t->c;
    int ids[256], B = 0, G = c->group_size, M = c->sampling.max_new_tokens;
    char text[512];
    double t_start = now_s();
    long ntok = 0;
    for (int p = 0; p < c->prompts_per_step; p++) {
        task_item it;
        task_train_item(t->task, t->cursor++, &it);
        int plen = encode_prompt(t, it.prompt, ids, 256, err);
        if (plen < 0)
            return plen;
        int rc = sampler_generate(t->smp, ids, plen, G, &c->sampling, &t->rng, t->s_tok,
                                  t->s_lp, NULL, t->s_len, err);
        if (rc)
            return rc;
        for (int g = 0; g < G; g++) {
            const int *comp = t->s_tok + (size_t)g * M;
            int tl = 0, L = completion_end(t, comp, t->s_len[g], &tl, err);
            ntok += t->s_len[g]; /* sampled, whether kept or not */
            if (L < 0)
                return L;
            tok_decode(t->tok, comp, tl, text, sizeof text);
            task_score sc;
            double reward = 0.0;
            if (task_verify(t->task, &it, text, &sc, NULL) == COH_OK)
                reward = sc.correct + (double)c->format_weight * sc.format;
            t->rewards[p * G + g] = reward;
            if (raft && reward < (double)c->raft_threshold)
                continue;
            put_seq(t, B, ids, plen, comp, L, t->s_lp + (size_t)g * M, reward, p);
            B++;
        }
    }
    *sample_tokens = (double)ntok;
    *sample_time = now_s() - t_start;
    *B_out = B;
    return COH_OK;
}

/* Per-token reference log-probs for the batch (uses the policy workspace before the policy's
 * own forward). */
static int compute_ref_logp(trainer *t, int B, int T, coh_err *err)
{
    int rc = model_forward(t->ref, t->ws, t->tokens, B, T, err);
    if (rc)
        return rc;
    int V = model_get_config(t->ref)->vocab_size;
    const float *lg = model_ws_logits(t->ws);
    for (int b = 0; b < B; b++) {
        loss_seq *s = &t->seqs[b];
        float *out = t->reflp + (size_t)b * t->max_T;
        for (int k = 0; k < s->len - s->prompt_len; k++) {
            int pos = s->prompt_len + k;
            sm_logp_entropy(lg + ((size_t)b * T + pos - 1) * V, V, t->c.loss.temperature,
                            s->tokens[pos], &out[k], NULL);
        }
        s->ref_logp = out;
    }
    return COH_OK;
}

static void write_metrics(trainer *t, const trainer_metrics *m)
{
    if (!t->metrics)
        return;
    cJSON *o = cJSON_CreateObject();
#define PUT(key, val)                                            \
    do {                                                         \
        double v_ = (val);                                       \
        if (isfinite(v_))                                        \
            cJSON_AddNumberToObject(o, key, v_);                 \
        else                                                     \
            cJSON_AddNullToObject(o, key);                       \
    } while (0)
    PUT("step", (double)m->step);
    PUT("version", (double)m->version);
    cJSON_AddStringToObject(o, "phase", m->phase);
    PUT("loss", m->loss);
    PUT("reward_mean", m->reward_mean);
    PUT("reward_std", m->reward_std);
    if (m->eval_accuracy >= 0)
        PUT("eval_accuracy", m->eval_accuracy);
    PUT("kl", m->kl);
    PUT("clip_frac", m->clip_frac);
    PUT("entropy", m->entropy);
    PUT("grad_norm", m->grad_norm);
    PUT("lr", m->lr);
    PUT("learner_tokens_per_s", m->learner_tokens_per_s);
    PUT("sampler_tokens_per_s", m->sampler_tokens_per_s);
    PUT("staleness_mean", m->staleness_mean);
    PUT("logp_max_abs_diff", m->logp_max_abs_diff);
    PUT("groups_used", m->groups_used);
    PUT("groups_dropped", m->groups_dropped);
    cJSON *dr = cJSON_AddObjectToObject(o, "groups_dropped_by_reason");
    for (int i = 0; i < TRAINER_DROP_N; i++)
        cJSON_AddNumberToObject(dr, k_drop_names[i], (double)m->dropped_by_reason[i]);
    if (m->seq_last > 0) {
        cJSON *sq = cJSON_AddArrayToObject(o, "groups_seq");
        cJSON_AddItemToArray(sq, cJSON_CreateNumber((double)m->seq_first));
        cJSON_AddItemToArray(sq, cJSON_CreateNumber((double)m->seq_last));
    }
    PUT("skipped", m->skipped);
    PUT("time_s", m->time_s);
#undef PUT
    char *s = cJSON_PrintUnformatted(o);
    fprintf(t->metrics, "%s\n", s);
    fflush(t->metrics);
    free(s);
    cJSON_Delete(o);
}

/* Start a step: the phase, its loss and optimizer settings; at a phase's first step fresh
 * optimizer moments, and at RL's first step the frozen reference. */
static int step_begin(trainer *t, trainer_metrics *m, int *phase_out, long *ps_out,
                      loss_config *lc, optim_config *oc, coh_err *err)
{
    trainer_config *c = &t->c;
    memset(m, 0, sizeof *m);
    m->eval_accuracy = -1.0;
    long ps;
    int phase = phase_of(c, t->step, &ps);
    if (phase == PHASE_DONE)
        return coh_fail(err, COH_ESTATE, "training is complete: no steps left");
    m->phase = phase_names[phase];
    if (ps == 0) {
        memset(adamw_m(t->opt), 0, adamw_size(t->opt) * sizeof(float));
        memset(adamw_v(t->opt), 0, adamw_size(t->opt) * sizeof(float));
        adamw_set_steps(t->opt, 0);
        if (phase == PHASE_RL && loss_needs_ref(&c->loss) && !t->ref) {
            int rc = model_clone(t->policy, &t->ref, err);
            char dir[600];
            snprintf(dir, sizeof dir, "%s/reference", c->out_dir);
            if (!rc)
                rc = ckpt_save(dir, t->ref, t->tok, err);
            if (rc)
                return rc;
        }
    }
    *lc = c->loss;
    *oc = c->optim;
    if (phase == PHASE_SFT || phase == PHASE_RAFT) {
        lc->mode = LOSS_SFT;
        oc->lr = c->sft_lr;
        oc->warmup_steps = c->sft_warmup;
        oc->total_steps = phase == PHASE_SFT ? c->sft_steps : c->raft_steps;
    } else {
        lc->mode = LOSS_RL;
        oc->lr = c->rl_lr;
        oc->warmup_steps = c->rl_warmup;
        oc->total_steps = c->rl_steps;
    }
    *phase_out = phase;
    *ps_out = ps;
    return COH_OK;
}

static void reward_stats(const double *r, int n, trainer_metrics *m)
{
    double s = 0, s2 = 0;
    for (int i = 0; i < n; i++) {
        s += r[i];
        s2 += r[i] * r[i];
    }
    m->reward_mean = n > 0 ? s / n : 0.0;
    m->reward_std = n > 1 ? sqrt(fmax(0.0, (s2 - s * s / n) / (n - 1))) : 0.0;
}

/* A model workspace for max_B rows of at least T tokens: made (or remade larger, in steps
 * of 64 tokens up to max_T) when a batch is longer than any before. */
static int ensure_ws(trainer *t, int T, coh_err *err)
{
    if (t->ws && T <= t->ws_T)
        return COH_OK;
    int nt = ((T + 63) / 64) * 64;
    if (nt > t->max_T)
        nt = t->max_T;
    model_ws_destroy(t->ws);
    t->ws = NULL;
    t->ws_T = 0;
    int rc = model_ws_create(t->policy, t->max_B, nt, &t->ws, err);
    if (rc == COH_OK)
        t->ws_T = nt;
    return rc;
}

/* The update on the B sequences in the batch buffers (built with stride max_T). */
static int step_learn(trainer *t, int phase, long ps, const loss_config *lc,
                      const optim_config *oc, int B, trainer_metrics *m, coh_err *err)
{
    (void)ps;
    double t_learn = now_s();
    loss_stats ls;
    memset(&ls, 0, sizeof ls);
    loss_adv_stats as;
    memset(&as, 0, sizeof as);
    adamw_stats ost;
    memset(&ost, 0, sizeof ost);
    ost.lr = optim_lr_at(oc, adamw_steps(t->opt));
    int rc;
    if (B > 0) {
        int T = 0;
        for (int b = 0; b < B; b++)
            if (t->seqs[b].len > T)
                T = t->seqs[b].len;
        /* re-pack rows with stride T for the model (they were built with stride max_T);
         * per-token arrays (behaviour, reference) keep stride max_T */
        if (T != t->max_T)
            for (int b = 1; b < B; b++)
                memmove(t->tokens + (size_t)b * T, t->tokens + (size_t)b * t->max_T,
                        (size_t)T * sizeof(int));
        for (int b = 0; b < B; b++)
            t->seqs[b].tokens = t->tokens + (size_t)b * T;
        if ((rc = ensure_ws(t, T, err)))
            return rc;
        if (lc->mode == LOSS_RL && loss_needs_ref(lc) && (rc = compute_ref_logp(t, B, T, err)))
            return rc;
        rc = model_forward(t->policy, t->ws, t->tokens, B, T, err);
        if (rc)
            return rc;
        rc = loss_advantages(lc, t->seqs, B, T, t->adv, t->use, &as, err);
        if (rc)
            return rc;
        const model_config *mc = model_get_config(t->policy);
        rc = loss_compute(lc, t->seqs, B, T, t->adv, t->use, model_ws_logits(t->ws),
                          mc->vocab_size, model_ws_dlogits(t->ws), &ls, err);
        if (rc == COH_ENONFINITE) {
            m->skipped = 1;
            fprintf(stderr, "step %ld: update skipped: %s\n", t->step + 1, err ? err->msg : "");
        } else if (rc) {
            return rc;
        } else {
            memset(t->grads, 0, model_num_params(t->policy) * sizeof(float));
            rc = model_backward(t->policy, t->ws, model_ws_dlogits(t->ws), t->grads, err);
            if (rc)
                return rc;
            rc = adamw_step(t->opt, oc, model_params(t->policy), t->grads, 0.0f, &ost, err);
            if (rc == COH_ENONFINITE) {
                m->skipped = 1;
                fprintf(stderr, "step %ld: update skipped: %s\n", t->step + 1,
                        err ? err->msg : "");
            } else if (rc) {
                return rc;
            }
        }
        double dt = now_s() - t_learn;
        m->learner_tokens_per_s = dt > 0 ? (double)B * T / dt : 0.0;
    }
    t->step++;
    m->step = t->step;
    m->version = t->step;
    m->loss = ls.loss;
    m->kl = ls.kl;
    m->clip_frac = ls.clip_frac;
    m->entropy = ls.entropy;
    m->grad_norm = ost.grad_norm;
    m->lr = ost.lr;
    m->logp_max_abs_diff = lc->mode == LOSS_RL ? ls.max_abs_logp_diff : 0.0;
    m->groups_used = phase == PHASE_SFT ? B : as.groups - as.dropped_groups;
    m->groups_dropped = as.dropped_groups;
    m->dropped_by_reason[TRAINER_DROP_ZERO_SIGNAL] = as.dropped_groups;
    return COH_OK;
}

/* End a step: evaluation, --sft-until, the metrics record, checkpoints. */
static int step_end(trainer *t, int phase, trainer_metrics *m, coh_err *err)
{
    trainer_config *c = &t->c;
    long ps_next;
    int rc, next_phase = phase_of(c, t->step, &ps_next);
    int phase_end = next_phase != phase;
    if ((c->eval_every > 0 && t->step % c->eval_every == 0) || (phase_end && c->eval_every > 0)) {
        if ((rc = trainer_evaluate(t, 0, &m->eval_accuracy, err)))
            return rc;
    }
    /* --sft-until: the warm start ends as soon as the policy reaches the accuracy */
    if (phase == PHASE_SFT && c->sft_until > 0 && m->eval_accuracy >= 0) {
        /* two evaluations in a row, so that one lucky evaluation does not end it */
        t->until_hits = m->eval_accuracy >= (double)c->sft_until ? t->until_hits + 1 : 0;
        if (t->until_hits >= 2 && !phase_end)
            c->sft_steps = (int)t->step;
    }
    m->time_s = t->time_base + now_s() - t->t0;
    write_metrics(t, m);
    if ((c->ckpt_every > 0 && t->step % c->ckpt_every == 0) || !trainer_has_next(t)) {
        if ((rc = trainer_checkpoint(t, err)))
            return rc;
        m->checkpointed = 1;
    }
    return COH_OK;
}

int trainer_step(trainer *t, trainer_metrics *m, coh_err *err)
{
    int phase, rc;
    long ps;
    loss_config lc;
    optim_config oc;
    if ((rc = step_begin(t, m, &phase, &ps, &lc, &oc, err)))
        return rc;
    int B = 0;
    double stoks = 0, stime = 0;
    if (phase == PHASE_SFT)
        rc = build_sft_batch(t, &B, err);
    else
        rc = build_rl_batch(t, phase == PHASE_RAFT, &B, &stoks, &stime, err);
    if (rc)
        return rc;
    if (phase != PHASE_SFT) {
        reward_stats(t->rewards, t->c.prompts_per_step * t->c.group_size, m);
        m->sampler_tokens_per_s = stime > 0 ? stoks / stime : 0.0;
    }
    m->staleness_mean = 0.0; /* single process: every group is sampled with the current version */
    if ((rc = step_learn(t, phase, ps, &lc, &oc, B, m, err)))
        return rc;
    return step_end(t, phase, m, err);
}

int trainer_set_hparam(trainer *t, const char *key, double value, coh_err *err)
{
    trainer_config *c = &t->c;
    if (!isfinite(value))
        return coh_fail(err, COH_EINVAL, "%s: the value must be a finite number", key);
    if (strcmp(key, "lr") == 0) {
        if (!(value > 0 && value <= 1))
            return coh_fail(err, COH_ERANGE, "lr must be in (0, 1], got %g", value);
        c->rl_lr = (float)value;
    } else if (strcmp(key, "beta") == 0) {
        if (!(value >= 0 && value <= 100))
            return coh_fail(err, COH_ERANGE, "beta must be in [0, 100], got %g", value);
        if (value > 0 && !t->ref && c->loss.beta == 0.0f && trainer_in_rl(t))
            return coh_fail(err, COH_ESTATE,
                            "this run started with beta = 0, so it keeps no reference policy; "
                            "restart the learner with --beta > 0 to use a KL penalty");
        c->loss.beta = (float)value;
    } else if (strcmp(key, "temperature") == 0) {
        if (!(value > 0 && value <= 10))
            return coh_fail(err, COH_ERANGE, "temperature must be in (0, 10], got %g", value);
        c->loss.temperature = (float)value;
        c->sampling.temperature = (float)value;
    } else if (strcmp(key, "entropy_coef") == 0) {
        if (!(value >= 0 && value <= 1))
            return coh_fail(err, COH_ERANGE, "entropy_coef must be in [0, 1], got %g", value);
        c->loss.entropy_coef = (float)value;
    } else if (strcmp(key, "eps_low") == 0 || strcmp(key, "eps_high") == 0) {
        /* eps_low < 1: the clip range's lower end 1 - eps_low must stay above 0 (the loss
         * refuses anything else, so a set it would refuse is refused here, up front) */
        if (key[4] == 'l' ? !(value >= 0 && value < 1) : !(value >= 0 && value <= 10))
            return coh_fail(err, COH_ERANGE, "%s must be in %s, got %g", key,
                            key[4] == 'l' ? "[0, 1)" : "[0, 10]", value);
        if (key[4] == 'l')
            c->loss.eps_low = (float)value;
        else
            c->loss.eps_high = (float)value;
    } else {
        return coh_fail(err, COH_EINVAL,
                        "unknown setting '%s'; known: lr, beta, temperature, entropy_coef, "
                        "eps_low, eps_high",
                        key);
    }
    return COH_OK;
}

int trainer_in_rl(const trainer *t)
{
    long ps;
    return phase_of(&t->c, t->step, &ps) == PHASE_RL;
}

int trainer_step_groups(trainer *t, const trainer_group *groups, int n, trainer_metrics *m,
                        coh_err *err)
{
    return trainer_step_groups_ex(t, groups, n, NULL, 0, 0, m, err);
}

int trainer_step_groups_ex(trainer *t, const trainer_group *groups, int n,
                           const long *refused, uint64_t seq_first, uint64_t seq_last,
                           trainer_metrics *m, coh_err *err)
{
    int phase, rc;
    long ps;
    loss_config lc;
    optim_config oc;
    long p0;
    if (phase_of(&t->c, t->step, &p0) != PHASE_RL)
        return coh_fail(err, COH_ESTATE,
                        "step %ld is not an RL step: scored groups are used in the RL phase only",
                        t->step + 1);
    if ((rc = step_begin(t, m, &phase, &ps, &lc, &oc, err)))
        return rc;
    int B = 0;
    double staleness = 0.0;
    long ncomp = 0;
    for (int g = 0; g < n; g++) {
        const trainer_group *gr = &groups[g];
        for (int i = 0; i < gr->n; i++) {
            const trainer_completion *cp = &gr->completions[i];
            if (B >= t->max_B)
                return coh_fail(err, COH_ERANGE,
                                "%d groups hold more than the %d sequences a step takes", n,
                                t->max_B);
            if (gr->prompt_len < 1 || cp->len < 1 || gr->prompt_len + cp->len > t->max_T)
                return coh_fail(err, COH_ESHAPE,
                                "group %d completion %d: %d prompt + %d completion tokens (the "
                                "model takes 1..%d in all)",
                                g, i, gr->prompt_len, cp->len, t->max_T);
            put_seq(t, B, gr->prompt, gr->prompt_len, cp->tokens, cp->len, cp->behaviour_logp,
                    cp->reward, g);
            t->rewards[B] = cp->reward;
            staleness += (double)(t->step - cp->version);
            ncomp++;
            B++;
        }
    }
    reward_stats(t->rewards, B, m);
    m->staleness_mean = ncomp ? staleness / (double)ncomp : 0.0;
    if ((rc = step_learn(t, phase, ps, &lc, &oc, B, m, err)))
        return rc;
    for (int i = 0; refused && i < TRAINER_DROP_N; i++) {
        m->dropped_by_reason[i] += refused[i];
        m->groups_dropped += (int)refused[i];
    }
    m->seq_first = seq_first;
    m->seq_last = seq_last;
    return step_end(t, phase, m, err);
}
