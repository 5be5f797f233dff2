/* test_trainer.c - the single-process run: exact resume, metrics file, checkpoints. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint.h"
#include "rng.h"
#include "sampler.h"
#include "trainer.h"

static char g_tmp[256];

static int setup(void **state)
{
    (void)state;
    snprintf(g_tmp, sizeof g_tmp, "/tmp/cohort-trainer-XXXXXX");
    return mkdtemp(g_tmp) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    return system(cmd) == 0 ? 0 : -1;
}

/* A small, quick configuration that goes through every phase, with a reference (beta > 0). */
static trainer_config small_config(const char *sub)
{
    trainer_config c = trainer_config_default();
    snprintf(c.out_dir, sizeof c.out_dir, "%s/%s", g_tmp, sub);
    c.model.dim = 16;
    c.model.hidden_dim = 32;
    c.model.n_layers = 1;
    c.model.n_heads = 2;
    c.model.n_kv_heads = 1;
    c.model.max_seq = 24;
    c.task_cfg.digits = 2;
    c.sft_steps = 3;
    c.sft_batch = 8;
    c.raft_steps = 2;
    c.raft_threshold = 0.0f; /* keep everything so the batch is never empty */
    c.rl_steps = 4;
    c.prompts_per_step = 3;
    c.group_size = 4;
    c.loss.beta = 0.05f;
    c.loss.entropy_coef = 0.01f;
    c.eval_every = 3;
    c.sft_until = 0.0f;
    c.eval_size = 10;
    c.ckpt_every = 0;
    c.quiet = 1;
    return c;
}

static void run_steps(trainer *t, long until)
{
    coh_err err;
    while (trainer_has_next(t) && trainer_current_step(t) < until) {
        trainer_metrics m;
        if (trainer_step(t, &m, &err))
            fail_msg("step failed: %s", err.msg);
    }
}

static void test_resume_is_exact(void **state)
{
    (void)state;
    coh_err err;
    /* uninterrupted */
    trainer_config a = small_config("a");
    trainer *ta = NULL;
    assert_int_equal(trainer_create(&a, 0, &ta, &err), COH_OK);
    run_steps(ta, 1000);
    assert_false(trainer_has_next(ta));

    /* stopped at step 6 (inside raft->rl boundary region) and at 7 (inside rl), resumed */
    for (int stop = 5; stop <= 7; stop++) {
        char sub[16];
        snprintf(sub, sizeof sub, "b%d", stop);
        trainer_config b = small_config(sub);
        trainer *tb = NULL;
        assert_int_equal(trainer_create(&b, 0, &tb, &err), COH_OK);
        run_steps(tb, stop);
        assert_int_equal(trainer_checkpoint(tb, &err), COH_OK);
        trainer_destroy(tb);
        tb = NULL;
        if (trainer_create(&b, 1, &tb, &err))
            fail_msg("resume failed: %s", err.msg);
        assert_int_equal(trainer_current_step(tb), stop);
        run_steps(tb, 1000);
        const model *pa = trainer_policy(ta), *pb = trainer_policy(tb);
        assert_int_equal(model_num_params(pa), model_num_params(pb));
        if (memcmp(model_params_const(pa), model_params_const(pb),
                   model_num_params(pa) * sizeof(float)) != 0)
            fail_msg("resumed run (stopped at step %d) differs from the uninterrupted one", stop);
        trainer_destroy(tb);
    }
    trainer_destroy(ta);
}

static void test_metrics_and_checkpoints(void **state)
{
    (void)state;
    coh_err err;
    trainer_config c = small_config("m");
    c.ckpt_every = 4;
    trainer *t = NULL;
    assert_int_equal(trainer_create(&c, 0, &t, &err), COH_OK);
    run_steps(t, 1000);
    trainer_destroy(t);
    char path[512];
    snprintf(path, sizeof path, "%s/m/metrics.jsonl", g_tmp);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[4096];
    int n = 0, evals = 0, rl = 0;
    assert_non_null(fgets(line, sizeof line, f));
    assert_non_null(strstr(line, "\"settings\""));
    assert_non_null(strstr(line, "\"estimator\":\"grpo\""));
    assert_non_null(strstr(line, "\"kl_estimator\":\"k3\""));
    while (fgets(line, sizeof line, f)) {
        n++;
        const char *fields[] = {"\"step\"", "\"version\"", "\"phase\"", "\"reward_mean\"",
                                "\"reward_std\"", "\"kl\"", "\"clip_frac\"", "\"entropy\"",
                                "\"grad_norm\"", "\"lr\"", "\"learner_tokens_per_s\"",
                                "\"sampler_tokens_per_s\"", "\"staleness_mean\"",
                                "\"groups_used\"", "\"groups_dropped\"", "\"time_s\""};
        for (size_t i = 0; i < sizeof fields / sizeof *fields; i++)
            if (!strstr(line, fields[i]))
                fail_msg("metrics line %d lacks %s: %s", n, fields[i], line);
        if (strstr(line, "\"eval_accuracy\""))
            evals++;
        if (strstr(line, "\"phase\":\"rl\""))
            rl++;
    }
    fclose(f);
    assert_int_equal(n, 9);
    assert_int_equal(rl, 4);
    assert_true(evals >= 3);
    /* checkpoints at 4, 8 and the end (9); latest names the last; the folder loads */
    snprintf(path, sizeof path, "%s/m/checkpoints/step-000004/model.safetensors", g_tmp);
    assert_int_equal(access(path, F_OK), 0);
    snprintf(path, sizeof path, "%s/m/checkpoints/latest", g_tmp);
    f = fopen(path, "r");
    assert_non_null(f);
    assert_non_null(fgets(line, sizeof line, f));
    fclose(f);
    assert_string_equal(line, "step-000009\n");
    snprintf(path, sizeof path, "%s/m/checkpoints/step-000009", g_tmp);
    model *m = NULL;
    tokenizer *tok = NULL;
    if (ckpt_load(path, &m, &tok, &err))
        fail_msg("%s", err.msg);
    assert_non_null(tok);
    model_destroy(m);
    tok_destroy(tok);
    snprintf(path, sizeof path, "%s/m/reference/config.json", g_tmp);
    assert_int_equal(access(path, F_OK), 0);
}

/* A non-finite loss or gradient skips the update: the step is reported skipped and every
 * weight is left exactly as it was; training goes on. */
static void test_nonfinite_step_is_skipped(void **state)
{
    (void)state;
    coh_err err;
    trainer_config c = small_config("nan");
    trainer *t = NULL;
    assert_int_equal(trainer_create(&c, 0, &t, &err), COH_OK);
    trainer_metrics m;
    assert_int_equal(trainer_step(t, &m, &err), COH_OK);
    assert_int_equal(m.skipped, 0);
    model *p = trainer_policy(t);
    const model_tensor *norm = model_find_tensor(p, "model.norm.weight");
    assert_non_null(norm);
    float *w = model_params(p);
    w[norm->offset] = (float)NAN; /* poisons every logit */
    size_t n = model_num_params(p);
    float *before = malloc(n * sizeof(float));
    memcpy(before, w, n * sizeof(float));
    assert_int_equal(trainer_step(t, &m, &err), COH_OK);
    assert_int_equal(m.skipped, 1);
    assert_memory_equal(before, model_params(p), n * sizeof(float));
    /* repaired weights train again */
    w[norm->offset] = 1.0f;
    before[norm->offset] = 1.0f;
    assert_int_equal(trainer_step(t, &m, &err), COH_OK);
    assert_int_equal(m.skipped, 0);
    assert_true(memcmp(before, model_params(p), n * sizeof(float)) != 0);
    free(before);
    trainer_destroy(t);
}

/* Groups sampled elsewhere (as an actor does, with the shared sampler) train the policy;
 * for groups of the current version the learner's log-probabilities equal the behaviour
 * ones to float rounding, and staleness counts versions behind. */
static void test_external_groups(void **state)
{
    (void)state;
    coh_err err;
    trainer_config c = small_config("ext");
    c.sft_steps = 0;
    c.raft_steps = 0;
    c.rl_steps = 3;
    c.eval_every = 0;
    trainer *t = NULL;
    assert_int_equal(trainer_create(&c, 0, &t, &err), COH_OK);
    assert_true(trainer_in_rl(t));
    model *p = trainer_policy(t);
    sampler *s = NULL;
    assert_int_equal(sampler_create(p, c.group_size, model_get_config(p)->max_seq, &s, &err),
                     COH_OK);
    sample_params sp = c.sampling;
    sp.temperature = c.loss.temperature;
    int M = sp.max_new_tokens, G = c.group_size, P = c.prompts_per_step;
    int prompts[3][4] = {{1, 20, 14, 30}, {1, 21, 14, 19}, {1, 25, 11, 18}};
    int *tok = calloc((size_t)P * G * M, sizeof(int)), *len = calloc((size_t)P * G, sizeof(int));
    float *lp = calloc((size_t)P * G * M, sizeof(float));
    trainer_completion *comp = calloc((size_t)P * G, sizeof *comp);
    trainer_group groups[3];
    rng r;
    rng_init(&r, 5);
    for (int version = 0; version < 2; version++) {
        /* sampled once, with version 0; the second step reuses them one version late */
        for (int g = 0; g < P && version == 0; g++) {
            assert_int_equal(sampler_generate(s, prompts[g], 4, G, &sp, &r, tok + g * G * M,
                                              lp + g * G * M, NULL, len + g * G, &err),
                             COH_OK);
            for (int i = 0; i < G; i++) {
                trainer_completion *cp = &comp[g * G + i];
                cp->tokens = tok + (g * G + i) * M;
                cp->len = len[g * G + i];
                cp->behaviour_logp = lp + (g * G + i) * M;
                cp->reward = (double)(i % 2);
                cp->version = 0; /* all sampled with version 0 */
            }
            groups[g] = (trainer_group){prompts[g], 4, G, comp + g * G};
        }
        trainer_metrics m;
        if (trainer_step_groups(t, groups, P, &m, &err))
            fail_msg("%s", err.msg);
        assert_int_equal(m.step, version + 1);
        assert_true(m.groups_used == P);
        assert_true(fabs(m.reward_mean - 0.5) < 1e-9);
        if (version == 0) {
            assert_true(m.logp_max_abs_diff < 1e-4); /* parity: float rounding only */
            assert_true(m.staleness_mean == 0.0);
        } else {
            assert_true(m.logp_max_abs_diff > 1e-6); /* the policy moved since */
            assert_true(m.staleness_mean == 1.0);
        }
    }
    /* more sequences than a step takes */
    trainer_group many[4] = {groups[0], groups[1], groups[2], groups[0]};
    trainer_metrics m;
    assert_int_equal(trainer_step_groups(t, many, 4, &m, &err), COH_ERANGE);
    sampler_destroy(s);
    free(tok);
    free(len);
    free(lp);
    free(comp);
    trainer_destroy(t);
    /* outside the RL phase */
    trainer_config c2 = small_config("ext2");
    assert_int_equal(trainer_create(&c2, 0, &t, &err), COH_OK);
    assert_false(trainer_in_rl(t));
    assert_int_equal(trainer_step_groups(t, groups, 1, &m, &err), COH_ESTATE);
    trainer_destroy(t);
}

static void test_resume_without_checkpoint_fails(void **state)
{
    (void)state;
    coh_err err;
    trainer_config c = small_config("none");
    trainer *t = NULL;
    assert_int_not_equal(trainer_create(&c, 1, &t, &err), COH_OK);
    assert_null(t);
    assert_non_null(strstr(err.msg, "no checkpoint"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resume_is_exact),
        cmocka_unit_test(test_metrics_and_checkpoints),
        cmocka_unit_test(test_nonfinite_step_is_skipped),
        cmocka_unit_test(test_external_groups),
        cmocka_unit_test(test_resume_without_checkpoint_fails),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
