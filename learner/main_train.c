/* main_train.c - cohort-train: the single-process run (random policy -> SFT warm start on
 * generated demonstrations -> RL on the same task), with a progress line per step, a
 * metrics file, checkpoints and exact --resume. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "linalg.h"
#include "model.h"
#include "trainer.h"
#include "trainopt.h"

#define MAX_THREADS 256

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) { (void)sig; g_stop = 1; }

static void usage(FILE *f)
{
    fprintf(f, "usage: cohort-train [--config FILE] [options]\n"
               "Settings (as flags, or as keys of the --config JSON object: \"rl-lr\" or "
               "\"rl_lr\"; flags given after or before --config override the file):\n");
    topt_print_help(TOPT_TRAIN, f);
    fprintf(f, "Run:\n"
               "  --resume                 continue from OUT/checkpoints/latest\n"
               "  --threads N              OpenBLAS threads; 1..%d [1]\n"
               "  --help                   this text\n",
            MAX_THREADS);
}

static void progress_line(const trainer_metrics *m, long total)
{
    char eval[32] = "";
    if (m->eval_accuracy >= 0)
        snprintf(eval, sizeof eval, " | eval acc %5.1f%%", 100.0 * m->eval_accuracy);
    if (strcmp(m->phase, "sft") == 0)
        printf("step %5ld/%ld [sft ] loss %.4f entropy %.3f gnorm %.2f lr %.2e | %6.0f tok/s%s%s\n",
               m->step, total, m->loss, m->entropy, m->grad_norm, m->lr,
               m->learner_tokens_per_s, eval, m->skipped ? " SKIPPED" : "");
    else
        printf("step %5ld/%ld [%-4s] reward %.3f±%.3f kl %.4f clip %.3f entropy %.3f gnorm %.2f "
               "lr %.2e | learn %6.0f tok/s sample %6.0f tok/s%s%s\n",
               m->step, total, m->phase, m->reward_mean, m->reward_std, m->kl, m->clip_frac,
               m->entropy, m->grad_norm, m->lr, m->learner_tokens_per_s,
               m->sampler_tokens_per_s, eval, m->skipped ? " SKIPPED" : "");
    fflush(stdout);
}

enum { O_RESUME = 1, O_THREADS, O_HELP };

/* cohort-train's own options (everything else is trainopt.c's table) */
typedef struct train_args {
    int resume, threads, help;
} train_args;

static int own_option(void *ctx, int val, const char *arg, coh_err *err)
{
    train_args *a = ctx;
    switch (val) {
    case O_RESUME: a->resume = 1; return COH_OK;
    case O_THREADS: return cli_parse_int("--threads", arg, 1, MAX_THREADS, &a->threads, err);
    case O_HELP: a->help = 1; return COH_OK;
    }
    return coh_fail(err, COH_EINVAL, "unknown option");
}

int main(int argc, char **argv)
{
    static const struct option own[] = {{"resume", no_argument, NULL, O_RESUME},
                                        {"threads", required_argument, NULL, O_THREADS},
                                        {"help", no_argument, NULL, O_HELP},
                                        {NULL, 0, NULL, 0}};
    la_blas_autoselect(argv);
    trainer_config c = trainer_config_default();
    train_args a = {.threads = 1};
    coh_err err;
    coh_err_clear(&err);
    int first = argc;
    if (topt_parse_args(&c, TOPT_TRAIN, argc, argv, NULL, own, own_option, &a, &first, &err)) {
        fprintf(stderr, "cohort-train: %s\n", err.msg);
        return 2;
    }
    if (a.help) {
        usage(stdout);
        return 0;
    }
    if (first < argc) {
        fprintf(stderr, "cohort-train: unexpected argument '%s'; every setting is a --flag "
                        "(--help lists them)\n",
                argv[first]);
        return 2;
    }
    int resume = a.resume, threads = a.threads;
    la_set_threads(threads);

    trainer *t = NULL;
    if (trainer_create(&c, resume, &t, &err)) {
        fprintf(stderr, "cohort-train: %s\n", err.msg);
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    long total = (long)c.sft_steps + c.raft_steps + c.rl_steps;
    if (!c.quiet) {
        printf("cohort-train: task %s, %zu parameters, %s from step %ld, run folder %s\n",
               c.task, model_num_params(trainer_policy(t)), resume ? "resuming" : "starting",
               trainer_current_step(t), c.out_dir);
        double acc = 0;
        if (!resume && c.eval_every > 0 && trainer_evaluate(t, 0, &acc, &err) == COH_OK)
            printf("step %5d/%ld held-out accuracy of the initial policy: %.1f%%\n", 0, total,
                   100.0 * acc);
        fflush(stdout);
    }
    int rc = 0;
    const char *last_phase = "";
    while (trainer_has_next(t) && !g_stop) {
        trainer_metrics m;
        if (trainer_step(t, &m, &err)) {
            fprintf(stderr, "cohort-train: step %ld failed: %s\n", trainer_current_step(t) + 1,
                    err.msg);
            rc = 1;
            break;
        }
        int sft = strcmp(m.phase, "sft") == 0;
        if (!c.quiet && strcmp(m.phase, last_phase) != 0)
            printf("---- phase %s from step %ld ----\n", m.phase, m.step);
        last_phase = m.phase;
        if (!c.quiet && (!sft || m.eval_accuracy >= 0 || c.log_every_sft <= 1 ||
                         m.step % c.log_every_sft == 0))
            progress_line(&m, total);
    }
    if (g_stop) {
        if (trainer_checkpoint(t, &err))
            fprintf(stderr, "cohort-train: final checkpoint failed: %s\n", err.msg);
        else if (!c.quiet)
            printf("stopped at step %ld; checkpoint written; continue with --resume\n",
                   trainer_current_step(t));
    }
    trainer_destroy(t);
    return rc;
}
