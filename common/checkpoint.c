/* checkpoint.c - policy checkpoint folders: config.json + model.safetensors + tokenizer.json
 * (see checkpoint.h).
 *
 * The model's tensor table (model.h) is the single source of tensor names and shapes: saving
 * writes exactly those tensors, loading requires exactly those tensors. When embeddings are
 * tied, lm_head.weight is never written and a file that carries one is refused, because
 * silently dropping a trained head would change the policy.
 */
#include "checkpoint.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsutil.h"
#include "safetensors.h"

#define CKPT_LM_HEAD "lm_head.weight"

/* ---- private helpers ---------------------------------------------------------------- */

/* dir + "/" + name in a malloc'd string; NULL when out of memory. */
static char *join_path(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p)
        return NULL;
    memcpy(p, dir, a);
    size_t k = a;
    if (a > 0 && dir[a - 1] != '/')
        p[k++] = '/';
    memcpy(p + k, name, b + 1);
    return p;
}

/* Tensors the tied model does not own must not be written even if a table lists them. */
static int skip_tensor(const model_config *c, const model_tensor *t)
{
    return c->tie_embeddings && strcmp(t->name, CKPT_LM_HEAD) == 0;
}

static void format_shape_ll(char *out, size_t cap, int ndim, const long long *shape)
{
    size_t k = 0;
    k += (size_t)snprintf(out + k, cap - k, "[");
    for (int d = 0; d < ndim && k < cap; d++)
        k += (size_t)snprintf(out + k, cap - k, d ? ", %lld" : "%lld", shape[d]);
    if (k < cap)
        snprintf(out + k, cap - k, "]");
}

static void format_shape_int(char *out, size_t cap, int ndim, const int *shape)
{
    long long s[ST_MAX_DIMS] = {0};
    for (int d = 0; d < ndim && d < ST_MAX_DIMS; d++)
        s[d] = shape[d];
    format_shape_ll(out, cap, ndim, s);
}

/* Every tensor in the file must be one the model expects. */
static int check_no_unexpected(const st_file *f, const model *m, const char *wpath,
                               const char *allow, coh_err *err)
{
    const model_config *c = model_get_config(m);
    for (int i = 0; i < st_count(f); i++) {
        const char *name = st_info(f, i)->name;
        if (allow && strcmp(name, allow) == 0)
            continue;
        const model_tensor *t = model_find_tensor(m, name);
        if (strcmp(name, CKPT_LM_HEAD) == 0 && c->tie_embeddings)
            return coh_fail(err, COH_EFORMAT,
                            "'%s' has tensor '%s' but config.json sets tie_word_embeddings = "
                            "true, so the head is the embedding matrix and a separate head "
                            "would be ignored; set tie_word_embeddings to false in config.json "
                            "or remove the tensor",
                            wpath, name);
        if (!t || skip_tensor(c, t))
            return coh_fail(err, COH_EFORMAT,
                            "'%s' has unexpected tensor '%.120s' that a %s model with this "
                            "config.json does not have (wrong architecture or config?%s)",
                            wpath, name, model_family_arch(c->family),
                            strstr(name, "_proj.bias") && c->family == MODEL_FAMILY_LLAMA
                                ? " attention biases need attention_bias: true"
                                : "");
    }
    return COH_OK;
}

/* Load every expected tensor into the parameter slab, checking name, shape and values. */
static int load_tensors_allow(const st_file *f, model *m, const char *wpath, const char *allow,
                              coh_err *err)
{
    const model_config *c = model_get_config(m);
    float *params = model_params(m);
    int rc = check_no_unexpected(f, m, wpath, allow, err);
    if (rc != COH_OK)
        return rc;
    for (int i = 0; i < model_num_tensors(m); i++) {
        const model_tensor *t = model_tensor_at(m, i);
        if (skip_tensor(c, t))
            continue;
        const st_tensor_info *ti = st_find(f, t->name);
        if (!ti) {
            if (strcmp(t->name, CKPT_LM_HEAD) == 0)
                return coh_fail(err, COH_ENOTFOUND,
                                "'%s' has no tensor '%s' but config.json sets "
                                "tie_word_embeddings = false; set it to true if the head is "
                                "tied to the embedding",
                                wpath, t->name);
            return coh_fail(err, COH_ENOTFOUND, "'%s' has no tensor '%s', which the model needs",
                            wpath, t->name);
        }
        int same = ti->ndim == t->ndim;
        for (int d = 0; same && d < t->ndim; d++)
            same = ti->shape[d] == (long long)t->shape[d];
        if (!same) {
            char want[64], got[96];
            format_shape_int(want, sizeof want, t->ndim, t->shape);
            format_shape_ll(got, sizeof got, ti->ndim, ti->shape);
            return coh_fail(err, COH_ESHAPE,
                            "'%s': tensor '%s' has shape %s but config.json implies %s", wpath,
                            t->name, got, want);
        }
        float *dst = params + t->offset;
        rc = st_read_f32(f, t->name, dst, t->numel, err);
        if (rc != COH_OK)
            return coh_wrap(err, rc, "'%s'", wpath);
        for (size_t k = 0; k < t->numel; k++)
            if (!isfinite(dst[k]))
                return coh_fail(err, COH_ENONFINITE,
                                "'%s': tensor '%s' holds a non-finite value at element %zu; the "
                                "checkpoint is unusable (diverged training?)",
                                wpath, t->name, k);
    }
    return COH_OK;
}

static int load_tensors(const st_file *f, model *m, const char *wpath, coh_err *err)
{
    return load_tensors_allow(f, m, wpath, NULL, err);
}

/* The tensors a checkpoint stores, in table order (lm_head left out when tied). entries must
 * hold model_num_tensors(m) items; returns how many were filled. */
static int fill_entries(const model *m, st_entry *e)
{
    const model_config *c = model_get_config(m);
    const float *params = model_params_const(m);
    int n = 0;
    for (int i = 0; i < model_num_tensors(m); i++) {
        const model_tensor *t = model_tensor_at(m, i);
        if (skip_tensor(c, t))
            continue;
        e[n].name = t->name;
        e[n].ndim = t->ndim;
        for (int d = 0; d < t->ndim; d++)
            e[n].shape[d] = t->shape[d];
        e[n].data = params + t->offset;
        n++;
    }
    return n;
}

/* DIR/generation_config.json, when present, supplies the EOS ids (as in transformers). */
static int load_generation_config(const char *dir, model_config *c, coh_err *err)
{
    char *gpath = join_path(dir, CKPT_GENERATION);
    if (!gpath)
        return coh_fail(err, COH_ENOMEM, "out of memory loading checkpoint '%s'", dir);
    int rc = fs_exists(gpath) ? model_config_load_generation(gpath, c, err) : COH_OK;
    free(gpath);
    return rc;
}

/* ---- public API --------------------------------------------------------------------- */

int ckpt_save(const char *dir, const model *m, const tokenizer *tok, coh_err *err)
{
    if (!dir || !*dir || !m)
        return coh_fail(err, COH_EINVAL, "ckpt_save: bad arguments");
    const model_config *c = model_get_config(m);
    if (tok && tok_vocab_size(tok) > c->vocab_size)
        return coh_fail(err, COH_EINVAL,
                        "tokenizer has %d ids but the model's vocab_size is %d; they do not "
                        "belong together",
                        tok_vocab_size(tok), c->vocab_size);
    int rc = fs_mkdirs(dir, err);
    if (rc != COH_OK)
        return rc;

    char *cpath = join_path(dir, CKPT_CONFIG);
    char *wpath = join_path(dir, CKPT_WEIGHTS);
    char *tpath = join_path(dir, TOK_FILE);
    int nt = model_num_tensors(m);
    st_entry *e = calloc((size_t)nt + 1, sizeof *e);
    if (!cpath || !wpath || !tpath || !e) {
        rc = coh_fail(err, COH_ENOMEM, "out of memory saving checkpoint '%s'", dir);
        goto out;
    }
    int n = fill_entries(m, e);
    /* Weights first, config second: a folder whose config.json exists has its weights. */
    if ((rc = st_write(wpath, e, n, NULL, err)) != COH_OK)
        goto out;
    if ((rc = model_config_save(cpath, c, err)) != COH_OK)
        goto out;
    if (tok)
        rc = tok_save_dir(tok, dir, err);
out:
    if (rc != COH_OK)
        coh_wrap(err, rc, "saving checkpoint '%s'", dir);
    free(e);
    free(cpath);
    free(wpath);
    free(tpath);
    return rc;
}

int ckpt_load(const char *dir, model **m_out, tokenizer **tok_out, coh_err *err)
{
    if (m_out)
        *m_out = NULL;
    if (tok_out)
        *tok_out = NULL;
    if (!dir || !*dir || !m_out)
        return coh_fail(err, COH_EINVAL, "ckpt_load: bad arguments");
    if (!fs_exists(dir))
        return coh_fail(err, COH_ENOTFOUND,
                        "checkpoint folder '%s' does not exist; give the path of a folder "
                        "written by a Cohort checkpoint (or a Hugging Face Llama folder)",
                        dir);

    model *m = NULL;
    tokenizer *tok = NULL;
    st_file *f = NULL;
    int rc = COH_OK;
    char *cpath = join_path(dir, CKPT_CONFIG);
    char *wpath = join_path(dir, CKPT_WEIGHTS);
    char *tpath = join_path(dir, TOK_FILE);
    if (!cpath || !wpath || !tpath) {
        rc = coh_fail(err, COH_ENOMEM, "out of memory loading checkpoint '%s'", dir);
        goto out;
    }
    if (!fs_exists(cpath)) {
        rc = coh_fail(err, COH_ENOTFOUND,
                      "checkpoint folder '%s' has no %s; a checkpoint needs %s and %s (is this "
                      "the right folder?)",
                      dir, CKPT_CONFIG, CKPT_CONFIG, CKPT_WEIGHTS);
        goto out;
    }
    if (!fs_exists(wpath)) {
        rc = coh_fail(err, COH_ENOTFOUND,
                      "checkpoint folder '%s' has no %s (the weights); copy it next to %s, or "
                      "convert sharded or .bin weights to a single %s",
                      dir, CKPT_WEIGHTS, CKPT_CONFIG, CKPT_WEIGHTS);
        goto out;
    }

    model_config c;
    if ((rc = model_config_load(cpath, &c, err)) != COH_OK)
        goto out;
    if ((rc = load_generation_config(dir, &c, err)) != COH_OK)
        goto out;
    if ((rc = model_create(&c, &m, err)) != COH_OK) {
        coh_wrap(err, rc, "creating the model of '%s'", cpath);
        goto out;
    }
    if ((rc = st_open(wpath, &f, err)) != COH_OK)
        goto out;
    if ((rc = load_tensors(f, m, wpath, err)) != COH_OK)
        goto out;

    if (tok_out && fs_exists(tpath)) {
        if ((rc = tok_load_dir(dir, &tok, err)) != COH_OK)
            goto out;
        if (tok_vocab_size(tok) > c.vocab_size) {
            rc = coh_fail(err, COH_EFORMAT,
                          "'%s' has %d ids but config.json has vocab_size %d; the tokenizer "
                          "belongs to another model",
                          tpath, tok_vocab_size(tok), c.vocab_size);
            goto out;
        }
    }

out:
    st_close(f);
    if (rc != COH_OK) {
        model_destroy(m);
        tok_destroy(tok); /* every message above already names the file at fault */
    } else {
        *m_out = m;
        if (tok_out)
            *tok_out = tok;
    }
    free(cpath);
    free(wpath);
    free(tpath);
    return rc;
}

int ckpt_to_buffer(const model *m, char **config_json, void **weights, size_t *weights_len,
                   coh_err *err)
{
    if (!m || !config_json || !weights || !weights_len)
        return coh_fail(err, COH_EINVAL, "ckpt_to_buffer: NULL argument");
    *config_json = NULL;
    *weights = NULL;
    *weights_len = 0;
    st_entry *e = calloc((size_t)model_num_tensors(m) + 1, sizeof *e);
    if (!e)
        return coh_fail(err, COH_ENOMEM, "out of memory serialising the policy");
    int n = fill_entries(m, e);
    int rc = st_write_buffer(e, n, NULL, weights, weights_len, err);
    free(e);
    if (rc == COH_OK)
        rc = model_config_to_json(model_get_config(m), config_json, err);
    if (rc != COH_OK) {
        free(*weights);
        *weights = NULL;
        *weights_len = 0;
    }
    return rc;
}

int ckpt_from_buffer(const char *config_json, size_t config_len, const void *weights,
                     size_t weights_len, model **m_out, coh_err *err)
{
    if (m_out)
        *m_out = NULL;
    if (!config_json || !m_out)
        return coh_fail(err, COH_EINVAL, "ckpt_from_buffer: NULL argument");
    model_config c;
    int rc = model_config_parse(config_json, config_len, &c, err);
    if (rc != COH_OK)
        return coh_wrap(err, rc, "received config.json");
    model *m = NULL;
    st_file *f = NULL;
    if ((rc = model_create(&c, &m, err)) == COH_OK &&
        (rc = st_open_buffer(weights, weights_len, "received weights", &f, err)) == COH_OK)
        rc = load_tensors(f, m, "received weights", err);
    st_close(f);
    if (rc != COH_OK) {
        model_destroy(m);
        return rc;
    }
    *m_out = m;
    return COH_OK;
}

int ckpt_load_seqcls(const char *dir, model **m_out, float **score_out, tokenizer **tok_out,
                     coh_err *err)
{
    if (m_out)
        *m_out = NULL;
    if (score_out)
        *score_out = NULL;
    if (tok_out)
        *tok_out = NULL;
    if (!dir || !m_out || !score_out)
        return coh_fail(err, COH_EINVAL, "ckpt_load_seqcls: bad arguments");
    char *cpath = join_path(dir, CKPT_CONFIG);
    char *wpath = join_path(dir, CKPT_WEIGHTS);
    char *tpath = join_path(dir, TOK_FILE);
    model *m = NULL;
    st_file *f = NULL;
    float *score = NULL;
    tokenizer *tok = NULL;
    int rc = COH_OK;
    model_config c;
    if (!cpath || !wpath || !tpath) {
        rc = coh_fail(err, COH_ENOMEM, "out of memory loading reward model '%s'", dir);
        goto out;
    }
    if ((rc = model_config_load(cpath, &c, err)) != COH_OK)
        goto out;
    /* the body has no lm_head: build it tied so that none is expected */
    c.tie_embeddings = 1;
    if ((rc = model_create(&c, &m, err)) != COH_OK || (rc = st_open(wpath, &f, err)) != COH_OK)
        goto out;
    if ((rc = load_tensors_allow(f, m, wpath, CKPT_SCORE, err)) != COH_OK)
        goto out;
    const st_tensor_info *ti = st_find(f, CKPT_SCORE);
    if (!ti) {
        rc = coh_fail(err, COH_ENOTFOUND,
                      "'%s' has no '%s': a reward model is a LlamaForSequenceClassification "
                      "checkpoint (the Llama body plus %s of shape [1, hidden_size])",
                      wpath, CKPT_SCORE, CKPT_SCORE);
        goto out;
    }
    if (ti->ndim != 2 || ti->shape[0] != 1 || ti->shape[1] != c.dim) {
        rc = coh_fail(err, COH_ESHAPE,
                      "'%s': %s must have shape [1, %d] (one score per sequence); this one has "
                      "%d dimension(s), first %lld - a classifier with several labels is not a "
                      "reward model",
                      wpath, CKPT_SCORE, c.dim, ti->ndim, ti->ndim > 0 ? ti->shape[0] : 0);
        goto out;
    }
    score = malloc((size_t)c.dim * sizeof(float));
    if (!score) {
        rc = coh_fail(err, COH_ENOMEM, "out of memory loading '%s'", wpath);
        goto out;
    }
    if ((rc = st_read_f32(f, CKPT_SCORE, score, (size_t)c.dim, err)) != COH_OK)
        goto out;
    for (int i = 0; i < c.dim; i++)
        if (!isfinite(score[i])) {
            rc = coh_fail(err, COH_ENONFINITE, "'%s': %s holds a non-finite value", wpath,
                          CKPT_SCORE);
            goto out;
        }
    if (tok_out && fs_exists(tpath) && (rc = tok_load_dir(dir, &tok, err)) != COH_OK)
        goto out;
out:
    st_close(f);
    free(cpath);
    free(wpath);
    free(tpath);
    if (rc != COH_OK) {
        model_destroy(m);
        free(score);
        tok_destroy(tok);
        return rc;
    }
    *m_out = m;
    *score_out = score;
    if (tok_out)
        *tok_out = tok;
    return COH_OK;
}
