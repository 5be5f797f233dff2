/* main_train.c - cohort-train: the single-process run (random policy -> SFT warm start on
 * generated demonstrations -> RL on the same task), with a progress line per step, a
 * metrics file, checkpoints and exact --resume. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "linalg.h"
#include "model.h"
#include "trainer.h"

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) { (void)sig; g_stop = 1; }

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cohort-train [options]\n"
            "  --out DIR              run folder (metrics.jsonl, checkpoints/) [runs/addition]\n"
            "  --task NAME            addition | countdown | reverse | sort [addition]\n"
            "  --digits N             addition operand digits [2]\n"
            "  --init DIR             start from this checkpoint instead of a random policy\n"
            "  --model-config FILE    config.json of the random policy to create\n"
            "  --seed N               [1]\n"
            "  --resume               continue from OUT/checkpoints/latest\n"
            "  --sft-steps N --sft-batch N --sft-lr X --sft-warmup N\n"
            "  --sft-demos N          SFT cycles through only N demonstrations (0 = unlimited)\n"
            "  --sft-until ACC        end SFT at the first evaluation reaching ACC (0 = off)\n"
            "  --raft-steps N --raft-threshold X\n"
            "  --rl-steps N --prompts N --group-size G --rl-lr X --rl-warmup N\n"
            "  --estimator grpo|drgrpo|rloo|reinforce|reinforce_pp\n"
            "  --aggregation token_mean|seq_mean_token_mean|constant\n"
            "  --eps-low X --eps-high X --beta X --entropy-coef X --temperature X\n"
            "  --max-new-tokens N --drop-zero-signal --format-weight X\n"
            "  --weight-decay X --grad-clip X --schedule constant|linear|cosine\n"
            "  --eval-every N --eval-size N --ckpt-every N --log-every N --quiet\n"
            "  --threads N            OpenBLAS threads [1]\n");
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

enum {
    O_OUT = 1000, O_TASK, O_DIGITS, O_INIT, O_MCFG, O_SEED, O_RESUME, O_SFT_STEPS, O_SFT_BATCH,
    O_SFT_LR, O_SFT_WARM, O_SFT_UNTIL, O_SFT_DEMOS, O_RAFT_STEPS, O_RAFT_THR, O_RL_STEPS, O_PROMPTS, O_GROUP, O_RL_LR,
    O_RL_WARM, O_EST, O_AGG, O_EPS_LOW, O_EPS_HIGH, O_BETA, O_ENT, O_TEMP, O_MAXNEW, O_DROP,
    O_FMT, O_WD, O_CLIP, O_SCHED, O_EVAL_EVERY, O_EVAL_SIZE, O_CKPT, O_LOG, O_QUIET, O_THREADS,
    O_HELP
};

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"out", 1, 0, O_OUT}, {"task", 1, 0, O_TASK}, {"digits", 1, 0, O_DIGITS},
        {"init", 1, 0, O_INIT}, {"model-config", 1, 0, O_MCFG}, {"seed", 1, 0, O_SEED},
        {"resume", 0, 0, O_RESUME}, {"sft-steps", 1, 0, O_SFT_STEPS},
        {"sft-batch", 1, 0, O_SFT_BATCH}, {"sft-lr", 1, 0, O_SFT_LR},
        {"sft-warmup", 1, 0, O_SFT_WARM}, {"sft-until", 1, 0, O_SFT_UNTIL},
        {"sft-demos", 1, 0, O_SFT_DEMOS}, {"raft-steps", 1, 0, O_RAFT_STEPS},
        {"raft-threshold", 1, 0, O_RAFT_THR}, {"rl-steps", 1, 0, O_RL_STEPS},
        {"prompts", 1, 0, O_PROMPTS}, {"group-size", 1, 0, O_GROUP}, {"rl-lr", 1, 0, O_RL_LR},
        {"rl-warmup", 1, 0, O_RL_WARM}, {"estimator", 1, 0, O_EST},
        {"aggregation", 1, 0, O_AGG}, {"eps-low", 1, 0, O_EPS_LOW},
        {"eps-high", 1, 0, O_EPS_HIGH}, {"beta", 1, 0, O_BETA}, {"entropy-coef", 1, 0, O_ENT},
        {"temperature", 1, 0, O_TEMP}, {"max-new-tokens", 1, 0, O_MAXNEW},
        {"drop-zero-signal", 0, 0, O_DROP}, {"format-weight", 1, 0, O_FMT},
        {"weight-decay", 1, 0, O_WD}, {"grad-clip", 1, 0, O_CLIP}, {"schedule", 1, 0, O_SCHED},
        {"eval-every", 1, 0, O_EVAL_EVERY}, {"eval-size", 1, 0, O_EVAL_SIZE},
        {"ckpt-every", 1, 0, O_CKPT}, {"log-every", 1, 0, O_LOG}, {"quiet", 0, 0, O_QUIET},
        {"threads", 1, 0, O_THREADS}, {"help", 0, 0, O_HELP}, {0, 0, 0, 0}};
    la_blas_autoselect(argv);
    trainer_config c = trainer_config_default();
    int resume = 0, threads = 1, opt;
    coh_err err;
    coh_err_clear(&err);
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int rc = COH_OK;
        switch (opt) {
        case O_OUT: snprintf(c.out_dir, sizeof c.out_dir, "%s", optarg); break;
        case O_TASK: snprintf(c.task, sizeof c.task, "%s", optarg); break;
        case O_DIGITS: c.task_cfg.digits = atoi(optarg); break;
        case O_INIT: snprintf(c.init_from, sizeof c.init_from, "%s", optarg); break;
        case O_MCFG: rc = model_config_load(optarg, &c.model, &err); break;
        case O_SEED: c.seed = strtoull(optarg, NULL, 10); break;
        case O_RESUME: resume = 1; break;
        case O_SFT_STEPS: c.sft_steps = atoi(optarg); break;
        case O_SFT_BATCH: c.sft_batch = atoi(optarg); break;
        case O_SFT_LR: c.sft_lr = strtof(optarg, NULL); break;
        case O_SFT_WARM: c.sft_warmup = atoi(optarg); break;
        case O_SFT_UNTIL: c.sft_until = strtof(optarg, NULL); break;
        case O_SFT_DEMOS: c.sft_demos = atoi(optarg); break;
        case O_RAFT_STEPS: c.raft_steps = atoi(optarg); break;
        case O_RAFT_THR: c.raft_threshold = strtof(optarg, NULL); break;
        case O_RL_STEPS: c.rl_steps = atoi(optarg); break;
        case O_PROMPTS: c.prompts_per_step = atoi(optarg); break;
        case O_GROUP: c.group_size = atoi(optarg); break;
        case O_RL_LR: c.rl_lr = strtof(optarg, NULL); break;
        case O_RL_WARM: c.rl_warmup = atoi(optarg); break;
        case O_EST: rc = loss_parse_estimator(optarg, &c.loss.estimator, &err); break;
        case O_AGG: rc = loss_parse_aggregation(optarg, &c.loss.aggregation, &err); break;
        case O_EPS_LOW: c.loss.eps_low = strtof(optarg, NULL); break;
        case O_EPS_HIGH: c.loss.eps_high = strtof(optarg, NULL); break;
        case O_BETA: c.loss.beta = strtof(optarg, NULL); break;
        case O_ENT: c.loss.entropy_coef = strtof(optarg, NULL); break;
        case O_TEMP: c.loss.temperature = strtof(optarg, NULL); break;
        case O_MAXNEW: c.sampling.max_new_tokens = atoi(optarg); break;
        case O_DROP: c.loss.drop_zero_signal = 1; break;
        case O_FMT: c.format_weight = strtof(optarg, NULL); break;
        case O_WD: c.optim.weight_decay = strtof(optarg, NULL); break;
        case O_CLIP: c.optim.grad_clip = strtof(optarg, NULL); break;
        case O_SCHED: rc = optim_parse_schedule(optarg, &c.optim.schedule, &err); break;
        case O_EVAL_EVERY: c.eval_every = atoi(optarg); break;
        case O_EVAL_SIZE: c.eval_size = atoi(optarg); break;
        case O_CKPT: c.ckpt_every = atoi(optarg); break;
        case O_LOG: c.log_every_sft = atoi(optarg); break;
        case O_QUIET: c.quiet = 1; break;
        case O_THREADS: threads = atoi(optarg); break;
        case O_HELP: usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (rc) {
            fprintf(stderr, "cohort-train: %s\n", err.msg);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "cohort-train: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
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
