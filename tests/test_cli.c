/* test_cli.c - checked number parsing (common/cli.h) and the training option table
 * (learner/trainopt.h): every parser with good, malformed, negative, out-of-range, overflow,
 * trailing-garbage and NaN/inf values; the table's flags and ranges; the settings record
 * round trip; --config files refused by key; flags overriding the file; resume reading the
 * record back; the policy's max_position_embeddings raised or refused for --max-new-tokens. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "loss.h"
#include "model.h"
#include "optim.h"
#include "stops.h"
#include "tasks.h"
#include "trainer.h"
#include "trainopt.h"

static char g_tmp[256];

static int setup(void **state)
{
    (void)state;
    snprintf(g_tmp, sizeof g_tmp, "/tmp/cohort-cli-XXXXXX");
    return mkdtemp(g_tmp) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    return system(cmd) == 0 ? 0 : -1;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

#define assert_contains(hay, needle)                                                       \
    do {                                                                                   \
        if (!strstr((hay), (needle)))                                                      \
            fail_msg("'%s' does not contain '%s'", (hay), (needle));                        \
    } while (0)

/* ---- cli_parse_int / long / u64 ------------------------------------------------------------ */

static void test_int_good(void **state)
{
    (void)state;
    coh_err err;
    int v = 0;
    assert_int_equal(cli_parse_int("--n", "42", 1, 100, &v, &err), COH_OK);
    assert_int_equal(v, 42);
    assert_int_equal(cli_parse_int("--n", "+7", 1, 100, &v, &err), COH_OK);
    assert_int_equal(v, 7);
    assert_int_equal(cli_parse_int("--n", "-3", -5, 5, &v, &err), COH_OK);
    assert_int_equal(v, -3);
    assert_int_equal(cli_parse_int("--n", "1", 1, 100, &v, &err), COH_OK); /* ends inclusive */
    assert_int_equal(cli_parse_int("--n", "100", 1, 100, &v, &err), COH_OK);
    assert_int_equal(v, 100);
    assert_int_equal(cli_parse_int("--n", "007", 1, 100, &v, &err), COH_OK);
    assert_int_equal(v, 7);
    assert_int_equal(cli_parse_int("--n", "2147483647", 0, INT_MAX, &v, &err), COH_OK);
    assert_int_equal(v, INT_MAX);
}

static void test_int_bad(void **state)
{
    (void)state;
    static const char *const malformed[] = {"", "abc", "1.5", "12x", " 5", "5 ", "0x10", "1e3",
                                            "+", "-", "--1", "٣", "5\n"};
    coh_err err;
    for (size_t i = 0; i < sizeof malformed / sizeof malformed[0]; i++) {
        int v = 123;
        assert_int_equal(cli_parse_int("--group-size", malformed[i], 1, 1024, &v, &err),
                         COH_EINVAL);
        assert_int_equal(v, 123); /* untouched */
        assert_contains(err.msg, "--group-size");
        assert_contains(err.msg, "[1, 1024]");
    }
    int v = 123;
    assert_int_equal(cli_parse_int("--group-size", "abc", 1, 1024, &v, &err), COH_EINVAL);
    assert_string_equal(err.msg,
                        "--group-size: 'abc' is not an integer (expected an integer in [1, 1024])");
    assert_int_equal(cli_parse_int("--group-size", "0", 1, 1024, &v, &err), COH_ERANGE);
    assert_string_equal(err.msg,
                        "--group-size: 0 is out of range (expected an integer in [1, 1024])");
    assert_int_equal(cli_parse_int("--group-size", "-1", 1, 1024, &v, &err), COH_ERANGE);
    assert_int_equal(cli_parse_int("--group-size", "1025", 1, 1024, &v, &err), COH_ERANGE);
    /* overflow of int and of long: out of range, never wrapped */
    assert_int_equal(cli_parse_int("--n", "2147483648", 0, INT_MAX, &v, &err), COH_ERANGE);
    assert_int_equal(cli_parse_int("--n", "99999999999999999999999", 0, INT_MAX, &v, &err),
                     COH_ERANGE);
    assert_int_equal(cli_parse_int("--n", "-99999999999999999999999", INT_MIN, 0, &v, &err),
                     COH_ERANGE);
    assert_int_equal(v, 123);
    assert_contains(err.msg, "out of range");
    assert_int_equal(cli_parse_int("--n", NULL, 0, 1, &v, &err), COH_EINVAL);
    assert_contains(err.msg, "no value");
    /* err may be NULL */
    assert_int_equal(cli_parse_int("--n", "x", 0, 1, &v, NULL), COH_EINVAL);
    /* a long value in the message is shortened, not overflowed */
    char big[2000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(cli_parse_int("--n", big, 0, 1, &v, &err), COH_EINVAL);
    assert_contains(err.msg, "...");
    assert_true(strlen(err.msg) < 200);
}

static void test_long_and_u64(void **state)
{
    (void)state;
    coh_err err;
    long l = 0;
    assert_int_equal(cli_parse_long("--from", "-20", -100, 100, &l, &err), COH_OK);
    assert_int_equal(l, -20);
    assert_int_equal(cli_parse_long("--x", "9223372036854775807", 0, LONG_MAX, &l, &err), COH_OK);
    assert_true(l == LONG_MAX);
    assert_int_equal(cli_parse_long("--x", "9223372036854775808", 0, LONG_MAX, &l, &err),
                     COH_ERANGE);
    assert_contains(err.msg, "an integer >= 0");
    assert_int_equal(cli_parse_long("--x", "12abc", 0, 100, &l, &err), COH_EINVAL);
    assert_int_equal(cli_parse_long("--x", "-101", -100, 100, &l, &err), COH_ERANGE);

    uint64_t u = 5;
    assert_int_equal(cli_parse_u64("--seed", "18446744073709551615", 0, UINT64_MAX, &u, &err),
                     COH_OK);
    assert_true(u == UINT64_MAX);
    assert_int_equal(cli_parse_u64("--seed", "0", 0, UINT64_MAX, &u, &err), COH_OK);
    assert_true(u == 0);
    u = 5;
    assert_int_equal(cli_parse_u64("--seed", "18446744073709551616", 0, UINT64_MAX, &u, &err),
                     COH_ERANGE);
    /* strtoull would wrap "-1" to 2^64 - 1 */
    assert_int_equal(cli_parse_u64("--seed", "-1", 0, UINT64_MAX, &u, &err), COH_ERANGE);
    assert_string_equal(err.msg, "--seed: -1 is out of range (expected an integer >= 0)");
    assert_int_equal(cli_parse_u64("--seed", "-x", 0, UINT64_MAX, &u, &err), COH_EINVAL);
    assert_int_equal(cli_parse_u64("--seed", "1.0", 0, UINT64_MAX, &u, &err), COH_EINVAL);
    assert_int_equal(cli_parse_u64("--seed", "", 0, UINT64_MAX, &u, &err), COH_EINVAL);
    assert_int_equal(cli_parse_u64("--n", "11", 1, 10, &u, &err), COH_ERANGE);
    assert_contains(err.msg, "[1, 10]");
    assert_true(u == 5); /* untouched by every refusal */
}

/* ---- cli_parse_double / float -------------------------------------------------------------- */

static void test_double_good(void **state)
{
    (void)state;
    coh_err err;
    double d = 0;
    static const struct {
        const char *s;
        double v;
    } good[] = {{"0.5", 0.5}, {"1e-3", 1e-3}, {".5", 0.5},       {"5.", 5.0},
                {"-2.5e+1", -25}, {"+3", 3},  {"1E2", 100},       {"0", 0},
                {"100", 100},   {"-100", -100}, {"1e-400", 0.0} /* underflow: the value */};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        assert_int_equal(cli_parse_double("--x", good[i].s, -100, 100, 0, 0, &d, &err), COH_OK);
        assert_true(d == good[i].v);
    }
}

static void test_double_bad(void **state)
{
    (void)state;
    coh_err err;
    double d = 7;
    static const char *const malformed[] = {"",    "abc", "1.2.3", "1e",   "e5", "0x1p3",
                                            " 1",  "1 ",  "1,5",   "--1",  ".",  "1e+",
                                            "5x",  "0.5abc"};
    for (size_t i = 0; i < sizeof malformed / sizeof malformed[0]; i++) {
        assert_int_equal(cli_parse_double("--beta", malformed[i], 0, 100, 0, 0, &d, &err),
                         COH_EINVAL);
        assert_contains(err.msg, "--beta");
    }
    assert_int_equal(cli_parse_double("--beta", "abc", 0, 100, 0, 0, &d, &err), COH_EINVAL);
    assert_string_equal(err.msg,
                        "--beta: 'abc' is not a number (expected a real number in [0, 100])");
    static const char *const nonfinite[] = {"nan", "NaN", "inf", "-inf", "infinity", "+INF"};
    for (size_t i = 0; i < sizeof nonfinite / sizeof nonfinite[0]; i++) {
        assert_int_equal(cli_parse_double("--beta", nonfinite[i], -1e300, 1e300, 0, 0, &d, &err),
                         COH_EINVAL);
        assert_contains(err.msg, "not a finite number");
    }
    assert_int_equal(cli_parse_double("--lr", "-1", 0, 1, 1, 0, &d, &err), COH_ERANGE);
    assert_string_equal(err.msg, "--lr: -1 is out of range (expected a real number in (0, 1])");
    /* open and closed ends */
    assert_int_equal(cli_parse_double("--lr", "0", 0, 1, 1, 0, &d, &err), COH_ERANGE);
    assert_int_equal(cli_parse_double("--lr", "1", 0, 1, 1, 0, &d, &err), COH_OK);
    assert_int_equal(cli_parse_double("--b", "1", 0, 1, 0, 1, &d, &err), COH_ERANGE);
    assert_contains(err.msg, "[0, 1)");
    assert_int_equal(cli_parse_double("--b", "0", 0, 1, 0, 1, &d, &err), COH_OK);
    assert_int_equal(cli_parse_double("--lr", "1.0000001", 0, 1, 1, 0, &d, &err), COH_ERANGE);
    /* overflow of a double */
    d = 7;
    assert_int_equal(cli_parse_double("--x", "1e999", -1e300, 1e300, 0, 0, &d, &err),
                     COH_ERANGE);
    assert_int_equal(cli_parse_double("--x", "-1e999", -1e300, 1e300, 0, 0, &d, &err),
                     COH_ERANGE);
    assert_true(d == 7);
}

static void test_float(void **state)
{
    (void)state;
    coh_err err;
    float f = 9;
    assert_int_equal(cli_parse_float("--rl-lr", "0.0005", 0, 1, 1, 0, &f, &err), COH_OK);
    assert_true(f == 0.0005f);
    /* in range as a double, but 0.0f once stored: (0, 1] would not hold */
    assert_int_equal(cli_parse_float("--top-p", "1e-50", 0, 1, 1, 0, &f, &err), COH_ERANGE);
    assert_contains(err.msg, "--top-p");
    /* beyond FLT_MAX */
    assert_int_equal(cli_parse_float("--x", "1e39", 0, 1e300, 0, 0, &f, &err), COH_ERANGE);
    assert_int_equal(cli_parse_float("--x", "nan", 0, 1, 0, 0, &f, &err), COH_EINVAL);
    assert_int_equal(cli_parse_float("--x", "0.5x", 0, 1, 0, 0, &f, &err), COH_EINVAL);
    assert_true(f == 0.0005f);
}

static void test_choice(void **state)
{
    (void)state;
    static const char *const names[] = {"grpo", "drgrpo", "rloo", NULL};
    coh_err err;
    int i = -1;
    assert_int_equal(cli_parse_choice("--estimator", "rloo", names, &i, &err), COH_OK);
    assert_int_equal(i, 2);
    assert_int_equal(cli_parse_choice("--estimator", "grpo", names, &i, &err), COH_OK);
    assert_int_equal(i, 0);
    i = -1;
    assert_int_equal(cli_parse_choice("--estimator", "GRPO", names, &i, &err), COH_EINVAL);
    assert_string_equal(err.msg, "--estimator: 'GRPO' is not one of grpo, drgrpo, rloo");
    assert_int_equal(cli_parse_choice("--estimator", "grpo ", names, &i, &err), COH_EINVAL);
    assert_int_equal(cli_parse_choice("--estimator", "", names, &i, &err), COH_EINVAL);
    assert_contains(err.msg, "no value");
    assert_int_equal(cli_parse_choice("--estimator", NULL, names, &i, &err), COH_EINVAL);
    assert_int_equal(i, -1);
}

/* ---- the option table ----------------------------------------------------------------------- */

/* cohort-train's options before the table existed: all must still be there */
static const char *const TRAIN_FLAGS[] = {
    "out", "task", "digits", "init", "model-config", "seed", "sft-steps", "sft-batch",
    "sft-lr", "sft-warmup", "sft-until", "sft-demos", "raft-steps", "raft-threshold",
    "rl-steps", "prompts", "group-size", "rl-lr", "rl-warmup", "estimator", "aggregation",
    "eps-low", "eps-high", "beta", "entropy-coef", "temperature", "max-new-tokens",
    "drop-zero-signal", "format-weight", "weight-decay", "grad-clip", "schedule",
    "eval-every", "eval-size", "ckpt-every", "log-every", "quiet", "top-k", "top-p",
    "adam-beta1", "adam-beta2", "adam-eps", "config", "stop"};

static void test_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof TRAIN_FLAGS / sizeof TRAIN_FLAGS[0]; i++) {
        int k = topt_find(TRAIN_FLAGS[i]);
        if (k < 0)
            fail_msg("--%s is not in the option table", TRAIN_FLAGS[i]);
        assert_string_equal(topt_name(k), TRAIN_FLAGS[i]);
        assert_int_equal(topt_binaries(k), TOPT_TRAIN | TOPT_LEARNER);
    }
    int pf = topt_find("prompts-file");
    assert_true(pf >= 0);
    assert_int_equal(topt_binaries(pf), TOPT_LEARNER);
    /* spellings */
    assert_int_equal(topt_find("rl_lr"), topt_find("rl-lr"));
    assert_int_equal(topt_find("--rl-lr"), topt_find("rl-lr"));
    assert_int_equal(topt_find("prompts_per_step"), topt_find("prompts"));
    assert_int_equal(topt_find("lr_schedule"), topt_find("schedule"));
    assert_int_equal(topt_find("rl-lrr"), -1);
    assert_int_equal(topt_find("threads"), -1); /* each binary's own */
    assert_null(topt_name(-1));
    assert_null(topt_name(topt_count()));

    /* getopt entries: the binary's options only, val = base + index */
    struct option opts[128];
    int n = topt_long_options(TOPT_TRAIN, opts, 128, 1000);
    assert_int_equal(n, topt_count() - 2); /* all but --prompts-file, --chat-template */
    for (int i = 0; i < n; i++) {
        int k = opts[i].val - 1000;
        assert_string_equal(opts[i].name, topt_name(k));
        assert_int_equal(opts[i].has_arg,
                         topt_kind_of(k) == TOPT_FLAG ? no_argument : required_argument);
        assert_null(opts[i].flag);
        assert_true(strcmp(opts[i].name, "prompts-file") != 0);
    }
    assert_int_equal(topt_long_options(TOPT_LEARNER, opts, 128, 0), topt_count());
    assert_int_equal(topt_long_options(TOPT_LEARNER, opts, 5, 0), 5);

    double lo, hi;
    int lo_open, hi_open;
    int k = topt_find("rl-lr");
    assert_int_equal(topt_range(k, &lo, &hi, &lo_open, &hi_open), COH_OK);
    assert_true(lo == 0 && hi == 1 && lo_open && !hi_open);
    assert_int_equal(topt_range(topt_find("task"), &lo, &hi, &lo_open, &hi_open), COH_EINVAL);
    assert_string_equal(topt_choices(topt_find("estimator"))[4], "reinforce_pp");
    assert_null(topt_choices(topt_find("beta")));
    assert_int_equal(topt_kind_of(topt_find("stop")), TOPT_STRLIST);
    assert_int_equal(topt_range(topt_find("stop"), &lo, &hi, &lo_open, &hi_open), COH_EINVAL);
}

/* Every numeric option refuses a non-number, a value below its range and one above it,
 * naming itself, and leaves the config untouched; the ends of closed ranges are accepted. */
static void test_apply_refuses_every_bad_value(void **state)
{
    (void)state;
    int numeric = 0;
    for (int k = 0; k < topt_count(); k++) {
        double lo, hi;
        int lo_open, hi_open;
        if (topt_range(k, &lo, &hi, &lo_open, &hi_open))
            continue;
        numeric++;
        trainer_config c = trainer_config_default(), before = c;
        char flag[64], below[64], above[64];
        snprintf(flag, sizeof flag, "--%s", topt_name(k));
        coh_err err;
        const char *bad[] = {"abc", "1x", "", "nan"};
        for (size_t b = 0; b < 4; b++) {
            assert_int_equal(topt_apply(&c, k, bad[b], &err), COH_EINVAL);
            assert_contains(err.msg, flag);
        }
        if (topt_kind_of(k) == TOPT_U64)
            snprintf(below, sizeof below, "-1");
        else
            snprintf(below, sizeof below, "%.17g", lo_open ? lo : lo - 1);
        assert_int_equal(topt_apply(&c, k, below, &err), COH_ERANGE);
        assert_contains(err.msg, flag);
        if (topt_kind_of(k) == TOPT_U64)
            snprintf(above, sizeof above, "18446744073709551616");
        else if (topt_kind_of(k) == TOPT_FLOAT)
            snprintf(above, sizeof above, "%.17g", hi_open ? hi : hi * 2 + 1);
        else
            snprintf(above, sizeof above, "%.0f", hi + 1);
        assert_int_equal(topt_apply(&c, k, above, &err), COH_ERANGE);
        assert_contains(err.msg, flag);
        assert_contains(err.msg, "out of range");
        assert_memory_equal(&c, &before, sizeof c);
        if (topt_kind_of(k) != TOPT_U64) {
            char end[64];
            if (!lo_open) {
                snprintf(end, sizeof end, topt_kind_of(k) == TOPT_FLOAT ? "%.17g" : "%.0f", lo);
                assert_int_equal(topt_apply(&c, k, end, &err), COH_OK);
            }
            if (!hi_open) {
                snprintf(end, sizeof end, topt_kind_of(k) == TOPT_FLOAT ? "%.17g" : "%.0f", hi);
                assert_int_equal(topt_apply(&c, k, end, &err), COH_OK);
            }
        }
    }
    assert_true(numeric >= 35);
}

static void test_apply_sets_fields(void **state)
{
    (void)state;
    trainer_config c = trainer_config_default();
    coh_err err;
    assert_int_equal(topt_apply_name(&c, TOPT_TRAIN, "rl-lr", "0.001", &err), COH_OK);
    assert_true(c.rl_lr == 0.001f);
    assert_int_equal(topt_apply_name(&c, TOPT_TRAIN, "group_size", "8", &err), COH_OK);
    assert_int_equal(c.group_size, 8);
    assert_int_equal(topt_apply_name(&c, TOPT_TRAIN, "estimator", "rloo", &err), COH_OK);
    assert_int_equal(c.loss.estimator, EST_RLOO);
    assert_int_equal(topt_apply_name(&c, TOPT_TRAIN, "aggregation", "constant", &err), COH_OK);
    assert_int_equal(c.loss.aggregation, AGG_CONSTANT);
    assert_int_equal(topt_apply_name(&c, TOPT_TRAIN, "schedule", "cosine", &err), COH_OK);
    assert_int_equal(c.optim.schedule, SCHED_COSINE);
    assert_int_equal(topt_apply_name(&c, TOPT_TRAIN, "drop-zero-signal", NULL, &err), COH_OK);
    assert_int_equal(c.loss.drop_zero_signal, 1);
    assert_int_equal(topt_apply_name(&c, TOPT_TRAIN, "task", "countdown", &err), COH_OK);
    assert_string_equal(c.task, "countdown");
    assert_int_equal(topt_apply_name(&c, TOPT_TRAIN, "seed", "12345678901234567890", &err),
                     COH_OK);
    assert_true(c.seed == 12345678901234567890ull);
    assert_int_equal(topt_apply_name(&c, TOPT_TRAIN, "max-new-tokens", "64", &err), COH_OK);
    assert_int_equal(c.sampling.max_new_tokens, 64);
    assert_int_equal(topt_apply_name(&c, TOPT_TRAIN, "beta", "0.25", &err), COH_OK);
    assert_true(c.loss.beta == 0.25f);
    assert_int_equal(topt_apply_name(&c, TOPT_TRAIN, "out", "runs/x", &err), COH_OK);
    assert_string_equal(c.out_dir, "runs/x");
    /* refusals */
    assert_int_equal(topt_apply_name(&c, TOPT_TRAIN, "task", "file", &err), COH_EINVAL);
    assert_contains(err.msg, "--task");
    assert_int_equal(topt_apply_name(&c, TOPT_TRAIN, "out", "", &err), COH_EINVAL);
    assert_contains(err.msg, "--out");
    char longpath[700];
    memset(longpath, 'a', sizeof longpath - 1);
    longpath[sizeof longpath - 1] = '\0';
    assert_int_equal(topt_apply_name(&c, TOPT_TRAIN, "out", longpath, &err), COH_ERANGE);
    assert_contains(err.msg, "too long");
    assert_int_equal(topt_apply_name(&c, TOPT_TRAIN, "prompts-file", "p.jsonl", &err),
                     COH_EINVAL);
    assert_contains(err.msg, "cohort-learner");
    assert_int_equal(topt_apply_name(&c, TOPT_LEARNER, "prompts-file", "p.jsonl", &err), COH_OK);
    assert_string_equal(c.prompts_file, "p.jsonl");
    assert_int_equal(topt_apply_name(&c, TOPT_TRAIN, "no-such", "1", &err), COH_EINVAL);
    assert_contains(err.msg, "no-such");
    assert_int_equal(topt_apply_name(&c, TOPT_TRAIN, "model-config", "/nonexistent.json", &err),
                     COH_ENOTFOUND);
    assert_contains(err.msg, "--model-config");
}

/* ---- JSON ---------------------------------------------------------------------------------- */

static char *json_text(const trainer_config *c)
{
    cJSON *o = topt_to_json(c);
    assert_non_null(o);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    assert_non_null(s);
    return s;
}

static void save_model_config(const char *path, int dim, int max_seq)
{
    model_config m = model_config_default(98);
    m.dim = dim;
    m.hidden_dim = 2 * dim;
    m.n_layers = 1;
    m.n_heads = 2;
    m.n_kv_heads = 1;
    m.max_seq = max_seq;
    coh_err err;
    assert_int_equal(model_config_save(path, &m, &err), COH_OK);
}

/* A value unlike the default for every option, set through the table. */
static trainer_config everything_changed(void)
{
    trainer_config c = trainer_config_default();
    coh_err err;
    char path[320];
    snprintf(path, sizeof path, "%s/mc.json", g_tmp);
    save_model_config(path, 16, 77);
    for (int k = 0; k < topt_count(); k++) {
        char v[600];
        double lo, hi;
        int lo_open, hi_open;
        switch (topt_kind_of(k)) {
        case TOPT_INT:
        case TOPT_LONG:
            topt_range(k, &lo, &hi, &lo_open, &hi_open);
            snprintf(v, sizeof v, "%.0f", floor((lo + hi) / 3) + 1);
            break;
        case TOPT_FLOAT:
            topt_range(k, &lo, &hi, &lo_open, &hi_open);
            snprintf(v, sizeof v, "%.9g", lo + (hi - lo) * 0.3125);
            break;
        case TOPT_U64: snprintf(v, sizeof v, "18446744073709551557"); break;
        case TOPT_CHOICE: {
            const char *const *names = topt_choices(k);
            int n = 0;
            while (names[n])
                n++;
            snprintf(v, sizeof v, "%s", names[n - 1]); /* defaults are the first names */
            break;
        }
        case TOPT_STRING:
        case TOPT_PATH:
        case TOPT_STRLIST: snprintf(v, sizeof v, "some/%s", topt_name(k)); break;
        case TOPT_MODEL: snprintf(v, sizeof v, "%s", path); break;
        case TOPT_FLAG: v[0] = '\0'; break;
        case TOPT_CONFIG: continue;
        }
        if (topt_apply(&c, k, v, &err))
            fail_msg("--%s %s: %s", topt_name(k), v, err.msg);
    }
    return c;
}

static void test_record_round_trip(void **state)
{
    (void)state;
    coh_err err;
    trainer_config c = everything_changed();
    assert_int_equal(c.model.max_seq, 77);
    assert_int_equal(c.model_from_config, 1);
    assert_int_equal(c.loss.estimator, EST_REINFORCE_PP);
    assert_string_equal(c.prompts_file, "some/prompts-file");

    /* every option reaches the record, with a value unlike the default's */
    trainer_config d = trainer_config_default();
    cJSON *rc_ = topt_to_json(&c), *rd = topt_to_json(&d);
    for (int k = 0; k < topt_count(); k++) {
        if (topt_kind_of(k) == TOPT_CONFIG)
            continue;
        const char *name = topt_name(k);
        const cJSON *a = NULL, *b = NULL, *it;
        cJSON_ArrayForEach(it, rc_) if (topt_find(it->string) == k) a = it;
        cJSON_ArrayForEach(it, rd) if (topt_find(it->string) == k) b = it;
        if (!a)
            fail_msg("--%s is missing from the settings record", name);
        if (strcmp(name, "task") == 0) /* a prompt-file run: "task": "file" + builtin_task */
            continue;
        if (b && cJSON_Compare(a, b, 1))
            fail_msg("--%s: the record shows the default, not the value set", name);
    }
    assert_string_equal(cJSON_GetObjectItem(rc_, "task")->valuestring, "file");
    assert_string_equal(cJSON_GetObjectItem(rc_, "builtin_task")->valuestring, "sort");
    assert_string_equal(cJSON_GetObjectItem(rc_, "kl_estimator")->valuestring, "k3");
    assert_string_equal(cJSON_GetObjectItem(rc_, "kl_placement")->valuestring, "reward");
    /* stop strings: always a list, [] by default */
    const cJSON *stop = cJSON_GetObjectItem(rc_, "stop");
    assert_true(cJSON_IsArray(stop) && cJSON_GetArraySize(stop) == 1);
    assert_string_equal(cJSON_GetArrayItem(stop, 0)->valuestring, "some/stop");
    stop = cJSON_GetObjectItem(rd, "stop");
    assert_true(cJSON_IsArray(stop) && cJSON_GetArraySize(stop) == 0);
    assert_string_equal(cJSON_GetObjectItem(rd, "kl_placement")->valuestring, "loss");
    /* a seed above 2^53 is written as digits; floats as their shortest decimal */
    assert_string_equal(cJSON_GetObjectItem(rc_, "seed")->valuestring, "18446744073709551557");
    assert_true(cJSON_GetObjectItem(rd, "rl_lr")->valuedouble == 0.0005);
    /* the default (cohort-train) record holds no cohort-learner key */
    assert_null(cJSON_GetObjectItem(rd, "prompts_file"));
    assert_true(cJSON_IsObject(cJSON_GetObjectItem(rd, "model_config")));

    /* to_json -> from_json -> to_json is the identity */
    trainer_config back = trainer_config_default();
    assert_int_equal(topt_from_json(&back, TOPT_ALL, rc_, &err), COH_OK);
    char *s1 = json_text(&c), *s2 = json_text(&back);
    assert_string_equal(s1, s2);
    assert_true(back.seed == c.seed);
    assert_true(back.rl_lr == c.rl_lr);
    assert_string_equal(back.task, "sort");
    free(s1);
    free(s2);
    /* and for the defaults (through printed text, as in a file) */
    char *t1 = json_text(&d);
    cJSON *parsed = cJSON_Parse(t1);
    trainer_config back2 = everything_changed();
    back2.prompts_file[0] = '\0'; /* a cohort-train record has no prompts_file or */
    back2.chat_template[0] = '\0'; /* chat_template to reset them */
    assert_int_equal(topt_from_json(&back2, TOPT_TRAIN, parsed, &err), COH_OK);
    char *t2 = json_text(&back2);
    assert_string_equal(t1, t2);
    free(t1);
    free(t2);
    cJSON_Delete(parsed);
    cJSON_Delete(rc_);
    cJSON_Delete(rd);
}

/* from_json with one bad key: refused, naming the key; c untouched */
static void expect_json_refused(unsigned mask, const char *json, int code, const char *needle)
{
    trainer_config c = trainer_config_default(), before;
    c.rl_lr = 0.125f;
    before = c;
    cJSON *o = cJSON_Parse(json);
    if (!o)
        fail_msg("test JSON does not parse: %s", json);
    coh_err err;
    int rc = topt_from_json(&c, mask, o, &err);
    cJSON_Delete(o);
    if (rc != code)
        fail_msg("%s: got %d (%s), expected %d", json, rc, rc ? err.msg : "accepted", code);
    assert_contains(err.msg, needle);
    assert_memory_equal(&c, &before, sizeof c);
}

static void test_from_json_refusals(void **state)
{
    (void)state;
    expect_json_refused(TOPT_TRAIN, "{\"rl_lrr\": 0.1}", COH_EINVAL, "\"rl_lrr\"");
    expect_json_refused(TOPT_TRAIN, "{\"beta\": 0.1, \"group_size\": \"8\"}", COH_EINVAL,
                        "\"group_size\": expected a number, got a string");
    expect_json_refused(TOPT_TRAIN, "{\"beta\": 0.1, \"group-size\": 0}", COH_ERANGE,
                        "\"group-size\": 0 is out of range (expected an integer in [1, 1024])");
    expect_json_refused(TOPT_TRAIN, "{\"group_size\": 2.5}", COH_EINVAL, "\"group_size\"");
    expect_json_refused(TOPT_TRAIN, "{\"group_size\": 1e20}", COH_ERANGE, "\"group_size\"");
    expect_json_refused(TOPT_TRAIN, "{\"rl_lr\": -1}", COH_ERANGE, "\"rl_lr\": -1 is out of range");
    expect_json_refused(TOPT_TRAIN, "{\"rl_lr\": null}", COH_EINVAL, "\"rl_lr\"");
    expect_json_refused(TOPT_TRAIN, "{\"estimator\": \"ppo\"}", COH_EINVAL, "\"estimator\"");
    expect_json_refused(TOPT_TRAIN, "{\"drop_zero_signal\": 1}", COH_EINVAL,
                        "expected true or false");
    expect_json_refused(TOPT_TRAIN, "{\"seed\": -5}", COH_ERANGE, "\"seed\"");
    expect_json_refused(TOPT_TRAIN, "{\"seed\": \"12a\"}", COH_EINVAL, "\"seed\"");
    expect_json_refused(TOPT_TRAIN, "{\"rl-lr\": 0.1, \"rl_lr\": 0.2}", COH_EINVAL, "twice");
    expect_json_refused(TOPT_TRAIN, "{\"prompts\": 4, \"prompts_per_step\": 4}", COH_EINVAL,
                        "twice");
    expect_json_refused(TOPT_TRAIN, "{\"prompts_file\": \"p.jsonl\"}", COH_EINVAL,
                        "cohort-learner");
    expect_json_refused(TOPT_TRAIN, "{\"config\": \"other.json\"}", COH_EINVAL, "\"config\"");
    expect_json_refused(TOPT_TRAIN, "{\"--beta\": 0.1}", COH_EINVAL, "\"--beta\"");
    expect_json_refused(TOPT_TRAIN, "{\"kl_estimator\": \"k2\"}", COH_EINVAL, "k3");
    expect_json_refused(TOPT_TRAIN, "{\"estimator\": \"grpo\", \"kl_placement\": \"reward\"}",
                        COH_EINVAL, "\"kl_placement\"");
    expect_json_refused(TOPT_LEARNER, "{\"task\": \"file\"}", COH_EINVAL, "prompts_file");
    expect_json_refused(TOPT_TRAIN, "{\"task\": \"file\", \"prompts_file\": \"p\"}", COH_EINVAL,
                        "cohort-learner");
    expect_json_refused(TOPT_TRAIN, "{\"builtin_task\": \"addition\"}", COH_EINVAL,
                        "builtin_task");
    expect_json_refused(TOPT_TRAIN, "{\"model_config\": {\"hidden_size\": -4}}", COH_EFORMAT,
                        "\"model_config\"");
    expect_json_refused(TOPT_TRAIN, "{\"model_config\": 5}", COH_EINVAL, "\"model_config\"");
    expect_json_refused(TOPT_TRAIN, "{\"temperature\": 0}", COH_ERANGE, "\"temperature\"");

    /* accepted: both spellings, an inline model config, a learner prompt-file record */
    trainer_config c = trainer_config_default();
    coh_err err;
    cJSON *o = cJSON_Parse("{\"rl-lr\": 0.002, \"group_size\": 4, \"estimator\": \"drgrpo\","
                           "\"kl_placement\": \"loss\", \"kl_estimator\": \"k3\","
                           "\"drop-zero-signal\": true, \"seed\": \"42\","
                           "\"model_config\": {\"vocab_size\": 98, \"hidden_size\": 32,"
                           "\"intermediate_size\": 64, \"num_hidden_layers\": 1,"
                           "\"num_attention_heads\": 2, \"max_position_embeddings\": 48}}");
    assert_int_equal(topt_from_json(&c, TOPT_TRAIN, o, &err), COH_OK);
    cJSON_Delete(o);
    assert_true(c.rl_lr == 0.002f);
    assert_int_equal(c.group_size, 4);
    assert_int_equal(c.loss.estimator, EST_DRGRPO);
    assert_int_equal(c.loss.drop_zero_signal, 1);
    assert_true(c.seed == 42);
    assert_int_equal(c.model.dim, 32);
    assert_int_equal(c.model.max_seq, 48);
    assert_int_equal(c.model_from_config, 1);
    o = cJSON_Parse("{\"task\": \"file\", \"builtin_task\": \"reverse\","
                    "\"prompts_file\": \"data/p.jsonl\"}");
    assert_int_equal(topt_from_json(&c, TOPT_LEARNER, o, &err), COH_OK);
    cJSON_Delete(o);
    assert_string_equal(c.task, "reverse");
    assert_string_equal(c.prompts_file, "data/p.jsonl");
    /* a record of a cohort-train run before this table (old key names) still reads */
    o = cJSON_Parse("{\"task\":\"addition\",\"estimator\":\"grpo\",\"kl_estimator\":\"k3\","
                    "\"kl_placement\":\"loss\",\"aggregation\":\"token_mean\",\"eps_low\":0.2,"
                    "\"eps_high\":0.2,\"beta\":0,\"entropy_coef\":0,\"temperature\":1,"
                    "\"max_new_tokens\":8,\"drop_zero_signal\":false,\"sft_steps\":800,"
                    "\"sft_batch\":64,\"sft_lr\":0.003000000026077032,\"sft_until\":0,"
                    "\"sft_demos\":500,\"raft_steps\":0,\"raft_threshold\":1,\"rl_steps\":700,"
                    "\"rl_lr\":0.00050000002374872565,\"prompts_per_step\":32,"
                    "\"group_size\":16,\"weight_decay\":0,\"grad_clip\":1,\"adam_beta1\":0.9,"
                    "\"adam_beta2\":0.99,\"lr_schedule\":\"cosine\",\"seed\":1}");
    c = trainer_config_default();
    assert_int_equal(topt_from_json(&c, TOPT_TRAIN, o, &err), COH_OK);
    cJSON_Delete(o);
    assert_true(c.rl_lr == 5e-4f);
    assert_int_equal(c.optim.schedule, SCHED_COSINE);
}

static void test_load_file(void **state)
{
    (void)state;
    char path[320];
    coh_err err;
    trainer_config c = trainer_config_default();
    snprintf(path, sizeof path, "%s/syntax.json", g_tmp);
    write_file(path, "{\n  \"beta\": 0.1,\n  \"rl_lr\": ,\n}\n");
    assert_int_equal(topt_load_file(&c, TOPT_TRAIN, path, &err), COH_EFORMAT);
    assert_contains(err.msg, "--config");
    assert_contains(err.msg, "line 3");
    snprintf(path, sizeof path, "%s/array.json", g_tmp);
    write_file(path, "[1, 2]");
    assert_int_equal(topt_load_file(&c, TOPT_TRAIN, path, &err), COH_EFORMAT);
    assert_contains(err.msg, "one JSON object");
    snprintf(path, sizeof path, "%s/unknown.json", g_tmp);
    write_file(path, "{\"beta\": 0.1, \"betta\": 0.2}");
    assert_int_equal(topt_load_file(&c, TOPT_TRAIN, path, &err), COH_EINVAL);
    assert_contains(err.msg, path);
    assert_contains(err.msg, "\"betta\"");
    assert_true(c.loss.beta == 0.0f); /* all or nothing */
    snprintf(path, sizeof path, "%s/range.json", g_tmp);
    write_file(path, "{\"eps_high\": 11}");
    assert_int_equal(topt_load_file(&c, TOPT_TRAIN, path, &err), COH_ERANGE);
    assert_contains(err.msg, "\"eps_high\": 11 is out of range");
    snprintf(path, sizeof path, "%s/type.json", g_tmp);
    write_file(path, "{\"task\": 3}");
    assert_int_equal(topt_load_file(&c, TOPT_TRAIN, path, &err), COH_EINVAL);
    assert_contains(err.msg, "\"task\": expected a string, got a number");
    snprintf(path, sizeof path, "%s/missing.json", g_tmp);
    assert_int_equal(topt_load_file(&c, TOPT_TRAIN, path, &err), COH_ENOTFOUND);
    assert_contains(err.msg, "missing.json");
    /* a model config by path */
    char mc[320];
    snprintf(mc, sizeof mc, "%s/model.json", g_tmp);
    save_model_config(mc, 24, 40);
    snprintf(path, sizeof path, "%s/good.json", g_tmp);
    char text[800];
    snprintf(text, sizeof text, "{\"model-config\": \"%s\", \"beta\": 0.5}", mc);
    write_file(path, text);
    assert_int_equal(topt_load_file(&c, TOPT_TRAIN, path, &err), COH_OK);
    assert_int_equal(c.model.dim, 24);
    assert_int_equal(c.model.max_seq, 40);
    assert_true(c.loss.beta == 0.5f);
}

/* ---- the argv pass -------------------------------------------------------------------------- */

typedef struct own_ctx {
    int resume, threads, calls;
} own_ctx;

static int own_option(void *ctx, int val, const char *arg, coh_err *err)
{
    own_ctx *o = ctx;
    o->calls++;
    if (val == 'r') {
        o->resume = 1;
        return COH_OK;
    }
    if (val == 't')
        return cli_parse_int("--threads", arg, 1, 64, &o->threads, err);
    return coh_fail(err, COH_EINVAL, "unexpected value %d", val);
}

static const struct option OWN[] = {{"resume", no_argument, NULL, 'r'},
                                    {"threads", required_argument, NULL, 't'},
                                    {NULL, 0, NULL, 0}};

static int parse(trainer_config *c, unsigned mask, own_ctx *o, int *next, coh_err *err,
                 int argc, ...)
{
    char *argv[40];
    va_list ap;
    va_start(ap, argc);
    for (int i = 0; i < argc; i++)
        argv[i] = va_arg(ap, char *);
    va_end(ap);
    argv[argc] = NULL;
    return topt_parse_args(c, mask, argc, argv, NULL, OWN, own_option, o, next, err);
}

static void test_parse_args(void **state)
{
    (void)state;
    char file[320];
    snprintf(file, sizeof file, "%s/run.json", g_tmp);
    write_file(file, "{\"rl_lr\": 0.1, \"group_size\": 2, \"beta\": 0.5, \"task\": \"sort\"}");
    trainer_config c = trainer_config_default();
    own_ctx o = {0, 1, 0};
    coh_err err;
    int next = -1;
    /* the flag before --config still overrides the file; the file beats the defaults */
    assert_int_equal(parse(&c, TOPT_TRAIN, &o, &next, &err, 9, "prog", "--rl-lr", "0.002",
                           "--config", file, "--group-size=4", "--resume", "pos", "--threads=3"),
                     COH_OK);
    assert_true(c.rl_lr == 0.002f);
    assert_int_equal(c.group_size, 4);
    assert_true(c.loss.beta == 0.5f);
    assert_string_equal(c.task, "sort");
    assert_int_equal(o.resume, 1);
    assert_int_equal(o.threads, 3);
    assert_int_equal(o.calls, 2);
    assert_int_equal(next, 8);
    /* later flags win over earlier ones */
    c = trainer_config_default();
    assert_int_equal(parse(&c, TOPT_TRAIN, &o, &next, &err, 5, "prog", "--beta", "0.1",
                           "--beta", "0.2"),
                     COH_OK);
    assert_true(c.loss.beta == 0.2f);
    assert_int_equal(next, 5);

    /* refusals name the option */
    const struct {
        const char *args[4];
        const char *needle;
    } bad[] = {
        {{"--beta", "abc"}, "--beta: 'abc' is not a number"},
        {{"--rl-lr", "-1"}, "--rl-lr: -1 is out of range"},
        {{"--group-size", "0"}, "--group-size: 0 is out of range"},
        {{"--threads", "99999"}, "--threads: 99999 is out of range"},
        {{"--bogus"}, "unknown option '--bogus'"},
        {{"--beta"}, "option '--beta' needs a value"},
        {{"--quiet=1"}, "'--quiet' takes no value"},
        {{"--prompts-file", "p"}, "unknown option '--prompts-file'"},
        {{"--config", file, "--config", file}, "--config is given twice"},
        {{"--config", "/nonexistent/x.json"}, "--config /nonexistent/x.json"},
        {{"--estimator", "ppo"}, "--estimator: 'ppo' is not one of"},
        {{"--rl", "5"}, "option '--rl' is ambiguous: --rl-steps, --rl-lr, --rl-warmup"},
        {{"--resume=yes"}, "'--resume' takes no value"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *argv[6] = {"prog"};
        int argc = 1;
        while (argc - 1 < 4 && bad[i].args[argc - 1])
            argv[argc] = (char *)bad[i].args[argc - 1], argc++;
        argv[argc] = NULL;
        c = trainer_config_default();
        o = (own_ctx){0, 1, 0};
        int rc = topt_parse_args(&c, TOPT_TRAIN, argc, argv, NULL, OWN, own_option, &o, &next,
                                 &err);
        if (rc == COH_OK)
            fail_msg("case %zu (%s) was accepted", i, bad[i].args[0]);
        assert_contains(err.msg, bad[i].needle);
    }
    /* a bad value in the file: nothing else of the command line ran */
    char badfile[320];
    snprintf(badfile, sizeof badfile, "%s/bad.json", g_tmp);
    write_file(badfile, "{\"group_size\": 0}");
    o = (own_ctx){0, 1, 0};
    assert_int_equal(parse(&c, TOPT_TRAIN, &o, &next, &err, 4, "prog", "--resume", "--config",
                           badfile),
                     COH_ERANGE);
    assert_contains(err.msg, "\"group_size\"");
    assert_int_equal(o.calls, 0);
    /* the learner takes --prompts-file */
    c = trainer_config_default();
    assert_int_equal(parse(&c, TOPT_LEARNER, &o, &next, &err, 3, "prog", "--prompts-file",
                           "p.jsonl"),
                     COH_OK);
    assert_string_equal(c.prompts_file, "p.jsonl");
    /* a binary's own option may not shadow a training option */
    static const struct option clash[] = {{"beta", required_argument, NULL, 'b'},
                                          {NULL, 0, NULL, 0}};
    char *argv[] = {"prog", NULL};
    assert_int_equal(topt_parse_args(&c, TOPT_TRAIN, 1, argv, NULL, clash, own_option, &o,
                                     &next, &err),
                     COH_EINVAL);
}

/* The same settings from flags and from one --config file: equal records. */
static void test_config_file_reproduces_flags(void **state)
{
    (void)state;
    coh_err err;
    own_ctx o = {0, 1, 0};
    int next;
    trainer_config a = trainer_config_default();
    assert_int_equal(parse(&a, TOPT_TRAIN, &o, &next, &err, 14, "prog", "--estimator", "rloo",
                           "--aggregation", "seq_mean_token_mean", "--eps-high", "0.28",
                           "--max-new-tokens", "64", "--seed", "9", "--drop-zero-signal",
                           "--rl-lr", "3e-4"),
                     COH_OK);
    char *ta = json_text(&a);
    char file[320];
    snprintf(file, sizeof file, "%s/repro.json", g_tmp);
    write_file(file, ta);
    trainer_config b = trainer_config_default();
    assert_int_equal(parse(&b, TOPT_TRAIN, &o, &next, &err, 3, "prog", "--config", file),
                     COH_OK);
    char *tb = json_text(&b);
    assert_string_equal(ta, tb);
    /* and a short hand-written file with flag-named keys */
    write_file(file, "{\"estimator\": \"rloo\", \"aggregation\": \"seq_mean_token_mean\","
                     "\"eps-high\": 0.28, \"max-new-tokens\": 64, \"seed\": 9,"
                     "\"drop-zero-signal\": true, \"rl-lr\": 3e-4}");
    trainer_config h = trainer_config_default();
    assert_int_equal(parse(&h, TOPT_TRAIN, &o, &next, &err, 3, "prog", "--config", file),
                     COH_OK);
    char *th = json_text(&h);
    assert_string_equal(ta, th);
    free(ta);
    free(tb);
    free(th);
}

static void test_merge_resume(void **state)
{
    (void)state;
    coh_err err;
    trainer_config rec = trainer_config_default();
    snprintf(rec.out_dir, sizeof rec.out_dir, "old");
    rec.loss.beta = 0.1f;
    rec.rl_steps = 10;
    rec.eval_every = 5;
    rec.loss.estimator = EST_RLOO;
    rec.task_cfg.digits = 3;
    cJSON *o = topt_to_json(&rec);
    trainer_config c = trainer_config_default();
    snprintf(c.out_dir, sizeof c.out_dir, "new");
    c.loss.beta = 0.3f;
    c.rl_steps = 50;
    assert_int_equal(topt_merge_resume(&c, o, &err), COH_OK);
    assert_string_equal(c.out_dir, "new");    /* how the process runs: the command line's */
    assert_int_equal(c.rl_steps, 50);
    assert_int_equal(c.eval_every, 25);
    assert_true(c.loss.beta == 0.1f);         /* the algorithm: the checkpoint's */
    assert_int_equal(c.loss.estimator, EST_RLOO);
    assert_int_equal(c.task_cfg.digits, 3);
    cJSON_Delete(o);
    o = cJSON_Parse("{\"beta\": -1}");
    trainer_config before = c;
    assert_int_equal(topt_merge_resume(&c, o, &err), COH_ERANGE);
    assert_memory_equal(&c, &before, sizeof c);
    cJSON_Delete(o);
}

/* --stop: repeatable on the command line, a list in JSON, checked, recorded. */
static void test_stop_strings(void **state)
{
    (void)state;
    coh_err err;
    trainer_config c = trainer_config_default();
    assert_int_equal(c.stop.n, 0);
    /* each use adds one */
    assert_int_equal(topt_apply_name(&c, TOPT_TRAIN, "stop", "+", &err), COH_OK);
    assert_int_equal(topt_apply_name(&c, TOPT_LEARNER, "stop", "\n\nQ:", &err), COH_OK);
    assert_int_equal(topt_apply_name(&c, TOPT_TRAIN, "stop", "\xE2\x82\xAC", &err), COH_OK);
    assert_int_equal(c.stop.n, 3);
    assert_string_equal(c.stop.text[0], "+");
    assert_string_equal(c.stop.text[1], "\n\nQ:");
    /* refusals name --stop; c unchanged */
    trainer_config before = c;
    char s65[66];
    memset(s65, 'x', 65);
    s65[65] = '\0';
    const struct {
        const char *v;
        int code;
        const char *needle;
    } bad[] = {
        {"", COH_EINVAL, "--stop: a stop string is empty"},
        {s65, COH_ERANGE, "--stop: stop string 'xxxx"},
        {"ok\xC3", COH_EINVAL, "--stop: stop string 'ok\\xC3' is not valid UTF-8 (at byte 2)"},
        {"\xED\xA0\x80", COH_EINVAL, "not valid UTF-8"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(topt_apply_name(&c, TOPT_TRAIN, "stop", bad[i].v, &err), bad[i].code);
        assert_contains(err.msg, bad[i].needle);
        assert_memory_equal(&c, &before, sizeof c);
    }
    assert_int_equal(topt_apply_name(&c, TOPT_TRAIN, "stop", NULL, &err), COH_EINVAL);
    char s[8];
    for (int i = 3; i < 8; i++) {
        snprintf(s, sizeof s, "s%d", i);
        assert_int_equal(topt_apply_name(&c, TOPT_TRAIN, "stop", s, &err), COH_OK);
    }
    before = c;
    assert_int_equal(topt_apply_name(&c, TOPT_TRAIN, "stop", "ninth", &err), COH_ERANGE);
    assert_contains(err.msg, "--stop: more than 8 stop strings");
    assert_memory_equal(&c, &before, sizeof c);

    /* the record holds the list; it reads back, replacing (not adding to) a list */
    cJSON *o = topt_to_json(&c);
    const cJSON *arr = cJSON_GetObjectItem(o, "stop");
    assert_int_equal(cJSON_GetArraySize(arr), 8);
    assert_string_equal(cJSON_GetArrayItem(arr, 1)->valuestring, "\n\nQ:");
    trainer_config back = trainer_config_default();
    assert_int_equal(topt_apply_name(&back, TOPT_TRAIN, "stop", "old", &err), COH_OK);
    assert_int_equal(topt_from_json(&back, TOPT_TRAIN, o, &err), COH_OK);
    assert_int_equal(back.stop.n, 8);
    assert_true(stops_equal(&back.stop, &c.stop));
    cJSON_Delete(o);
    o = cJSON_Parse("{\"stop\": []}");
    assert_int_equal(topt_from_json(&back, TOPT_TRAIN, o, &err), COH_OK);
    assert_int_equal(back.stop.n, 0);
    cJSON_Delete(o);

    /* JSON refusals name the key (and the element) */
    expect_json_refused(TOPT_TRAIN, "{\"stop\": \"+\"}", COH_EINVAL,
                        "\"stop\": expected an array of strings, got a string");
    expect_json_refused(TOPT_TRAIN, "{\"stop\": [\"+\", 3]}", COH_EINVAL,
                        "\"stop\"[1]: expected a string, got a number");
    expect_json_refused(TOPT_TRAIN, "{\"stop\": [\"+\", \"\"]}", COH_EINVAL,
                        "\"stop\"[1]: a stop string is empty");
    expect_json_refused(TOPT_TRAIN, "{\"stop\": [\"ab\xC3\"]}", COH_EINVAL,
                        "\"stop\"[0]: stop string 'ab\\xC3' is not valid UTF-8");
    expect_json_refused(TOPT_TRAIN,
                        "{\"stop\": [\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\"]}",
                        COH_ERANGE, "\"stop\": more than 8 stop strings");
    expect_json_refused(TOPT_LEARNER, "{\"stop\": null}", COH_EINVAL, "\"stop\"");

    /* the command line: the first --stop replaces the file's list, later ones add to it */
    char file[320];
    snprintf(file, sizeof file, "%s/stops.json", g_tmp);
    write_file(file, "{\"stop\": [\"a\", \"b\"], \"beta\": 0.5}");
    own_ctx ox = {0, 1, 0};
    int next;
    c = trainer_config_default();
    assert_int_equal(parse(&c, TOPT_TRAIN, &ox, &next, &err, 3, "prog", "--config", file), COH_OK);
    assert_int_equal(c.stop.n, 2);
    assert_string_equal(c.stop.text[1], "b");
    c = trainer_config_default();
    assert_int_equal(parse(&c, TOPT_LEARNER, &ox, &next, &err, 6, "prog", "--stop", "x",
                           "--config", file, "--stop=y z"),
                     COH_OK);
    assert_int_equal(c.stop.n, 2);
    assert_string_equal(c.stop.text[0], "x");
    assert_string_equal(c.stop.text[1], "y z");
    assert_true(c.loss.beta == 0.5f);
    c = trainer_config_default();
    assert_int_equal(parse(&c, TOPT_TRAIN, &ox, &next, &err, 3, "prog", "--stop", "\xFF"),
                     COH_EINVAL);
    assert_contains(err.msg, "--stop");
    assert_int_equal(parse(&c, TOPT_TRAIN, &ox, &next, &err, 2, "prog", "--stop"), COH_EINVAL);
    assert_contains(err.msg, "option '--stop' needs a value");
}

static void test_help(void **state)
{
    (void)state;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    topt_print_help(TOPT_TRAIN, f);
    fclose(f);
    for (size_t i = 0; i < sizeof TRAIN_FLAGS / sizeof TRAIN_FLAGS[0]; i++) {
        char flag[64];
        snprintf(flag, sizeof flag, "--%s ", TRAIN_FLAGS[i]);
        assert_contains(buf, flag);
    }
    assert_null(strstr(buf, "--prompts-file"));
    assert_contains(buf, "--group-size G");
    assert_contains(buf, "1..1024 [16]");
    assert_contains(buf, "(0, 1] [0.0005]");
    assert_contains(buf, "--stop TEXT");
    free(buf);
    f = open_memstream(&buf, &len);
    topt_print_help(TOPT_LEARNER, f);
    fclose(f);
    assert_contains(buf, "--prompts-file FILE");
    free(buf);
}

/* ---- the policy's room for --max-new-tokens ------------------------------------------------ */

static void test_task_max_prompt_len(void **state)
{
    (void)state;
    static const char *const names[] = {"addition", "countdown", "reverse", "sort"};
    coh_err err;
    for (int n = 0; n < 4; n++) {
        task_config tc = task_config_default();
        tc.digits = 3;
        tc.n_numbers = 4;
        tc.max_number = 100;
        tc.max_target = 999;
        tc.min_len = 2;
        tc.max_len = 9;
        task *t = NULL;
        assert_int_equal(task_create(names[n], &tc, &t, &err), COH_OK);
        int bound = task_max_prompt_len(t), longest = 0;
        for (uint64_t i = 0; i < 3000; i++) {
            task_item it;
            assert_int_equal(task_train_item(t, i, &it), COH_OK);
            int len = (int)strlen(it.prompt);
            assert_true(len <= bound);
            if (len > longest)
                longest = len;
        }
        /* the bound is tight where the format fixes it, and close otherwise */
        if (n == 0)
            assert_int_equal(longest, 8); /* "123+456=" */
        if (n >= 2)
            assert_int_equal(longest, bound);
        assert_true(longest >= bound - 4);
        task_destroy(t);
    }
}

static trainer_config tiny_config(const char *sub)
{
    trainer_config c = trainer_config_default();
    snprintf(c.out_dir, sizeof c.out_dir, "%s/%s", g_tmp, sub);
    c.model.dim = 16;
    c.model.hidden_dim = 32;
    c.model.n_layers = 1;
    c.model.n_heads = 2;
    c.model.n_kv_heads = 1;
    c.sft_steps = 2;
    c.sft_batch = 4;
    c.rl_steps = 2;
    c.prompts_per_step = 2;
    c.group_size = 2;
    c.eval_every = 0;
    c.eval_size = 10;
    c.ckpt_every = 0;
    c.quiet = 1;
    return c;
}

static void test_max_new_tokens_room(void **state)
{
    (void)state;
    coh_err err;
    /* the default policy grows: <bos> + "12+34=" + 60 new tokens */
    trainer_config c = tiny_config("room");
    c.sampling.max_new_tokens = 60;
    trainer *t = NULL;
    assert_int_equal(trainer_create(&c, 0, &t, &err), COH_OK);
    assert_int_equal(model_get_config(trainer_policy(t))->max_seq, 1 + 6 + 60);
    trainer_metrics m;
    while (trainer_has_next(t))
        assert_int_equal(trainer_step(t, &m, &err), COH_OK);
    trainer_destroy(t);
    /* a small default is left alone when it suffices */
    c = tiny_config("room2");
    assert_int_equal(trainer_create(&c, 0, &t, &err), COH_OK);
    assert_int_equal(model_get_config(trainer_policy(t))->max_seq, 32);
    trainer_destroy(t);
    /* a given config that is too small is refused, naming both settings */
    c = tiny_config("room3");
    c.model.max_seq = 40;
    c.model_from_config = 1;
    c.sampling.max_new_tokens = 34;
    assert_int_equal(trainer_create(&c, 0, &t, &err), COH_ERANGE);
    assert_null(t);
    assert_contains(err.msg, "--max-new-tokens 34");
    assert_contains(err.msg, "max_position_embeddings is 40");
    assert_contains(err.msg, "--max-new-tokens 33 or less");
    c.sampling.max_new_tokens = 33; /* exactly fits */
    assert_int_equal(trainer_create(&c, 0, &t, &err), COH_OK);
    trainer_destroy(t);
}

/* The record at the head of metrics.jsonl is topt_to_json of the effective settings, and
 * --resume reads the checkpoint's back. */
static void test_trainer_records_and_resumes_settings(void **state)
{
    (void)state;
    coh_err err;
    trainer_config c = tiny_config("rec");
    assert_int_equal(topt_apply_name(&c, TOPT_TRAIN, "estimator", "rloo", &err), COH_OK);
    assert_int_equal(topt_apply_name(&c, TOPT_TRAIN, "eps-high", "0.28", &err), COH_OK);
    assert_int_equal(topt_apply_name(&c, TOPT_TRAIN, "format-weight", "0.5", &err), COH_OK);
    assert_int_equal(topt_apply_name(&c, TOPT_TRAIN, "top-k", "5", &err), COH_OK);
    trainer *t = NULL;
    assert_int_equal(trainer_create(&c, 0, &t, &err), COH_OK);
    trainer_metrics m;
    for (int i = 0; i < 3; i++)
        assert_int_equal(trainer_step(t, &m, &err), COH_OK);
    assert_int_equal(trainer_checkpoint(t, &err), COH_OK);
    char *want = json_text(trainer_get_config(t));
    trainer_destroy(t);

    char path[400], *line = NULL;
    size_t cap = 0;
    snprintf(path, sizeof path, "%s/rec/metrics.jsonl", g_tmp);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    assert_true(getline(&line, &cap, f) > 0);
    fclose(f);
    cJSON *head = cJSON_Parse(line);
    free(line);
    char *got = cJSON_PrintUnformatted(cJSON_GetObjectItem(head, "settings"));
    assert_string_equal(got, want);
    free(got);
    cJSON_Delete(head);

    /* resume with default flags: the run's settings come back from the checkpoint */
    trainer_config r = tiny_config("rec");
    assert_int_equal(trainer_create(&r, 1, &t, &err), COH_OK);
    const trainer_config *e = trainer_get_config(t);
    assert_int_equal(e->loss.estimator, EST_RLOO);
    assert_true(e->loss.eps_high == 0.28f);
    assert_true(e->format_weight == 0.5f);
    assert_int_equal(e->sampling.top_k, 5);
    assert_int_equal(trainer_current_step(t), 3);
    char *again = json_text(e);
    assert_string_equal(again, want);
    free(again);
    trainer_destroy(t);
    free(want);
}

/* cli_check_address: the forms a user writes are accepted, every bad one refused naming the
 * flag and the port rule. */
static void test_check_address(void **state)
{
    (void)state;
    coh_err err;
    const char *good[] = {"127.0.0.1:0", "0.0.0.0:50051", "localhost:65535", ":8080",
                          "[::1]:50051", "[::]:0", "dns:///learner:50051", "ipv4:10.0.0.1:7",
                          "unix:/tmp/cohort.sock", "learner:1"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        assert_int_equal(cli_check_address("--listen", good[i], 0, &err), COH_OK);
    const char *bad[] = {"",          "127.0.0.1:99999", "127.0.0.1:65536", "127.0.0.1:abc",
                         "127.0.0.1:", "nocolon",        "::1:5",           "[::1:5",
                         "[::1]5:1",  "127.0.0.1:-1",    "127.0.0.1:+1",    "127.0.0.1:123456",
                         "unix:",     "h:1 "};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(cli_check_address("--listen", bad[i], 0, &err), COH_EINVAL);
        assert_non_null(strstr(err.msg, "--listen"));
    }
    assert_int_equal(cli_check_address("--listen", "127.0.0.1:99999", 0, &err), COH_EINVAL);
    assert_non_null(strstr(err.msg, "port 99999 is out of range"));
    /* a client needs a real port */
    assert_int_equal(cli_check_address("--learner", "127.0.0.1:0", 1, &err), COH_EINVAL);
    assert_non_null(strstr(err.msg, "[1, 65535]"));
    assert_int_equal(cli_check_address("--learner", NULL, 1, &err), COH_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_int_good),
        cmocka_unit_test(test_int_bad),
        cmocka_unit_test(test_long_and_u64),
        cmocka_unit_test(test_double_good),
        cmocka_unit_test(test_double_bad),
        cmocka_unit_test(test_float),
        cmocka_unit_test(test_choice),
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_apply_refuses_every_bad_value),
        cmocka_unit_test(test_apply_sets_fields),
        cmocka_unit_test(test_record_round_trip),
        cmocka_unit_test(test_from_json_refusals),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_parse_args),
        cmocka_unit_test(test_config_file_reproduces_flags),
        cmocka_unit_test(test_merge_resume),
        cmocka_unit_test(test_stop_strings),
        cmocka_unit_test(test_help),
        cmocka_unit_test(test_check_address),
        cmocka_unit_test(test_task_max_prompt_len),
        cmocka_unit_test(test_max_new_tokens_room),
        cmocka_unit_test(test_trainer_records_and_resumes_settings),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
