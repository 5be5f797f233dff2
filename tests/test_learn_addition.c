/* test_learn_addition.c - a seeded learning run on 2-digit addition (optimised build only):
 * a random policy is warmed up with SFT on 500 demonstrations for 800 steps, then GRPO must
 * raise greedy held-out accuracy by at least 20 percentage points above that SFT checkpoint,
 * seen at two consecutive evaluations (each on 200 held-out prompts), within 700 RL steps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trainer.h"

static void test_grpo_beats_sft_checkpoint(void **state)
{
    (void)state;
    char dir[] = "/tmp/cohort-learn-XXXXXX";
    assert_non_null(mkdtemp(dir));
    trainer_config c = trainer_config_default();
    snprintf(c.out_dir, sizeof c.out_dir, "%s/run", dir);
    c.seed = getenv("COHORT_TEST_SEED") ? strtoull(getenv("COHORT_TEST_SEED"), NULL, 10) : 1;
    /* SFT on a limited set of 500 demonstrations: held-out accuracy levels off where the
     * demonstrations run out of new information; RL then learns from fresh prompts */
    c.sft_demos = getenv("COHORT_TEST_DEMOS") ? atoi(getenv("COHORT_TEST_DEMOS")) : 500;
    c.sft_steps = getenv("COHORT_TEST_SFT") ? atoi(getenv("COHORT_TEST_SFT")) : 800;
    c.sft_until = 0.0f;
    c.rl_steps = 700;
    c.eval_every = 25;
    c.ckpt_every = 0;
    c.quiet = 1;
    trainer *t = NULL;
    coh_err err;
    if (trainer_create(&c, 0, &t, &err))
        fail_msg("%s", err.msg);

    double sft_acc = -1, best = 0;
    long sft_end = -1;
    int above = 0, passed = 0;
    while (trainer_has_next(t) && !passed) {
        trainer_metrics m;
        if (trainer_step(t, &m, &err))
            fail_msg("step %ld: %s", trainer_current_step(t), err.msg);
        if (m.eval_accuracy < 0)
            continue;
        int rl = strcmp(m.phase, "rl") == 0;
        printf("step %4ld [%s] held-out accuracy %5.1f%%%s\n", m.step, m.phase,
               100 * m.eval_accuracy, rl ? "" : " (SFT)");
        fflush(stdout);
        if (!rl) {
            sft_acc = m.eval_accuracy; /* the last SFT evaluation is the checkpoint's */
            sft_end = m.step;
            continue;
        }
        if (m.eval_accuracy > best)
            best = m.eval_accuracy;
        above = m.eval_accuracy >= sft_acc + 0.20 ? above + 1 : 0;
        passed = above >= 2;
    }
    printf("SFT checkpoint at step %ld: %.1f%%; best GRPO accuracy %.1f%% (%s)\n", sft_end,
           100 * sft_acc, 100 * best, passed ? "passed" : "FAILED");
    trainer_destroy(t);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    assert_true(sft_end > 0); /* the SFT checkpoint was evaluated */
    assert_true(passed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_grpo_beats_sft_checkpoint)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
