/* main_actor.c - cohort-actor: the sampling worker. Flag parsing, wiring and thread starts;
 * the work is in the actor modules:
 *   session.h   registration, parameters, heartbeats, counters, stop / sleeps / streams;
 *   vtrack.h    newest notice, held version, the pending-policy slot;
 *   download.h  WatchVersions and DownloadWeights into verified policies;
 *   rclient.h   Reward.Score for one group;
 *   pipeline.h  lease -> sample -> score -> submit, and how each outcome settles a lease.
 *
 * Threads:
 *   main       the sampling loop (pipeline_run);
 *   watcher    download_watch_run: records the newest VersionNotice;
 *   downloader download_run: downloads and verifies it, hands it over through the vtrack;
 *   heartbeat  session_heartbeat_run: Heartbeat and the progress line;
 *   signals    reads the signal pipe: SIGINT / SIGTERM stop the session (which cancels the
 *              open streams and wakes every sleeper).
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "actlog.h"
#include "cli.h"
#include "download.h"
#include "linalg.h"
#include "pipeline.h"
#include "rclient.h"
#include "rng.h"
#include "rpc.h"
#include "session.h"
#include "vtrack.h"
#include "weights.h"

/* ---- signals ----------------------------------------------------------------------------- */

/* OpenBLAS starts its threads before main() runs, so blocking the signals cannot keep them
 * from being delivered anywhere: a handler writes the signal number to a pipe and the signal
 * thread acts on it. The main thread writes 0 to end the signal thread. */
static int sig_pipe[2] = {-1, -1};

static void on_signal(int sig)
{
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    ssize_t w = write(sig_pipe[1], &b, 1);
    (void)w;
    errno = saved;
}

static void *signal_main(void *arg)
{
    session *s = arg;
    unsigned char b;
    for (;;) {
        ssize_t n = read(sig_pipe[0], &b, 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || b == 0)
            break;
        AWARN("signal %d: stopping (returning unsubmitted leases)", (int)b);
        session_stop(s, 0);
    }
    return NULL;
}

/* ---- threads ----------------------------------------------------------------------------- */

typedef struct actor_threads_arg {
    session *s;
    vtrack *vt;
    download_opts dl; /* how the downloader asks for weights */
} actor_threads_arg;

static void *watcher_main(void *arg)
{
    actor_threads_arg *a = arg;
    download_watch_run(a->s, a->vt);
    return NULL;
}

static void *downloader_main(void *arg)
{
    actor_threads_arg *a = arg;
    download_run_opts(a->s, a->vt, &a->dl);
    return NULL;
}

static void *heartbeat_main(void *arg)
{
    actor_threads_arg *a = arg;
    session_heartbeat_run(a->s, 5.0);
    return NULL;
}

/* ---- main --------------------------------------------------------------------------------- */

/* Weight download: chunks of 4 MiB (the learner allows up to 16 MiB), a fixed 16 MiB HTTP/2
 * stream window on the learner channel, and room for a 28 MiB manifest next to the first
 * chunk (tokenizer.json files of large vocabularies run to several MB). */
#define ACTOR_CHUNK_BYTES (4 << 20)
#define ACTOR_STREAM_WINDOW_BYTES (16 << 20)
#define ACTOR_MANIFEST_ROOM_BYTES (28 << 20)

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cohort-actor [--learner HOST:PORT] [--reward HOST:PORT] [--name NAME]\n"
            "                    [--threads N] [--token T] [--seed S] [--prompts-per-lease N]\n"
            "                    [--max-steps N] [--reward-timeout-ms MS] [--weights-bf16]\n"
            "                    [--weights-delta] [--quiet]\n"
            "Leases prompts from cohort-learner (default 127.0.0.1:50051), samples group_size\n"
            "completions per prompt with the newest verified policy version, scores them with\n"
            "cohort-reward (default 127.0.0.1:50052) and submits the scored groups.\n"
            "  --threads N          OpenBLAS threads, 1-256 (default 1)\n"
            "  --token T            bearer token (default: $COHORT_TOKEN)\n"
            "  --tls-ca PEM         use TLS to learner and reward service, trusting this CA\n"
            "  --tls-server-name N  expected name in their certificates (default: the host)\n"
            "  --seed S             sampling seed, 0-18446744073709551615 (default: time/pid)\n"
            "  --prompts-per-lease N  prompts per LeasePrompts call, 1-1024 (default 1)\n"
            "  --max-steps N        stop after N groups (0 = run until SIGTERM/SIGINT)\n"
            "  --reward-timeout-ms MS  per-item scoring budget, 1-600000 (default 9000)\n"
            "  --weights-bf16       download the weights as bfloat16 (half the bytes); the\n"
            "                       actor then SAMPLES WITH THE BF16-ROUNDED POLICY, so its\n"
            "                       behaviour log-probs are those of the rounded weights\n"
            "                       (default off: F32, exactly the learner's weights)\n"
            "  --weights-delta      when holding an older version, download only the tensors\n"
            "                       that changed (policies with frozen parts); keeps one more\n"
            "                       F32 copy of the weights in memory; ignored with\n"
            "                       --weights-bf16 (default off)\n"
            "SIGTERM/SIGINT: stop leasing, return unsubmitted leases, exit 0.\n");
}

typedef struct actor_flags {
    const char *learner_addr, *reward_addr, *name, *token, *tls_ca, *tls_name;
    int threads, prompts_per_lease, reward_timeout_ms, quiet, weights_bf16, weights_delta;
    long max_steps;
    uint64_t seed;
} actor_flags;

/* Parse argv into f. Returns -1 to go on, else the exit status (0 for --help). */
static int parse_flags(int argc, char **argv, actor_flags *f)
{
    static const struct option opts[] = {
        {"learner", 1, 0, 'l'},           {"reward", 1, 0, 'r'},    {"name", 1, 0, 'n'},
        {"threads", 1, 0, 'j'},           {"token", 1, 0, 't'},     {"seed", 1, 0, 's'},
        {"prompts-per-lease", 1, 0, 'p'}, {"max-steps", 1, 0, 'm'},
        {"reward-timeout-ms", 1, 0, 'T'}, {"quiet", 0, 0, 'q'},     {"help", 0, 0, 'h'},
        {"tls-ca", 1, 0, 'C'},            {"tls-server-name", 1, 0, 'N'},
        {"weights-bf16", 0, 0, 'B'},      {"weights-delta", 0, 0, 'D'}, {0, 0, 0, 0}};
    coh_err err;
    coh_err_clear(&err);
    int opt, bad = 0;
    while ((opt = getopt_long(argc, argv, "hq", opts, NULL)) != -1) {
        switch (opt) {
        case 'l':
            f->learner_addr = optarg;
            bad = cli_check_address("--learner", optarg, 1, &err);
            break;
        case 'r':
            f->reward_addr = optarg;
            bad = cli_check_address("--reward", optarg, 1, &err);
            break;
        case 'n': f->name = optarg; break;
        case 't': f->token = optarg; break;
        case 'C': f->tls_ca = optarg; break;
        case 'N': f->tls_name = optarg; break;
        case 'q': f->quiet = 1; break;
        case 'B': f->weights_bf16 = 1; break;
        case 'D': f->weights_delta = 1; break;
        case 'j': bad = cli_parse_int("--threads", optarg, 1, 256, &f->threads, &err); break;
        case 's': bad = cli_parse_u64("--seed", optarg, 0, UINT64_MAX, &f->seed, &err); break;
        case 'p':
            bad = cli_parse_int("--prompts-per-lease", optarg, 1, 1024, &f->prompts_per_lease,
                                &err);
            break;
        case 'm':
            bad = cli_parse_long("--max-steps", optarg, 0, 1L << 40, &f->max_steps, &err);
            break;
        case 'T':
            bad = cli_parse_int("--reward-timeout-ms", optarg, 1, 600000, &f->reward_timeout_ms,
                                &err);
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (bad) {
            fprintf(stderr, "cohort-actor: %s\n", err.msg);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "cohort-actor: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (strlen(f->name) > 128) {
        fprintf(stderr, "cohort-actor: --name is longer than 128 bytes; give a shorter one\n");
        return 2;
    }
    return -1;
}

int main(int argc, char **argv)
{
    la_blas_autoselect(argv);
    char hostname[64] = "";
    gethostname(hostname, sizeof hostname - 1);
    static char defname[128];
    snprintf(defname, sizeof defname, "%s/%d", hostname, (int)getpid());
    actor_flags f = {.learner_addr = "127.0.0.1:50051",
                     .reward_addr = "127.0.0.1:50052",
                     .name = defname,
                     .token = getenv("COHORT_TOKEN"),
                     .threads = 1,
                     .prompts_per_lease = 1,
                     .reward_timeout_ms = 9000,
                     .seed = rng_mix((uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32))};
    int prc = parse_flags(argc, argv, &f);
    if (prc >= 0)
        return prc;
    actlog_setup(f.name, f.quiet);
    /* versions arrive again and again: keep the memory a download used (gRPC's receive
     * buffers) for the next one instead of faulting fresh pages in every time (the actor's
     * own download buffers are reused by its download_cache) */
    if (wt_malloc_keep_memory())
        ALOG("the allocator keeps no freed memory (not glibc malloc): weight downloads "
             "page-fault their gRPC buffers in again every version");
    la_set_threads(f.threads);

    /* signals: see on_signal */
    if (pipe(sig_pipe)) {
        perror("cohort-actor: pipe");
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    rpc_global_init();
    coh_err err;
    coh_err_clear(&err);
    /* --tls-ca: both channels (learner and reward service) use TLS, trusting that CA */
    rpc_channel_config cc = {.bearer_token = f.token && *f.token ? f.token : NULL,
                             .tls_ca_file = f.tls_ca, .tls_server_name = f.tls_name};
    /* the learner channel carries the weights: a fixed HTTP/2 window (no slow start from
     * 64 KiB on every download) and messages big enough for ACTOR_CHUNK_BYTES chunks next
     * to the manifest (config.json + tokenizer.json) the first chunk carries */
    rpc_channel_config lcc = cc;
    lcc.stream_window_bytes = ACTOR_STREAM_WINDOW_BYTES;
    lcc.max_receive_bytes = ACTOR_CHUNK_BYTES + ACTOR_MANIFEST_ROOM_BYTES;
    rpc_channel *lch = NULL, *rch = NULL;
    vtrack *vt = NULL;
    session *s = NULL;
    rclient *rc_ = NULL;
    pipeline *pl = NULL;
    int rc = 1;
    pthread_t th_sig, th_watch, th_dl, th_hb;
    int have_sig = 0, have_watch = 0, have_dl = 0, have_hb = 0;
    session_config scfg = {.learner_addr = f.learner_addr, .name = f.name, .threads = f.threads};
    pipeline_config pcfg = {.seed = f.seed, .prompts_per_lease = f.prompts_per_lease,
                            .max_groups = f.max_steps};
    if (rpc_channel_create(f.learner_addr, &lcc, &lch, &err) ||
        rpc_channel_create(f.reward_addr, &cc, &rch, &err) || vtrack_create(&vt, &err) ||
        session_create(lch, vt, &scfg, &s, &err) ||
        rclient_create(rch, f.reward_addr, f.reward_timeout_ms, &rc_, &err) ||
        pipeline_create(s, vt, rc_, &pcfg, &pl, &err)) {
        fprintf(stderr, "cohort-actor: %s\n", err.msg);
        goto out;
    }
    actor_threads_arg targ = {.s = s,
                              .vt = vt,
                              .dl = {.bf16 = f.weights_bf16,
                                     .delta = f.weights_delta,
                                     .max_chunk_bytes = ACTOR_CHUNK_BYTES}};
    have_sig = pthread_create(&th_sig, NULL, signal_main, s) == 0;
    ALOG("learner %s, reward %s, %d BLAS thread(s), seed %llu, weights %s%s", f.learner_addr,
         f.reward_addr, f.threads, (unsigned long long)f.seed, f.weights_bf16 ? "bf16" : "f32",
         f.weights_delta && !f.weights_bf16 ? " (deltas)" : "");
    if (f.weights_bf16)
        AWARN("--weights-bf16: sampling with bf16-rounded weights, so behaviour log-probs come "
              "from the rounded policy, not the learner's F32 one%s",
              f.weights_delta ? " (--weights-delta is ignored with it)" : "");
    if (session_register(s, 0) == 0) {
        have_watch = pthread_create(&th_watch, NULL, watcher_main, &targ) == 0;
        have_dl = pthread_create(&th_dl, NULL, downloader_main, &targ) == 0;
        have_hb = pthread_create(&th_hb, NULL, heartbeat_main, &targ) == 0;
        if (!have_watch || !have_dl || !have_hb) {
            AWARN("cannot start threads");
            session_stop(s, 1);
        } else {
            pipeline_run(pl);
        }
    }
    session_stop(s, 0);
    if (have_watch)
        pthread_join(th_watch, NULL);
    if (have_dl)
        pthread_join(th_dl, NULL);
    if (have_hb)
        pthread_join(th_hb, NULL);
    rc = session_fatal(s) ? 1 : 0;
    session_stats st;
    session_stats_get(s, &st);
    ALOG("stopped: %lld groups submitted (%lld accepted, %lld dropped), %lld completions, "
         "%lld tokens",
         st.groups_submitted, st.groups_accepted, st.groups_dropped, st.completions, st.tokens);
out:
    if (have_sig) {
        unsigned char zero = 0;
        ssize_t w = write(sig_pipe[1], &zero, 1);
        (void)w;
        pthread_join(th_sig, NULL);
    }
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    close(sig_pipe[0]);
    close(sig_pipe[1]);
    pipeline_destroy(pl);
    rclient_destroy(rc_);
    session_destroy(s);
    vtrack_destroy(vt);
    rpc_channel_destroy(lch);
    rpc_channel_destroy(rch);
    rpc_global_shutdown();
    return rc;
}
