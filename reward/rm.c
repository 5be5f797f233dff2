/* rm.c - reward model scoring (see rm.h). */
#include "rm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "model.h"
#include "tokenizer.h"

struct rm_model {
    model *body;
    float *score;   /* [D] */
    tokenizer *tok; /* may be NULL */
    model_ws *ws;   /* 1 x max_seq */
    int *ids;       /* [max_seq] */
    char dir[256];
};

int rm_load(const char *dir, rm_model **out, coh_err *err)
{
    *out = NULL;
    rm_model *r = calloc(1, sizeof *r);
    if (!r)
        return coh_fail(err, COH_ENOMEM, "out of memory loading reward model");
    snprintf(r->dir, sizeof r->dir, "%s", dir);
    int rc = ckpt_load_seqcls(dir, &r->body, &r->score, &r->tok, err);
    if (!rc) {
        int T = model_get_config(r->body)->max_seq;
        rc = model_ws_create(r->body, 1, T, &r->ws, err);
        if (!rc && !(r->ids = malloc((size_t)T * sizeof(int))))
            rc = coh_fail(err, COH_ENOMEM, "out of memory loading reward model");
    }
    if (rc) {
        rm_destroy(r);
        return rc;
    }
    *out = r;
    return COH_OK;
}

void rm_destroy(rm_model *r)
{
    if (!r)
        return;
    model_destroy(r->body);
    free(r->score);
    tok_destroy(r->tok);
    model_ws_destroy(r->ws);
    free(r->ids);
    free(r);
}

int rm_score_tokens(rm_model *r, const int *ids, int n, double *score, coh_err *err)
{
    const model_config *c = model_get_config(r->body);
    if (n <= 0 || n > c->max_seq)
        return coh_fail(err, COH_ERANGE,
                        "reward model %s scores 1..%d tokens; this sequence has %d", r->dir,
                        c->max_seq, n);
    int rc = model_forward(r->body, r->ws, ids, 1, n, err);
    if (rc)
        return rc;
    const float *h = model_ws_hidden(r->ws) + (size_t)(n - 1) * c->dim;
    double s = 0.0;
    for (int i = 0; i < c->dim; i++)
        s += (double)h[i] * r->score[i];
    *score = s;
    return COH_OK;
}

int rm_score_text(rm_model *r, const char *prompt, const char *completion, double *score,
                  coh_err *err)
{
    if (!r->tok)
        return coh_fail(err, COH_ENOTFOUND,
                        "reward model %s has no tokenizer.json, so it cannot score text; add "
                        "the built-in tokenizer file to the folder",
                        r->dir);
    int cap = model_get_config(r->body)->max_seq, n1 = 0, n2 = 0;
    r->ids[0] = TOK_BOS;
    int rc = tok_encode(r->tok, prompt, r->ids + 1, cap - 1, &n1, err);
    if (!rc)
        rc = tok_encode(r->tok, completion, r->ids + 1 + n1, cap - 1 - n1, &n2, err);
    if (rc)
        return coh_wrap(err, rc, "reward model %s", r->dir);
    return rm_score_tokens(r, r->ids, 1 + n1 + n2, score, err);
}
