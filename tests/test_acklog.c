/* test_acklog.c - the append-only log of accepted groups (learner/acklog.c).
 *
 * The bytes of a record are checked against a layout written out by hand; groups come back
 * from replay exactly as appended (every field), after a reopen too; a torn tail cut at every
 * byte offset of the last record, a zero-filled tail and a bit flipped in every byte of the
 * last record are cut while the earlier records stay intact; a bit flipped in any byte of a
 * middle record is refused with its offset and nothing is cut; CRC-valid records with bad
 * content are refused; seqs must increase; compaction keeps exactly the records after the
 * given seq, keeps the seq floor and survives reopen; foreign files are refused; a failed
 * write (RLIMIT_FSIZE) leaves the log as it was.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "acklog.h"

#define HAS(msg, s)                                                                          \
    do {                                                                                     \
        if (!strstr((msg), (s)))                                                             \
            fail_msg("message \"%s\" lacks \"%s\"", (msg), (s));                              \
    } while (0)

#define G 3
#define TOK_MAX 8

/* ---- fixtures ------------------------------------------------------------------------- */

typedef struct tdir {
    char dir[64];
    char path[128];
    char compact[160];
} tdir;

static int setup(void **state)
{
    tdir *t = calloc(1, sizeof *t);
    if (!t)
        return -1;
    snprintf(t->dir, sizeof t->dir, "/tmp/test_acklog.XXXXXX");
    if (!mkdtemp(t->dir)) {
        free(t);
        return -1;
    }
    snprintf(t->path, sizeof t->path, "%s/acked.log", t->dir);
    snprintf(t->compact, sizeof t->compact, "%s.compact", t->path);
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    tdir *t = *state;
    unlink(t->path);
    unlink(t->compact);
    int rc = rmdir(t->dir); /* fails if a test left something behind */
    free(t);
    return rc;
}

/* A caller-built group with its own arrays. */
typedef struct fx {
    int prompt[TOK_MAX];
    int tok[G][TOK_MAX];
    float lp[G][TOK_MAX];
    gbuf_completion comp[G];
    gbuf_group g;
} fx;

/* The group the tests log under seq s: its shape varies with s. */
static void fx_for_seq(fx *f, uint64_t s)
{
    memset(f, 0, sizeof *f);
    uint64_t p = s + 100;
    int n_prompt = 1 + (int)(s % 3);
    for (int k = 0; k < n_prompt; k++)
        f->prompt[k] = (int)(p * 7 + (uint64_t)k) % 1000;
    for (int i = 0; i < G; i++) {
        int n = 1 + (int)((s + (uint64_t)i) % 4);
        for (int k = 0; k < n; k++) {
            f->tok[i][k] = (int)((p * 13 + (uint64_t)(i * 3 + k)) % 1000);
            f->lp[i][k] = -0.125f * (float)(k + 1) - (float)i;
        }
        f->comp[i] = (gbuf_completion){.tokens = f->tok[i], .n_tokens = n, .logp = f->lp[i],
                                       .n_logp = n, .version = s / 2,
                                       .reward = 0.25 * i - (double)s};
    }
    f->g = (gbuf_group){.prompt = p, .lease_id = 5000 + s, .prompt_tokens = f->prompt,
                        .n_prompt = n_prompt, .completions = f->comp, .n_completions = G};
}

static uint64_t actor_for_seq(uint64_t s)
{
    return 70 + s % 2;
}

/* Bytes the record of seq s takes in the file, computed from the documented layout. */
static uint64_t rec_bytes(uint64_t s)
{
    fx f;
    fx_for_seq(&f, s);
    uint64_t n = 20 + 32 + 4 * (uint64_t)f.g.n_prompt;
    for (int i = 0; i < G; i++)
        n += 20 + 8 * (uint64_t)f.comp[i].n_tokens;
    return n;
}

static void assert_group_eq(const gbuf_group *got, const gbuf_group *want)
{
    assert_int_equal((long)got->prompt, (long)want->prompt);
    assert_int_equal((long)got->lease_id, (long)want->lease_id);
    assert_int_equal(got->n_prompt, want->n_prompt);
    assert_memory_equal(got->prompt_tokens, want->prompt_tokens,
                        (size_t)want->n_prompt * sizeof(int));
    assert_int_equal(got->n_completions, want->n_completions);
    for (int i = 0; i < want->n_completions; i++) {
        const gbuf_completion *x = &got->completions[i], *w = &want->completions[i];
        assert_int_equal(x->n_tokens, w->n_tokens);
        assert_int_equal(x->n_logp, w->n_tokens);
        assert_memory_equal(x->tokens, w->tokens, (size_t)w->n_tokens * sizeof(int));
        assert_memory_equal(x->logp, w->logp, (size_t)w->n_tokens * sizeof(float));
        assert_int_equal((long)x->version, (long)w->version);
        assert_true(x->reward == w->reward);
    }
}

/* Replay collector: checks each group against fx_for_seq and records the seqs seen. */
typedef struct seen {
    uint64_t seq[64];
    int n;
    int stop_at; /* return 42 on this call (1-based); 0 never */
} seen;

static int collect(void *ctx, uint64_t seq, uint64_t actor, const gbuf_group *g)
{
    seen *s = ctx;
    fx want;
    fx_for_seq(&want, seq);
    assert_int_equal((long)actor, (long)actor_for_seq(seq));
    assert_group_eq(g, &want.g);
    assert_true(s->n < 64);
    s->seq[s->n++] = seq;
    return s->n == s->stop_at ? 42 : 0;
}

static void expect_seqs(const alog *l, uint64_t after, const uint64_t *want, int n)
{
    seen s = {0};
    coh_err err;
    assert_int_equal(alog_replay(l, after, collect, &s, &err), COH_OK);
    assert_int_equal(s.n, n);
    for (int i = 0; i < n; i++)
        assert_int_equal((long)s.seq[i], (long)want[i]);
}

static alog *open_ok(const char *path, alog_open_report *rep)
{
    alog *l = NULL;
    coh_err err = {0};
    int rc = alog_open(path, &l, rep, &err);
    if (rc != COH_OK)
        fail_msg("alog_open(%s): %s: %s", path, coh_err_name(rc), err.msg);
    assert_non_null(l);
    return l;
}

static void append_ok(alog *l, uint64_t s)
{
    fx f;
    fx_for_seq(&f, s);
    coh_err err = {0};
    int rc = alog_append(l, s, actor_for_seq(s), &f.g, &err);
    if (rc != COH_OK)
        fail_msg("alog_append(seq %lu): %s: %s", (unsigned long)s, coh_err_name(rc), err.msg);
}

static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long sz = ftell(f);
    assert_true(sz >= 0);
    rewind(f);
    uint8_t *b = malloc((size_t)sz + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)sz, f), (size_t)sz);
    fclose(f);
    *n = (size_t)sz;
    return b;
}

static void spit(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static uint64_t file_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return (uint64_t)st.st_size;
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void wr32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Recompute the CRC of the record at buf[off] (payload length from its header). */
static void recrc(uint8_t *buf, size_t off)
{
    uint32_t len = rd32(buf + off + 4);
    uint32_t c = (uint32_t)crc32(crc32(0L, Z_NULL, 0), buf + off + 4, 12 + len);
    wr32(buf + off + 16 + len, c);
}

/* A log holding seqs 1..n; returns the offset of each record in off[0..n] (off[n] = end). */
static void make_log(const char *path, int n, uint64_t *off)
{
    alog *l = open_ok(path, NULL);
    off[0] = ALOG_HEADER_BYTES;
    for (int i = 0; i < n; i++) {
        append_ok(l, (uint64_t)i + 1);
        off[i + 1] = off[i] + rec_bytes((uint64_t)i + 1);
        assert_int_equal((long)alog_bytes(l), (long)off[i + 1]);
    }
    alog_close(l);
    assert_int_equal((long)file_size(path), (long)off[n]);
}

/* ---- tests ------------------------------------------------------------------------------ */

/* The bytes of a minimal log, against the documented layout written out by hand. */
static void test_byte_layout(void **state)
{
    tdir *t = *state;
    alog *l = open_ok(t->path, NULL);
    int prompt[1] = {5};
    int tok[2] = {9, -1};
    float lp[2] = {-0.5f, -2.0f};
    gbuf_completion c = {.tokens = tok, .n_tokens = 2, .logp = lp, .n_logp = 2, .version = 3,
                         .reward = 1.0};
    gbuf_group g = {.prompt = 4, .lease_id = 6, .prompt_tokens = prompt, .n_prompt = 1,
                    .completions = &c, .n_completions = 1};
    coh_err err;
    assert_int_equal(alog_append(l, 0x0102030405060708ULL, 2, &g, &err), COH_OK);
    /* payload 32 + 4 + 20 + 2*8 = 72 bytes; record 92; file 24 + 92 */
    assert_int_equal((long)alog_bytes(l), 116);
    alog_close(l);

    static const uint8_t want[] = {
        /* header */
        'C', 'O', 'H', 'A', 'L', 'O', 'G', '1', 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, /* header CRC: filled below */
        /* record: magic "AREC", length 72, seq */
        'A', 'R', 'E', 'C', 72, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1,
        /* actor 2, prompt 4, lease 6 */
        2, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0,
        /* n_prompt 1, n_completions 1, prompt token 5 */
        1, 0, 0, 0, 1, 0, 0, 0, 5, 0, 0, 0,
        /* completion: n_tokens 2, version 3, reward 1.0 = 0x3FF0000000000000 */
        2, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xF0, 0x3F,
        /* tokens 9, -1 */
        9, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        /* log-probs -0.5f = 0xBF000000, -2.0f = 0xC0000000 */
        0, 0, 0, 0xBF, 0, 0, 0, 0xC0,
    };
    _Static_assert(sizeof want == 116 - 4, "the layout above is 112 bytes before the CRC");
    size_t n;
    uint8_t *b = slurp(t->path, &n);
    assert_int_equal(n, 116);
    uint8_t w[116];
    memcpy(w, want, sizeof want);
    wr32(w + 20, (uint32_t)crc32(crc32(0L, Z_NULL, 0), w, 20));
    wr32(w + 24 + 88, (uint32_t)crc32(crc32(0L, Z_NULL, 0), w + 24 + 4, 12 + 72));
    assert_memory_equal(b, w, 116);
    free(b);

    alog_open_report rep;
    l = open_ok(t->path, &rep);
    assert_int_equal(rep.records, 1);
    assert_true(alog_last_seq(l) == 0x0102030405060708ULL);
    alog_close(l);
}

/* Replay callback for the hand-built group of test_byte_layout-like checks. */
typedef struct one {
    int calls;
    uint64_t seq, actor;
    gbuf_group g;
    int prompt0, tok1, n_tokens;
    float lp1;
    double reward;
    uint64_t version;
} one;

static int grab_one(void *ctx, uint64_t seq, uint64_t actor, const gbuf_group *g)
{
    one *o = ctx;
    o->calls++;
    o->seq = seq;
    o->actor = actor;
    o->g = *g;
    o->prompt0 = g->prompt_tokens[0];
    o->n_tokens = g->completions[0].n_tokens;
    o->tok1 = g->completions[0].tokens[1];
    o->lp1 = g->completions[0].logp[1];
    o->reward = g->completions[0].reward;
    o->version = g->completions[0].version;
    return 0;
}

static int grab_empty(void *ctx, uint64_t seq, uint64_t actor, const gbuf_group *g)
{
    one *o = ctx;
    o->calls++;
    o->seq = seq;
    o->actor = actor;
    o->g = *g;
    return 0;
}

/* Several groups round-trip; a hand-built one field by field. */
static void test_round_trip(void **state)
{
    tdir *t = *state;
    alog_open_report rep;
    alog *l = open_ok(t->path, &rep);
    assert_int_equal(rep.created, 1);
    append_ok(l, 1);
    append_ok(l, 2);
    append_ok(l, 5);
    assert_int_equal(alog_count(l), 3);
    assert_int_equal((long)alog_last_seq(l), 5);
    assert_int_equal((long)alog_bytes(l),
                     (long)(ALOG_HEADER_BYTES + rec_bytes(1) + rec_bytes(2) + rec_bytes(5)));
    /* seq 1: prompt 101, 2 prompt tokens {707, 708}; completion 1 has 3 tokens
     * {1313+3, 1313+4, 1313+5} mod 1000, log-probs {-1.125, -1.25, -1.375}, reward -0.75 */
    fx f;
    fx_for_seq(&f, 1);
    assert_int_equal(f.g.n_prompt, 2);
    assert_int_equal(f.prompt[0], 707);
    assert_int_equal(f.comp[1].n_tokens, 3);
    assert_int_equal(f.tok[1][2], 318);
    assert_true(f.lp[1][2] == -1.375f);
    assert_true(f.comp[1].reward == -0.75);
    uint64_t want[] = {1, 2, 5};
    expect_seqs(l, 0, want, 3);

    int prompt[2] = {11, 12};
    int tok[3] = {0, 255, 77};
    float lp[3] = {-0.0f, -1e-30f, -87.5f};
    gbuf_completion c = {.tokens = tok, .n_tokens = 3, .logp = lp, .n_logp = 3,
                         .version = 0xFFFFFFFFFFFFFFFFULL, .reward = -3.25};
    gbuf_group g = {.prompt = 99, .lease_id = 0xABCDEF0123456789ULL, .prompt_tokens = prompt,
                    .n_prompt = 2, .completions = &c, .n_completions = 1};
    coh_err err;
    assert_int_equal(alog_append(l, 6, 0xFEEDULL, &g, &err), COH_OK);
    one o = {0};
    assert_int_equal(alog_replay(l, 5, grab_one, &o, &err), COH_OK);
    assert_int_equal(o.calls, 1);
    assert_int_equal((long)o.seq, 6);
    assert_int_equal((long)o.actor, 0xFEED);
    assert_true(o.g.prompt == 99);
    assert_true(o.g.lease_id == 0xABCDEF0123456789ULL);
    assert_int_equal(o.g.n_prompt, 2);
    assert_int_equal(o.prompt0, 11);
    assert_int_equal(o.n_tokens, 3);
    assert_int_equal(o.tok1, 255);
    assert_true(o.lp1 == -1e-30f);
    assert_true(o.reward == -3.25);
    assert_true(o.version == 0xFFFFFFFFFFFFFFFFULL);

    /* the degenerate group (no prompt, no completions) is a 32-byte payload */
    gbuf_group empty = {.prompt = 1, .lease_id = 2};
    uint64_t bytes = alog_bytes(l);
    assert_int_equal(alog_append(l, 7, 3, &empty, &err), COH_OK);
    assert_int_equal((long)(alog_bytes(l) - bytes), 20 + 32);
    o = (one){0};
    assert_int_equal(alog_replay(l, 6, grab_empty, &o, &err), COH_OK);
    assert_int_equal(o.calls, 1);
    assert_int_equal((long)o.seq, 7);
    assert_int_equal((long)o.actor, 3);
    assert_true(o.g.prompt == 1 && o.g.lease_id == 2);
    assert_int_equal(o.g.n_prompt, 0);
    assert_int_equal(o.g.n_completions, 0);
    alog_close(l);
}

/* After N appends, a reopen finds them all, replays them, and appends continue. */
static void test_reopen_replay(void **state)
{
    tdir *t = *state;
    enum { N = 20 };
    uint64_t off[N + 1];
    make_log(t->path, N, off);

    alog_open_report rep;
    alog *l = open_ok(t->path, &rep);
    assert_int_equal(rep.created, 0);
    assert_int_equal(rep.records, N);
    assert_int_equal((long)rep.cut_bytes, 0);
    assert_string_equal(rep.cut_reason, "");
    assert_int_equal((long)rep.last_seq, N);
    assert_int_equal((long)rep.bytes, (long)off[N]);
    assert_int_equal(alog_count(l), N);
    assert_int_equal((long)alog_last_seq(l), N);
    uint64_t want[N + 1];
    for (int i = 0; i < N + 1; i++)
        want[i] = (uint64_t)i + 1;
    expect_seqs(l, 0, want, N);
    append_ok(l, N + 1);
    alog_close(l);

    l = open_ok(t->path, &rep);
    assert_int_equal(rep.records, N + 1);
    expect_seqs(l, 0, want, N + 1);
    alog_close(l);
}

/* The last record cut at every byte offset (as a crash mid-append leaves it) is cut off;
 * the records before it are intact; then the log takes appends again. */
static void test_torn_tail_every_offset(void **state)
{
    tdir *t = *state;
    uint64_t off[5];
    make_log(t->path, 4, off);
    size_t n;
    uint8_t *full = slurp(t->path, &n);
    uint64_t last = off[3], rec = off[4] - off[3];
    uint64_t want[] = {1, 2, 3, 4};

    for (uint64_t k = 0; k < rec; k++) {
        spit(t->path, full, (size_t)(last + k));
        alog_open_report rep;
        alog *l = open_ok(t->path, &rep);
        assert_int_equal(rep.records, 3);
        assert_int_equal((long)rep.cut_bytes, (long)k);
        if (k > 0) {
            assert_int_equal((long)rep.cut_offset, (long)last);
            char at[64];
            snprintf(at, sizeof at, "byte offset %lu", (unsigned long)last);
            HAS(rep.cut_reason, at);
        } else {
            assert_string_equal(rep.cut_reason, "");
        }
        assert_int_equal((long)alog_bytes(l), (long)last);
        assert_int_equal((long)file_size(t->path), (long)last);
        assert_int_equal((long)alog_last_seq(l), 3);
        expect_seqs(l, 0, want, 3);
        alog_close(l);
    }

    /* zeros where the last record should be (a size extended without its data) */
    uint8_t *z = calloc(1, (size_t)off[4]);
    assert_non_null(z);
    memcpy(z, full, (size_t)last);
    spit(t->path, z, (size_t)off[4]);
    free(z);
    alog_open_report rep;
    alog *l = open_ok(t->path, &rep);
    assert_int_equal(rep.records, 3);
    assert_int_equal((long)rep.cut_bytes, (long)rec);
    HAS(rep.cut_reason, "bad record magic");
    /* the cut log takes the lost seq again and reads back whole */
    append_ok(l, 4);
    alog_close(l);
    size_t n2;
    uint8_t *again = slurp(t->path, &n2);
    assert_int_equal(n2, n);
    assert_memory_equal(again, full, n);
    free(again);
    free(full);
}

/* A bit flipped in any byte of the last record: cut. In any byte of a middle record:
 * refused, naming its offset, nothing cut. */
static void test_bit_flips(void **state)
{
    tdir *t = *state;
    uint64_t off[5];
    make_log(t->path, 4, off);
    size_t n;
    uint8_t *full = slurp(t->path, &n);
    uint64_t want[] = {1, 2, 3};

    for (uint64_t p = off[3]; p < off[4]; p++) {
        full[p] ^= (uint8_t)(1u << (p % 8));
        spit(t->path, full, n);
        full[p] ^= (uint8_t)(1u << (p % 8));
        alog_open_report rep;
        alog *l = open_ok(t->path, &rep);
        assert_int_equal(rep.records, 3);
        assert_int_equal((long)rep.cut_offset, (long)off[3]);
        assert_int_equal((long)rep.cut_bytes, (long)(off[4] - off[3]));
        expect_seqs(l, 0, want, 3);
        alog_close(l);
    }

    char at[64];
    snprintf(at, sizeof at, "byte offset %lu", (unsigned long)off[1]);
    for (uint64_t p = off[1]; p < off[2]; p++) {
        full[p] ^= (uint8_t)(1u << (p % 8));
        spit(t->path, full, n);
        alog *l = (alog *)1;
        coh_err err = {0};
        alog_open_report rep;
        assert_int_equal(alog_open(t->path, &l, &rep, &err), COH_EFORMAT);
        assert_null(l);
        HAS(err.msg, at);
        HAS(err.msg, "restore");
        /* refused: the file is exactly as it was */
        size_t m;
        uint8_t *now = slurp(t->path, &m);
        assert_int_equal(m, n);
        assert_memory_equal(now, full, n);
        free(now);
        full[p] ^= (uint8_t)(1u << (p % 8));
    }
    free(full);
}

/* Records whose CRC is right but whose content is wrong cannot come from a torn write:
 * refused even as the last record. */
static void test_crc_valid_bad_content(void **state)
{
    tdir *t = *state;
    uint64_t off[3];
    make_log(t->path, 2, off);
    size_t n;
    uint8_t *full = slurp(t->path, &n);
    coh_err err;
    alog *l;

    /* last record's seq rewritten to 1 (not increasing) */
    uint8_t *b = malloc(n);
    assert_non_null(b);
    memcpy(b, full, n);
    b[off[1] + 8] = 1;
    recrc(b, off[1]);
    spit(t->path, b, n);
    assert_int_equal(alog_open(t->path, &l, NULL, &err), COH_EFORMAT);
    HAS(err.msg, "not greater than the previous seq 1");

    /* absurd prompt count in a CRC-valid payload: refused before anything is allocated */
    memcpy(b, full, n);
    wr32(b + off[1] + 16 + 24, 0x7FFFFFFFu);
    recrc(b, off[1]);
    spit(t->path, b, n);
    assert_int_equal(alog_open(t->path, &l, NULL, &err), COH_EFORMAT);
    HAS(err.msg, "prompt of 2147483647 tokens");

    /* one completion fewer: the payload has bytes left over */
    memcpy(b, full, n);
    wr32(b + off[1] + 16 + 28, G - 1);
    recrc(b, off[1]);
    spit(t->path, b, n);
    assert_int_equal(alog_open(t->path, &l, NULL, &err), COH_EFORMAT);
    HAS(err.msg, "left over");

    /* an absurd length field in the last record: a torn tail, cut without allocating */
    memcpy(b, full, n);
    wr32(b + off[1] + 4, 0xFFFFFFF0u);
    spit(t->path, b, n);
    alog_open_report rep;
    l = open_ok(t->path, &rep);
    assert_int_equal(rep.records, 1);
    HAS(rep.cut_reason, "exceeds the limit");
    alog_close(l);
    free(b);
    free(full);
}

/* seq must increase; a refused append changes nothing. */
static void test_seq_not_increasing(void **state)
{
    tdir *t = *state;
    alog *l = open_ok(t->path, NULL);
    fx f;
    fx_for_seq(&f, 0);
    coh_err err;
    assert_int_equal(alog_append(l, 0, 1, &f.g, &err), COH_EINVAL);
    HAS(err.msg, "seq 0");
    append_ok(l, 5);
    uint64_t bytes = alog_bytes(l);
    fx_for_seq(&f, 5);
    assert_int_equal(alog_append(l, 5, 1, &f.g, &err), COH_EINVAL);
    HAS(err.msg, "last seq 5");
    assert_int_equal(alog_append(l, 3, 1, &f.g, &err), COH_EINVAL);
    assert_int_equal(alog_count(l), 1);
    assert_int_equal((long)alog_bytes(l), (long)bytes);
    assert_int_equal((long)file_size(t->path), (long)bytes);
    append_ok(l, 6);
    uint64_t want[] = {5, 6};
    expect_seqs(l, 0, want, 2);

    /* malformed groups */
    fx_for_seq(&f, 7);
    f.comp[1].n_logp = f.comp[1].n_tokens + 1;
    assert_int_equal(alog_append(l, 7, 1, &f.g, &err), COH_EINVAL);
    HAS(err.msg, "completion 1");
    fx_for_seq(&f, 7);
    f.comp[2].tokens = NULL;
    assert_int_equal(alog_append(l, 7, 1, &f.g, &err), COH_EINVAL);
    assert_int_equal(alog_append(l, 7, 1, NULL, &err), COH_EINVAL);
    assert_int_equal(alog_count(l), 2);
    alog_close(l);
}

/* Replay from a seq; a callback's non-zero return stops it and comes back. */
static void test_replay_after_seq(void **state)
{
    tdir *t = *state;
    alog *l = open_ok(t->path, NULL);
    for (uint64_t s = 2; s <= 8; s += 2)
        append_ok(l, s);
    uint64_t all[] = {2, 4, 6, 8};
    expect_seqs(l, 0, all, 4);
    expect_seqs(l, 1, all, 4);
    expect_seqs(l, 4, all + 2, 2);
    expect_seqs(l, 5, all + 2, 2);
    expect_seqs(l, 7, all + 3, 1);
    expect_seqs(l, 8, NULL, 0);
    expect_seqs(l, 1000, NULL, 0);

    seen s = {.stop_at = 2};
    coh_err err;
    assert_int_equal(alog_replay(l, 0, collect, &s, &err), 42);
    assert_int_equal(s.n, 2);
    assert_int_equal(alog_replay(l, 0, NULL, NULL, &err), COH_EINVAL);
    alog_close(l);
}

/* Compaction keeps exactly the records after the seq, keeps the seq floor, survives reopen. */
static void test_compact(void **state)
{
    tdir *t = *state;
    enum { N = 10 };
    uint64_t off[N + 1];
    make_log(t->path, N, off);
    alog *l = open_ok(t->path, NULL);
    coh_err err;

    /* nothing to drop: the file is not rewritten */
    struct stat st0, st1;
    assert_int_equal(stat(t->path, &st0), 0);
    assert_int_equal(alog_compact(l, 0, &err), COH_OK);
    assert_int_equal(stat(t->path, &st1), 0);
    assert_true(st0.st_ino == st1.st_ino);

    assert_int_equal(alog_compact(l, 4, &err), COH_OK);
    assert_int_equal(alog_count(l), 6);
    assert_int_equal((long)alog_last_seq(l), N);
    uint64_t kept = ALOG_HEADER_BYTES + (off[N] - off[4]);
    assert_int_equal((long)alog_bytes(l), (long)kept);
    assert_int_equal((long)file_size(t->path), (long)kept);
    assert_int_equal(access(t->compact, F_OK), -1);
    uint64_t want[] = {5, 6, 7, 8, 9, 10, 11};
    expect_seqs(l, 0, want, 6);
    /* the handle appends to the new file */
    append_ok(l, 11);
    alog_close(l);

    alog_open_report rep;
    l = open_ok(t->path, &rep);
    assert_int_equal(rep.records, 7);
    assert_int_equal((long)rep.cut_bytes, 0);
    expect_seqs(l, 0, want, 7);

    /* everything dropped: the seq floor stays, also across a reopen */
    assert_int_equal(alog_compact(l, 11, &err), COH_OK);
    assert_int_equal(alog_count(l), 0);
    assert_int_equal((long)alog_last_seq(l), 11);
    assert_int_equal((long)alog_bytes(l), ALOG_HEADER_BYTES);
    fx f;
    fx_for_seq(&f, 11);
    assert_int_equal(alog_append(l, 11, 1, &f.g, &err), COH_EINVAL);
    alog_close(l);
    l = open_ok(t->path, &rep);
    assert_int_equal(rep.records, 0);
    assert_int_equal((long)alog_last_seq(l), 11);
    /* a floor beyond the last record (the checkpoint knows more than the log) */
    assert_int_equal(alog_compact(l, 20, &err), COH_OK);
    assert_int_equal((long)alog_last_seq(l), 20);
    alog_close(l);
    l = open_ok(t->path, &rep);
    assert_int_equal((long)rep.last_seq, 20);
    append_ok(l, 21);
    uint64_t w21[] = {21};
    expect_seqs(l, 0, w21, 1);
    alog_close(l);
}

/* A compaction interrupted before its rename: the old log is whole, the leftover goes. */
static void test_compact_interrupted(void **state)
{
    tdir *t = *state;
    uint64_t off[4];
    make_log(t->path, 3, off);
    spit(t->compact, "half a compacted log", 20);
    alog_open_report rep;
    alog *l = open_ok(t->path, &rep);
    assert_int_equal(rep.records, 3);
    assert_int_equal(access(t->compact, F_OK), -1);
    uint64_t want[] = {1, 2, 3};
    expect_seqs(l, 0, want, 3);
    alog_close(l);
}

/* Files of another kind, another version, a damaged or short header: refused, untouched. */
static void test_foreign_files(void **state)
{
    tdir *t = *state;
    coh_err err;
    alog *l = (alog *)1;
    const char *text = "step 1 loss 0.5\nstep 2 loss 0.4\nstep 3 loss 0.3\n";
    spit(t->path, text, strlen(text));
    assert_int_equal(alog_open(t->path, &l, NULL, &err), COH_EFORMAT);
    assert_null(l);
    HAS(err.msg, "not an acklog");
    assert_int_equal((long)file_size(t->path), (long)strlen(text));

    uint64_t off[2];
    unlink(t->path);
    make_log(t->path, 1, off);
    size_t n;
    uint8_t *full = slurp(t->path, &n);
    uint8_t *b = malloc(n);
    assert_non_null(b);

    memcpy(b, full, n);
    wr32(b + 8, 2); /* version 2, header CRC made right */
    wr32(b + 20, (uint32_t)crc32(crc32(0L, Z_NULL, 0), b, 20));
    spit(t->path, b, n);
    assert_int_equal(alog_open(t->path, &l, NULL, &err), COH_EUNSUPPORTED);
    HAS(err.msg, "version 2");

    memcpy(b, full, n);
    b[13] ^= 1; /* base_seq damaged */
    spit(t->path, b, n);
    assert_int_equal(alog_open(t->path, &l, NULL, &err), COH_EFORMAT);
    HAS(err.msg, "header CRC");

    spit(t->path, full, 10); /* magic whole, header short */
    assert_int_equal(alog_open(t->path, &l, NULL, &err), COH_EFORMAT);
    HAS(err.msg, "shorter than its 24-byte header");
    assert_int_equal((long)file_size(t->path), 10);

    unlink(t->path);
    assert_int_equal(mkdir(t->path, 0755), 0);
    assert_int_not_equal(alog_open(t->path, &l, NULL, &err), COH_OK);
    assert_null(l);
    assert_int_equal(rmdir(t->path), 0);

    assert_int_equal(alog_open(NULL, &l, NULL, &err), COH_EINVAL);
    free(b);
    free(full);
}

/* A fresh log, and an existing empty file, are empty logs. */
static void test_empty_log(void **state)
{
    tdir *t = *state;
    alog_open_report rep;
    alog *l = open_ok(t->path, &rep);
    assert_int_equal(rep.created, 1);
    assert_int_equal(rep.records, 0);
    assert_int_equal((long)rep.bytes, ALOG_HEADER_BYTES);
    assert_int_equal(alog_count(l), 0);
    assert_int_equal((long)alog_last_seq(l), 0);
    assert_int_equal((long)alog_bytes(l), ALOG_HEADER_BYTES);
    assert_int_equal((long)file_size(t->path), ALOG_HEADER_BYTES);
    expect_seqs(l, 0, NULL, 0);
    coh_err err;
    assert_int_equal(alog_compact(l, 0, &err), COH_OK);
    alog_close(l);
    /* no temporary names left in the folder */
    char tmp[200];
    snprintf(tmp, sizeof tmp, "%s.new.%ld", t->path, (long)getpid());
    assert_int_equal(access(tmp, F_OK), -1);

    l = open_ok(t->path, &rep);
    assert_int_equal(rep.created, 0);
    assert_int_equal(rep.records, 0);
    alog_close(l);

    spit(t->path, "", 0);
    l = open_ok(t->path, &rep);
    assert_int_equal(rep.created, 1);
    assert_int_equal((long)file_size(t->path), ALOG_HEADER_BYTES);
    append_ok(l, 1);
    alog_close(l);
    alog_close(NULL);
    assert_int_equal(alog_count(NULL), 0);
}

/* One owner at a time. */
static void test_lock(void **state)
{
    tdir *t = *state;
    alog *a = open_ok(t->path, NULL);
    alog *b = (alog *)1;
    coh_err err;
    assert_int_equal(alog_open(t->path, &b, NULL, &err), COH_ESTATE);
    assert_null(b);
    HAS(err.msg, "in use");
    /* still locked after a compaction swapped the file */
    append_ok(a, 1);
    append_ok(a, 2);
    assert_int_equal(alog_compact(a, 1, &err), COH_OK);
    assert_int_equal(alog_open(t->path, &b, NULL, &err), COH_ESTATE);
    alog_close(a);
    b = open_ok(t->path, NULL);
    assert_int_equal(alog_count(b), 1);
    alog_close(b);
}

/* A write that fails (file size limit) leaves the log exactly as it was. */
static void test_write_failure_rolls_back(void **state)
{
    tdir *t = *state;
    uint64_t off[3];
    make_log(t->path, 2, off);
    alog *l = open_ok(t->path, NULL);
    size_t n;
    uint8_t *before = slurp(t->path, &n);

    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    lim = old;
    lim.rlim_cur = (rlim_t)(off[2] + 10); /* room for 10 bytes of the next record */
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    fx f;
    fx_for_seq(&f, 3);
    coh_err err;
    int rc = alog_append(l, 3, actor_for_seq(3), &f.g, &err);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, prev);
    assert_int_equal(rc, COH_EIO);
    HAS(err.msg, "NOT logged");
    HAS(err.msg, "cut back");
    assert_int_equal(alog_count(l), 2);
    assert_int_equal((long)alog_last_seq(l), 2);
    assert_int_equal((long)alog_bytes(l), (long)off[2]);
    size_t m;
    uint8_t *after = slurp(t->path, &m);
    assert_int_equal(m, n);
    assert_memory_equal(after, before, n);
    free(after);
    free(before);

    append_ok(l, 3);
    alog_close(l);
    alog_open_report rep;
    l = open_ok(t->path, &rep);
    assert_int_equal(rep.records, 3);
    assert_int_equal((long)rep.cut_bytes, 0);
    uint64_t want[] = {1, 2, 3};
    expect_seqs(l, 0, want, 3);
    alog_close(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_byte_layout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_replay, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail_every_offset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bit_flips, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crc_valid_bad_content, setup, teardown),
        cmocka_unit_test_setup_teardown(test_seq_not_increasing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replay_after_seq, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compact_interrupted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_foreign_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_log, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_failure_rolls_back, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
