/* bench_acklog.c - durable appends to the acknowledgement log, next to the raw fdatasync rate
 * of the same disk measured in the same run.
 *
 *   bench_acklog [--dir DIR] [--n N] [--group G] [--tokens T]
 *
 * Every SubmitGroup acknowledgement waits for one alog_append (a pwrite and an fdatasync), so
 * the disk's sync rate bounds the groups/s a learner can acknowledge. In a fresh folder under
 * DIR (default: the current folder, i.e. the disk the run folder lives on; /tmp may be a
 * RAM disk) this measures, alternating twice:
 *   raw:  pwrite of a record-sized block at the end of a plain file + fdatasync;
 *   alog: alog_append of a group of G completions of T tokens (default 16 x 64);
 * and prints both rates and their ratio (1.00 = the log costs nothing beyond the sync), then
 * the replay rate of the log. The folder is removed afterwards.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "acklog.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static long parse_pos(const char *flag, const char *s, long max)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 1 || v > max) {
        fprintf(stderr, "bench_acklog: %s '%s' must be an integer in [1, %ld]\n", flag, s, max);
        exit(2);
    }
    return v;
}

/* n record-sized pwrite + fdatasync at the end of a plain file; seconds taken, < 0 on error. */
static double raw_round(const char *path, const uint8_t *block, size_t len, int n)
{
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        fprintf(stderr, "bench_acklog: cannot create '%s': %s\n", path, strerror(errno));
        return -1;
    }
    double t0 = now_s();
    for (int i = 0; i < n; i++) {
        if (pwrite(fd, block, len, (off_t)((size_t)i * len)) != (ssize_t)len ||
            fdatasync(fd) != 0) {
            fprintf(stderr, "bench_acklog: write/fdatasync '%s': %s\n", path, strerror(errno));
            close(fd);
            return -1;
        }
    }
    double dt = now_s() - t0;
    close(fd);
    unlink(path);
    return dt;
}

/* n appends to a fresh log at path, seqs from *seq; seconds taken, < 0 on error. */
static double alog_round(const char *path, const gbuf_group *g, int n, uint64_t *bytes)
{
    alog *l = NULL;
    coh_err err = {0};
    unlink(path);
    if (alog_open(path, &l, NULL, &err) != COH_OK) {
        fprintf(stderr, "bench_acklog: %s\n", err.msg);
        return -1;
    }
    double t0 = now_s();
    for (int i = 0; i < n; i++) {
        if (alog_append(l, (uint64_t)i + 1, 7, g, &err) != COH_OK) {
            fprintf(stderr, "bench_acklog: %s\n", err.msg);
            alog_close(l);
            return -1;
        }
    }
    double dt = now_s() - t0;
    *bytes = alog_bytes(l);
    alog_close(l);
    return dt;
}

static int count_tokens(void *ctx, uint64_t seq, uint64_t actor, const gbuf_group *g)
{
    uint64_t *sum = ctx;
    for (int i = 0; i < g->n_completions; i++)
        *sum += (uint64_t)g->completions[i].n_tokens;
    return 0;
}

int main(int argc, char **argv)
{
    const char *dir = ".";
    int n = 400, G = 16, T = 64;
    static const struct option opts[] = {{"dir", required_argument, 0, 'd'},
                                         {"n", required_argument, 0, 'n'},
                                         {"group", required_argument, 0, 'g'},
                                         {"tokens", required_argument, 0, 't'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'd': dir = optarg; break;
        case 'n': n = (int)parse_pos("--n", optarg, 1000000); break;
        case 'g': G = (int)parse_pos("--group", optarg, 4096); break;
        case 't': T = (int)parse_pos("--tokens", optarg, 65536); break;
        default:
            fprintf(stderr, "usage: bench_acklog [--dir DIR] [--n N] [--group G] [--tokens T]\n");
            return c == 'h' ? 0 : 2;
        }
    }

    /* the group: 8 prompt tokens, G completions of T tokens */
    int prompt[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    int *tok = malloc((size_t)T * sizeof *tok);
    float *lp = malloc((size_t)T * sizeof *lp);
    gbuf_completion *comp = malloc((size_t)G * sizeof *comp);
    if (!tok || !lp || !comp) {
        fprintf(stderr, "bench_acklog: out of memory\n");
        return 1;
    }
    for (int k = 0; k < T; k++) {
        tok[k] = k % 256;
        lp[k] = -0.01f * (float)k;
    }
    for (int i = 0; i < G; i++)
        comp[i] = (gbuf_completion){.tokens = tok, .n_tokens = T, .logp = lp, .n_logp = T,
                                    .version = 3, .reward = i % 2};
    gbuf_group g = {.prompt = 42, .lease_id = 99, .prompt_tokens = prompt, .n_prompt = 8,
                    .completions = comp, .n_completions = G};
    size_t rec = ALOG_RECORD_OVERHEAD + 32 + 8 * 4 + (size_t)G * (20 + (size_t)T * 8);
    uint8_t *block = calloc(1, rec);

    char tmpl[4096];
    snprintf(tmpl, sizeof tmpl, "%s/bench_acklog.XXXXXX", dir);
    if (!block || !mkdtemp(tmpl)) {
        fprintf(stderr, "bench_acklog: cannot make a folder under '%s': %s; give --dir a "
                "writable folder\n", dir, strerror(errno));
        return 1;
    }
    char raw_path[4200], log_path[4200];
    snprintf(raw_path, sizeof raw_path, "%s/raw", tmpl);
    snprintf(log_path, sizeof log_path, "%s/acked.log", tmpl);

    int rc = 0;
    double raw_t = 0, log_t = 0;
    uint64_t bytes = 0;
    for (int round = 0; round < 2 && rc == 0; round++) {
        double a = raw_round(raw_path, block, rec, n);
        double b = a < 0 ? -1 : alog_round(log_path, &g, n, &bytes);
        if (a < 0 || b < 0)
            rc = 1;
        else if (bytes != ALOG_HEADER_BYTES + (uint64_t)n * rec) {
            fprintf(stderr, "bench_acklog: log of %llu bytes, expected %llu\n",
                    (unsigned long long)bytes,
                    (unsigned long long)(ALOG_HEADER_BYTES + (uint64_t)n * rec));
            rc = 1;
        }
        raw_t += a;
        log_t += b;
    }
    if (rc == 0) {
        double raw_rate = 2.0 * n / raw_t, log_rate = 2.0 * n / log_t;
        printf("bench_acklog: folder %s, %d appends x 2 rounds, record %zu bytes (%d x %d "
               "tokens)\n", dir, n, rec, G, T);
        printf("  raw pwrite+fdatasync : %9.1f /s  (%.3f ms each)\n", raw_rate,
               1e3 / raw_rate);
        printf("  alog_append          : %9.1f /s  (%.3f ms each)\n", log_rate,
               1e3 / log_rate);
        printf("  ratio alog/raw       : %9.2f\n", log_rate / raw_rate);

        /* replay of the last round's log (what a restart pays) */
        alog *l = NULL;
        coh_err err = {0};
        uint64_t toks = 0;
        double t0 = now_s();
        if (alog_open(log_path, &l, NULL, &err) != COH_OK ||
            alog_replay(l, 0, count_tokens, &toks, &err) != COH_OK) {
            fprintf(stderr, "bench_acklog: %s\n", err.msg);
            rc = 1;
        } else {
            double dt = now_s() - t0;
            printf("  open+replay          : %9.1f groups/s (%d groups, %.1f MB, %llu tokens "
                   "in %.3f s)\n", n / dt, n, (double)bytes / 1e6, (unsigned long long)toks,
                   dt);
            if (toks != (uint64_t)n * (uint64_t)G * (uint64_t)T) {
                fprintf(stderr, "bench_acklog: replay saw %llu tokens, expected %llu\n",
                        (unsigned long long)toks,
                        (unsigned long long)((uint64_t)n * (uint64_t)G * (uint64_t)T));
                rc = 1;
            }
        }
        alog_close(l);
    }
    unlink(raw_path);
    unlink(log_path);
    rmdir(tmpl);
    free(block);
    free(comp);
    free(lp);
    free(tok);
    return rc;
}
