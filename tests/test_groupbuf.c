/* test_groupbuf.c - validation and buffering of scored groups (learner/groupbuf.c).
 *
 * Every malformed field is refused with its code, reason counter and a message naming the
 * completion and the field; versions from the future and stale versions likewise. The
 * buffer copies what it keeps, pushes back when full, pops in arrival order, keeps exact
 * staleness statistics, and no refused push ever alters what it already holds.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "groupbuf.h"

#define HAS(msg, s)                                                                          \
    do {                                                                                     \
        if (!strstr((msg), (s)))                                                             \
            fail_msg("message \"%s\" lacks \"%s\"", (msg), (s));                              \
    } while (0)

#define G 4
#define V 256
#define TOK_MAX 16

static gbuf_config cfg(void)
{
    return (gbuf_config){.capacity = 3, .group_size = G, .vocab_size = V, .max_seq = 16,
                         .max_new_tokens = 8, .max_staleness = 2};
}

/* A caller-built group with its own arrays. */
typedef struct fx {
    int prompt[TOK_MAX];
    int tok[G][TOK_MAX];
    float lp[G][TOK_MAX];
    gbuf_completion comp[G];
    gbuf_group g;
} fx;

/* Group for prompt p: n_prompt prompt tokens, completion i has n_tok + i % 2 tokens. */
static void fx_init(fx *f, uint64_t p, int n_prompt, int n_tok, uint64_t version)
{
    memset(f, 0, sizeof *f);
    for (int k = 0; k < n_prompt; k++)
        f->prompt[k] = (int)((p * 7 + (uint64_t)k) % V);
    for (int i = 0; i < G; i++) {
        int n = n_tok + i % 2;
        for (int k = 0; k < n; k++) {
            f->tok[i][k] = (int)((p * 13 + (uint64_t)(i * 3 + k)) % V);
            f->lp[i][k] = -0.125f * (float)(k + 1) - (float)i;
        }
        f->comp[i] = (gbuf_completion){.tokens = f->tok[i], .n_tokens = n, .logp = f->lp[i],
                                       .n_logp = n, .version = version,
                                       .reward = 0.5 * i + (double)p};
    }
    f->g = (gbuf_group){.prompt = p, .lease_id = 1000 + p, .prompt_tokens = f->prompt,
                        .n_prompt = n_prompt, .completions = f->comp, .n_completions = G};
}

/* Does a popped group hold exactly what fx_init(p, n_prompt, n_tok, version) builds? */
static void check_group(const gbuf_group *got, uint64_t p, int n_prompt, int n_tok,
                        uint64_t version)
{
    fx want;
    fx_init(&want, p, n_prompt, n_tok, version);
    assert_int_equal((long)got->prompt, (long)p);
    assert_int_equal((long)got->lease_id, (long)(1000 + p));
    assert_int_equal(got->n_prompt, n_prompt);
    assert_memory_equal(got->prompt_tokens, want.prompt, (size_t)n_prompt * sizeof(int));
    assert_int_equal(got->n_completions, G);
    for (int i = 0; i < G; i++) {
        const gbuf_completion *x = &got->completions[i], *w = &want.comp[i];
        assert_int_equal(x->n_tokens, w->n_tokens);
        assert_int_equal(x->n_logp, w->n_tokens);
        assert_memory_equal(x->tokens, w->tokens, (size_t)w->n_tokens * sizeof(int));
        assert_memory_equal(x->logp, w->logp, (size_t)w->n_tokens * sizeof(float));
        assert_int_equal((long)x->version, (long)version);
        assert_true(x->reward == w->reward);
    }
}

/* Refused with code and reason, message contains both fragments. */
static void refused(gbuf *b, const gbuf_group *g, uint64_t cur, int code,
                    gbuf_drop_reason why, const char *frag1, const char *frag2)
{
    coh_err err;
    gbuf_config c = cfg();
    gbuf_stats before, after;
    gbuf_get_stats(b, &before);
    assert_int_equal(gbuf_validate(&c, g, cur, &err), code);
    HAS(err.msg, frag1);
    if (frag2)
        HAS(err.msg, frag2);
    assert_int_equal(gbuf_push(b, g, cur, &err), code);
    HAS(err.msg, frag1);
    gbuf_get_stats(b, &after);
    assert_int_equal((long)after.refused[why], (long)before.refused[why] + 1);
    assert_int_equal((long)after.refused_total, (long)before.refused_total + 1);
    assert_int_equal(after.count, before.count);
    assert_int_equal((long)after.accepted, (long)before.accepted);
}

static gbuf *make(void)
{
    gbuf *b = NULL;
    coh_err err;
    gbuf_config c = cfg();
    assert_int_equal(gbuf_create(&c, &b, &err), COH_OK);
    assert_non_null(b);
    return b;
}

/* ---- config ---- */

static void test_config(void **state)
{
    (void)state;
    coh_err err;
    gbuf *b = (gbuf *)1;
    gbuf_config c = cfg();
    assert_int_equal(gbuf_config_check(&c, &err), COH_OK);
    assert_int_equal(gbuf_create(NULL, &b, &err), COH_EINVAL);
    assert_null(b);
    struct {
        int *field;
        int bad;
        const char *name;
    } cases[] = {
        {&c.capacity, 0, "capacity"},      {&c.group_size, 0, "group_size"},
        {&c.vocab_size, 0, "vocab_size"},  {&c.max_seq, 1, "max_seq"},
        {&c.max_new_tokens, 0, "max_new_tokens"}, {&c.max_staleness, -1, "max_staleness"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        c = cfg();
        *cases[i].field = cases[i].bad;
        assert_int_equal(gbuf_create(&c, &b, &err), COH_EINVAL);
        HAS(err.msg, cases[i].name);
        fx f;
        fx_init(&f, 1, 3, 4, 5);
        assert_int_equal(gbuf_validate(&c, &f.g, 5, &err), COH_EINVAL);
        HAS(err.msg, cases[i].name);
    }
    gbuf_destroy(NULL);
    assert_string_equal(gbuf_drop_reason_name(GBUF_DROP_FUTURE), "future_version");
    assert_string_equal(gbuf_drop_reason_name(GBUF_DROP_STALE), "stale");
    assert_string_equal(gbuf_drop_reason_name(GBUF_DROP_N), "unknown");
    assert_string_equal(coh_err_name(COH_EFULL), "EFULL");
    assert_string_equal(coh_err_str(COH_EFULL), "buffer full");
}

/* ---- validation, field by field ---- */

static void test_valid_group(void **state)
{
    (void)state;
    coh_err err;
    gbuf_config c = cfg();
    fx f;
    fx_init(&f, 3, 8, 7, 10); /* 8 + 8 = max_seq exactly; 8 = max_new_tokens exactly */
    assert_int_equal(gbuf_validate(&c, &f.g, 10, &err), COH_OK);
    assert_int_equal(gbuf_validate(&c, &f.g, 12, &err), COH_OK); /* exactly max_staleness */
    f.lp[0][0] = 0.0f;   /* probability 1 is fine */
    f.lp[1][0] = -INFINITY;
    assert_int_equal(gbuf_validate(&c, &f.g, 10, &err), COH_EINVAL);
    HAS(err.msg, "completion 1: logprobs[0] is not finite");
    f.lp[1][0] = -1e30f; /* very unlikely but finite */
    f.comp[2].reward = -1e300;
    assert_int_equal(gbuf_validate(&c, &f.g, 10, &err), COH_OK);
    assert_int_equal(gbuf_validate(&c, NULL, 10, &err), COH_EINVAL);
    HAS(err.msg, "NULL");
    assert_int_equal(gbuf_validate(NULL, &f.g, 10, &err), COH_EINVAL);
}

static void test_bad_shapes(void **state)
{
    (void)state;
    gbuf *b = make();
    fx f;

    fx_init(&f, 1, 3, 4, 5);
    f.g.n_completions = 0;
    refused(b, &f.g, 5, COH_EINVAL, GBUF_DROP_SHAPE, "empty group", NULL);
    fx_init(&f, 1, 3, 4, 5);
    f.g.completions = NULL;
    refused(b, &f.g, 5, COH_EINVAL, GBUF_DROP_SHAPE, "empty group", NULL);

    fx_init(&f, 1, 3, 4, 5);
    f.g.n_completions = G - 1; /* wrong group size */
    refused(b, &f.g, 5, COH_EINVAL, GBUF_DROP_SHAPE, "group has 3 completions",
            "group_size is 4");

    fx_init(&f, 1, 3, 4, 5);
    f.g.n_prompt = 0;
    refused(b, &f.g, 5, COH_EINVAL, GBUF_DROP_SHAPE, "prompt_tokens: empty prompt", NULL);
    fx_init(&f, 1, 3, 4, 5);
    f.g.n_prompt = 16;
    refused(b, &f.g, 5, COH_EINVAL, GBUF_DROP_LENGTH, "prompt_tokens", "max_seq 16");
    fx_init(&f, 1, 3, 4, 5);
    f.prompt[2] = V;
    refused(b, &f.g, 5, COH_EINVAL, GBUF_DROP_TOKEN, "prompt_tokens[2] = 256",
            "outside [0, 256)");

    fx_init(&f, 1, 3, 4, 5);
    f.comp[1].n_tokens = 0;
    refused(b, &f.g, 5, COH_EINVAL, GBUF_DROP_SHAPE, "completion 1: tokens: empty", NULL);
    fx_init(&f, 1, 3, 4, 5);
    f.comp[3].tokens = NULL;
    refused(b, &f.g, 5, COH_EINVAL, GBUF_DROP_SHAPE, "completion 3: tokens: empty", NULL);

    gbuf_destroy(b);
}

static void test_bad_lengths_and_tokens(void **state)
{
    (void)state;
    gbuf *b = make();
    fx f;

    fx_init(&f, 1, 2, 4, 5);
    f.comp[2].n_tokens = f.comp[2].n_logp = 9; /* > max_new_tokens 8 */
    refused(b, &f.g, 5, COH_EINVAL, GBUF_DROP_LENGTH, "completion 2: tokens",
            "exceed max_new_tokens 8");

    fx_init(&f, 1, 9, 7, 5); /* completion 1 has 8 tokens: 9 + 8 > 16 */
    refused(b, &f.g, 5, COH_EINVAL, GBUF_DROP_LENGTH, "completion 1: tokens",
            "prompt 9 + completion 8 tokens exceed max_seq 16");

    fx_init(&f, 1, 3, 4, 5);
    f.tok[0][1] = 300;
    refused(b, &f.g, 5, COH_EINVAL, GBUF_DROP_TOKEN, "completion 0: tokens[1] = 300",
            "outside [0, 256)");
    fx_init(&f, 1, 3, 4, 5);
    f.tok[3][4] = -1; /* completion 3 has 5 tokens */
    refused(b, &f.g, 5, COH_EINVAL, GBUF_DROP_TOKEN, "completion 3: tokens[4] = -1", NULL);

    gbuf_destroy(b);
}

static void test_bad_logprobs_and_rewards(void **state)
{
    (void)state;
    gbuf *b = make();
    fx f;

    fx_init(&f, 1, 3, 4, 5);
    f.comp[3].n_logp = 2;
    refused(b, &f.g, 5, COH_EINVAL, GBUF_DROP_SHAPE, "completion 3: logprobs",
            "2 behaviour log-probs for 5 completion tokens");
    fx_init(&f, 1, 3, 4, 5);
    f.comp[0].logp = NULL;
    refused(b, &f.g, 5, COH_EINVAL, GBUF_DROP_SHAPE, "completion 0: logprobs", NULL);

    fx_init(&f, 1, 3, 4, 5);
    f.lp[1][2] = NAN;
    refused(b, &f.g, 5, COH_EINVAL, GBUF_DROP_LOGPROB, "completion 1: logprobs[2]",
            "not finite (nan)");
    fx_init(&f, 1, 3, 4, 5);
    f.lp[2][0] = INFINITY;
    refused(b, &f.g, 5, COH_EINVAL, GBUF_DROP_LOGPROB, "completion 2: logprobs[0]",
            "not finite (inf)");
    fx_init(&f, 1, 3, 4, 5);
    f.lp[0][3] = 0.25f;
    refused(b, &f.g, 5, COH_EINVAL, GBUF_DROP_LOGPROB, "completion 0: logprobs[3] = 0.25",
            "positive");

    fx_init(&f, 1, 3, 4, 5);
    f.comp[2].reward = NAN;
    refused(b, &f.g, 5, COH_EINVAL, GBUF_DROP_REWARD, "completion 2: reward",
            "not finite (nan)");
    fx_init(&f, 1, 3, 4, 5);
    f.comp[1].reward = -INFINITY;
    refused(b, &f.g, 5, COH_EINVAL, GBUF_DROP_REWARD, "completion 1: reward",
            "not finite (-inf)");

    gbuf_destroy(b);
}

static void test_versions(void **state)
{
    (void)state;
    gbuf *b = make();
    fx f;

    fx_init(&f, 1, 3, 4, 10);
    f.comp[1].version = 11;
    refused(b, &f.g, 10, COH_ERANGE, GBUF_DROP_FUTURE, "completion 1: version 11",
            "from the future");

    fx_init(&f, 1, 3, 4, 10);
    f.comp[2].version = 7; /* 3 behind, max_staleness 2 */
    refused(b, &f.g, 10, COH_ESTATE, GBUF_DROP_STALE, "completion 2: version 7 is stale",
            "max_staleness 2");

    fx_init(&f, 1, 3, 4, 0); /* all stale, one also malformed: malformed is reported */
    f.comp[3].reward = NAN;
    refused(b, &f.g, 10, COH_EINVAL, GBUF_DROP_REWARD, "completion 3: reward", NULL);

    /* mixed versions within the window are fine */
    coh_err err;
    fx_init(&f, 1, 3, 4, 10);
    f.comp[0].version = 8;
    f.comp[3].version = 9;
    assert_int_equal(gbuf_push(b, &f.g, 10, &err), COH_OK);
    gbuf_destroy(b); /* frees the group still inside */
}

/* ---- buffering ---- */

static void test_copy_not_kept(void **state)
{
    (void)state;
    coh_err err;
    gbuf *b = make();
    fx *f = malloc(sizeof *f);
    assert_non_null(f);
    fx_init(f, 42, 5, 6, 3);
    assert_int_equal(gbuf_push(b, &f->g, 3, &err), COH_OK);
    memset(f, 0xAB, sizeof *f); /* the caller reuses its memory */
    free(f);

    gbuf_group *out[2] = {NULL, NULL};
    assert_int_equal(gbuf_pop_batch(b, 2, 3, out), 1);
    assert_null(out[1]);
    check_group(out[0], 42, 5, 6, 3);

    /* the loss view: each sequence is prompt then completion, contiguous */
    loss_seq seqs[G];
    gbuf_group_seqs(out[0], 7, seqs);
    fx want;
    fx_init(&want, 42, 5, 6, 3);
    for (int i = 0; i < G; i++) {
        assert_int_equal(seqs[i].group, 7);
        assert_int_equal(seqs[i].prompt_len, 5);
        assert_int_equal(seqs[i].len, 5 + want.comp[i].n_tokens);
        assert_memory_equal(seqs[i].tokens, want.prompt, 5 * sizeof(int));
        assert_memory_equal(seqs[i].tokens + 5, want.tok[i],
                            (size_t)want.comp[i].n_tokens * sizeof(int));
        assert_memory_equal(seqs[i].behaviour_logp, want.lp[i],
                            (size_t)want.comp[i].n_tokens * sizeof(float));
        assert_true(seqs[i].reward == want.comp[i].reward);
        assert_null(seqs[i].ref_logp);
    }
    gbuf_group_free(out[0]);
    gbuf_group_free(NULL);
    gbuf_destroy(b);
}

static void test_full_backpressure(void **state)
{
    (void)state;
    coh_err err;
    gbuf *b = make(); /* capacity 3 */
    fx f;
    for (uint64_t p = 0; p < 3; p++) {
        fx_init(&f, p, 3, 4, 5);
        assert_int_equal(gbuf_push(b, &f.g, 5, &err), COH_OK);
    }
    assert_int_equal(gbuf_count(b), 3);
    assert_int_equal(gbuf_capacity(b), 3);
    fx_init(&f, 3, 3, 4, 5);
    assert_int_equal(gbuf_push(b, &f.g, 5, &err), COH_EFULL);
    HAS(err.msg, "buffer full");
    HAS(err.msg, "3 groups");
    /* still full: a bad group is reported as bad, not as "full" */
    f.comp[0].reward = NAN;
    assert_int_equal(gbuf_push(b, &f.g, 5, &err), COH_EINVAL);
    HAS(err.msg, "reward");
    gbuf_stats st;
    gbuf_get_stats(b, &st);
    assert_int_equal((int)st.refused[GBUF_DROP_FULL], 1);
    assert_int_equal((int)st.refused[GBUF_DROP_REWARD], 1);
    assert_int_equal(st.count, 3);

    gbuf_group *out[1];
    assert_int_equal(gbuf_pop_batch(b, 1, 5, out), 1);
    check_group(out[0], 0, 3, 4, 5);
    gbuf_group_free(out[0]);
    fx_init(&f, 3, 3, 4, 5); /* the retry goes in */
    assert_int_equal(gbuf_push(b, &f.g, 5, &err), COH_OK);
    assert_int_equal(gbuf_count(b), 3);
    gbuf_destroy(b);
}

static void test_fifo_order(void **state)
{
    (void)state;
    coh_err err;
    gbuf_config c = cfg();
    c.capacity = 5;
    gbuf *b;
    assert_int_equal(gbuf_create(&c, &b, &err), COH_OK);
    fx f;
    uint64_t next = 0, expect = 0;
    gbuf_group *out[8];
    /* wrap the ring several times with uneven pushes and pops */
    for (int round = 0; round < 20; round++) {
        int pushes = 1 + round % 4;
        for (int i = 0; i < pushes && gbuf_count(b) < 5; i++, next++) {
            fx_init(&f, next, 2 + (int)(next % 3), 1 + (int)(next % 7), 5);
            assert_int_equal(gbuf_push(b, &f.g, 5, &err), COH_OK);
        }
        int want = round % 3 + 1;
        int have = gbuf_count(b);
        int got = gbuf_pop_batch(b, want, 5, out);
        assert_int_equal(got, want < have ? want : have);
        for (int i = 0; i < got; i++, expect++) {
            check_group(out[i], expect, 2 + (int)(expect % 3), 1 + (int)(expect % 7), 5);
            gbuf_group_free(out[i]);
        }
    }
    int got;
    while ((got = gbuf_pop_batch(b, 8, 5, out)) > 0)
        for (int i = 0; i < got; i++, expect++) {
            check_group(out[i], expect, 2 + (int)(expect % 3), 1 + (int)(expect % 7), 5);
            gbuf_group_free(out[i]);
        }
    assert_int_equal((long)expect, (long)next);
    assert_int_equal(gbuf_pop_batch(b, 3, 5, out), 0);
    assert_int_equal(gbuf_pop_batch(b, 0, 5, NULL), 0);
    assert_int_equal(gbuf_pop_batch(b, -1, 5, out), COH_EINVAL);
    assert_int_equal(gbuf_pop_batch(b, 2, 5, NULL), COH_EINVAL);
    assert_int_equal(gbuf_pop_batch(NULL, 2, 5, out), COH_EINVAL);
    gbuf_destroy(b);
}

static void test_rejected_push_touches_nothing(void **state)
{
    (void)state;
    coh_err err;
    gbuf *b = make();
    fx f;
    fx_init(&f, 10, 4, 5, 6);
    assert_int_equal(gbuf_push(b, &f.g, 6, &err), COH_OK);
    fx_init(&f, 11, 6, 3, 5);
    assert_int_equal(gbuf_push(b, &f.g, 6, &err), COH_OK);

    /* a barrage of refusals of every kind, including bad groups that alias valid data */
    for (int kind = 0; kind < 12; kind++) {
        fx_init(&f, 99, 4, 5, 6);
        uint64_t cur = 6;
        switch (kind) {
        case 0: f.g.n_completions = 0; break;
        case 1: f.g.n_completions = G + 1; break;
        case 2: f.tok[1][0] = V + 5; break;
        case 3: f.comp[2].n_tokens = f.comp[2].n_logp = 12; break;
        case 4: f.comp[0].n_logp = 1; break;
        case 5: f.lp[3][1] = NAN; break;
        case 6: f.lp[3][1] = 1.0f; break;
        case 7: f.comp[1].reward = INFINITY; break;
        case 8: cur = 5; break;  /* version 6 is from the future */
        case 9: cur = 60; break; /* stale */
        case 10: f.g.n_prompt = 0; break;
        case 11: f.prompt[0] = -3; break;
        }
        assert_true(gbuf_push(b, &f.g, cur, &err) < 0);
        assert_int_equal(gbuf_count(b), 2);
    }
    fx_init(&f, 12, 2, 2, 6);
    assert_int_equal(gbuf_push(b, &f.g, 6, &err), COH_OK);
    fx_init(&f, 13, 2, 2, 6);
    assert_int_equal(gbuf_push(b, &f.g, 6, &err), COH_EFULL);
    gbuf_note_drop(b, GBUF_DROP_LEASE);
    gbuf_note_drop(b, GBUF_DROP_N); /* ignored */

    gbuf_stats st;
    gbuf_get_stats(b, &st);
    assert_int_equal((int)st.accepted, 3);
    assert_int_equal((int)st.refused_total, 14);
    assert_int_equal((int)st.refused[GBUF_DROP_SHAPE], 4);
    assert_int_equal((int)st.refused[GBUF_DROP_TOKEN], 2);
    assert_int_equal((int)st.refused[GBUF_DROP_LENGTH], 1);
    assert_int_equal((int)st.refused[GBUF_DROP_LOGPROB], 2);
    assert_int_equal((int)st.refused[GBUF_DROP_REWARD], 1);
    assert_int_equal((int)st.refused[GBUF_DROP_FUTURE], 1);
    assert_int_equal((int)st.refused[GBUF_DROP_STALE], 1);
    assert_int_equal((int)st.refused[GBUF_DROP_FULL], 1);
    assert_int_equal((int)st.refused[GBUF_DROP_LEASE], 1);
    assert_int_equal((int)st.refused[GBUF_DROP_NOMEM], 0);

    gbuf_group *out[3];
    assert_int_equal(gbuf_pop_batch(b, 3, 6, out), 3);
    check_group(out[0], 10, 4, 5, 6);
    check_group(out[1], 11, 6, 3, 5);
    check_group(out[2], 12, 2, 2, 6);
    for (int i = 0; i < 3; i++)
        gbuf_group_free(out[i]);
    gbuf_destroy(b);
}

static void test_staleness_stats(void **state)
{
    (void)state;
    coh_err err;
    gbuf_config c = cfg();
    c.capacity = 8;
    c.max_staleness = 3;
    gbuf *b;
    assert_int_equal(gbuf_create(&c, &b, &err), COH_OK);
    gbuf_stats st;
    gbuf_get_stats(b, &st);
    assert_true(st.staleness_mean == 0.0 && st.consumed_groups == 0);

    fx f;
    fx_init(&f, 0, 3, 4, 10); /* staleness at pop (cur 11): 1 1 1 1 */
    assert_int_equal(gbuf_push(b, &f.g, 10, &err), COH_OK);
    fx_init(&f, 1, 3, 4, 8); /* 3 3 3 3, but completion 0 at version 10: 1 */
    f.comp[0].version = 10;
    assert_int_equal(gbuf_push(b, &f.g, 10, &err), COH_OK);
    fx_init(&f, 2, 3, 4, 11); /* at pop with cur 11: 0 */
    assert_int_equal(gbuf_push(b, &f.g, 11, &err), COH_OK);

    gbuf_group *out[4];
    assert_int_equal(gbuf_pop_batch(b, 2, 11, out), 2);
    gbuf_get_stats(b, &st);
    /* (4 * 1 + 1 + 3 * 3) / 8 = 14 / 8 */
    assert_true(fabs(st.staleness_mean - 14.0 / 8.0) < 1e-12);
    assert_true(fabs(st.last_staleness_mean - 14.0 / 8.0) < 1e-12);
    assert_int_equal((int)st.staleness_max, 3);
    assert_int_equal((int)st.consumed_groups, 2);
    assert_int_equal((int)st.consumed_completions, 8);
    for (int i = 0; i < 2; i++)
        gbuf_group_free(out[i]);

    /* the last group waited through two more updates: 2 each */
    assert_int_equal(gbuf_pop_batch(b, 4, 13, out), 1);
    gbuf_group_free(out[0]);
    gbuf_get_stats(b, &st);
    assert_true(fabs(st.staleness_mean - 22.0 / 12.0) < 1e-12);
    assert_true(fabs(st.last_staleness_mean - 2.0) < 1e-12);
    assert_int_equal((int)st.staleness_max, 3);
    assert_int_equal((int)st.consumed_groups, 3);
    assert_int_equal(st.count, 0);

    /* an empty pop leaves the statistics alone */
    assert_int_equal(gbuf_pop_batch(b, 4, 20, out), 0);
    gbuf_get_stats(b, &st);
    assert_true(fabs(st.last_staleness_mean - 2.0) < 1e-12);
    gbuf_destroy(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_valid_group),
        cmocka_unit_test(test_bad_shapes),
        cmocka_unit_test(test_bad_lengths_and_tokens),
        cmocka_unit_test(test_bad_logprobs_and_rewards),
        cmocka_unit_test(test_versions),
        cmocka_unit_test(test_copy_not_kept),
        cmocka_unit_test(test_full_backpressure),
        cmocka_unit_test(test_fifo_order),
        cmocka_unit_test(test_rejected_push_touches_nothing),
        cmocka_unit_test(test_staleness_stats),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
