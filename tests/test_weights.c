/* test_weights.c - chunked, checksummed, resumable weight transfer (common/weights.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "model.h"
#include "weights.h"

static model *policy(uint64_t seed)
{
    model_config c = model_config_default(98);
    model *m = NULL;
    coh_err err;
    assert_int_equal(model_create(&c, &m, &err), COH_OK);
    model_init_random(m, seed);
    return m;
}

static wt_recv *receiver_for(const wt_snapshot *s)
{
    wt_recv *r = NULL;
    coh_err err;
    assert_int_equal(wt_recv_create(wt_snapshot_version(s), wt_snapshot_size(s),
                                    wt_snapshot_crc(s), wt_snapshot_config(s), &r, &err),
                     COH_OK);
    return r;
}

/* Move chunks of `chunk` bytes from s into r, starting at r's offset, at most `count`. */
static void transfer(const wt_snapshot *s, wt_recv *r, size_t chunk, int count)
{
    coh_err err;
    for (int i = 0; i < count && !wt_recv_complete(r); i++) {
        const void *d;
        size_t n;
        uint32_t crc;
        assert_int_equal(wt_snapshot_chunk(s, wt_recv_offset(r), chunk, &d, &n, &crc, &err),
                         COH_OK);
        assert_int_equal(wt_recv_add(r, wt_recv_offset(r), d, n, crc, &err), COH_OK);
    }
}

static void test_roundtrip_any_chunk_size(void **state)
{
    (void)state;
    model *m = policy(3);
    wt_snapshot *s = NULL;
    coh_err err;
    assert_int_equal(wt_snapshot_make(m, 7, &s, &err), COH_OK);
    size_t sizes[] = {1000, 4096, 65536, 1 << 20};
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        wt_recv *r = receiver_for(s);
        transfer(s, r, sizes[k], 1 << 30);
        assert_true(wt_recv_complete(r));
        model *back = NULL;
        if (wt_recv_finish(r, &back, &err))
            fail_msg("%s", err.msg);
        assert_memory_equal(model_params(back), model_params(m),
                            model_num_params(m) * sizeof(float));
        model_destroy(back);
        wt_recv_destroy(r);
    }
    wt_snapshot_destroy(s);
    model_destroy(m);
}

/* A download broken after a few chunks resumes at wt_recv_offset() and ends identical. */
static void test_resume(void **state)
{
    (void)state;
    model *m = policy(4);
    wt_snapshot *s = NULL;
    coh_err err;
    assert_int_equal(wt_snapshot_make(m, 1, &s, &err), COH_OK);
    wt_recv *r = receiver_for(s);
    transfer(s, r, 10000, 3);
    assert_int_equal(wt_recv_offset(r), 30000);
    model *back = NULL;
    assert_int_equal(wt_recv_finish(r, &back, &err), COH_ESTATE); /* incomplete: refused */
    assert_null(back);
    assert_non_null(strstr(err.msg, "incomplete"));
    transfer(s, r, 77777, 1 << 30); /* resumed with another chunk size */
    assert_int_equal(wt_recv_finish(r, &back, &err), COH_OK);
    assert_memory_equal(model_params(back), model_params(m), model_num_params(m) * sizeof(float));
    model_destroy(back);
    wt_recv_destroy(r);
    wt_snapshot_destroy(s);
    model_destroy(m);
}

static void test_bad_chunks_are_refused(void **state)
{
    (void)state;
    model *m = policy(5);
    wt_snapshot *s = NULL;
    coh_err err;
    assert_int_equal(wt_snapshot_make(m, 2, &s, &err), COH_OK);
    wt_recv *r = receiver_for(s);
    const void *d;
    size_t n;
    uint32_t crc;
    assert_int_equal(wt_snapshot_chunk(s, 0, 4096, &d, &n, &crc, &err), COH_OK);
    /* a gap */
    assert_int_equal(wt_recv_add(r, 4096, d, n, crc, &err), COH_EINVAL);
    assert_non_null(strstr(err.msg, "resume at 0"));
    /* damaged in transit */
    unsigned char *copy = malloc(n);
    memcpy(copy, d, n);
    copy[100] ^= 1;
    assert_int_equal(wt_recv_add(r, 0, copy, n, crc, &err), COH_EFORMAT);
    assert_non_null(strstr(err.msg, "CRC"));
    assert_int_equal(wt_recv_offset(r), 0); /* nothing taken */
    free(copy);
    /* the good chunk, then an overlap */
    assert_int_equal(wt_recv_add(r, 0, d, n, crc, &err), COH_OK);
    assert_int_equal(wt_recv_add(r, 0, d, n, crc, &err), COH_EINVAL);
    /* running past the end */
    size_t total = wt_snapshot_size(s);
    unsigned char *big = calloc(total, 1);
    assert_int_equal(wt_recv_add(r, 4096, big, total, wt_crc32(0, big, total), &err), COH_ERANGE);
    free(big);
    assert_int_equal(wt_recv_offset(r), 4096);
    /* offset past the end on the sender */
    assert_int_equal(wt_snapshot_chunk(s, total + 1, 10, &d, &n, &crc, &err), COH_ERANGE);
    assert_int_equal(wt_snapshot_chunk(s, total, 10, &d, &n, &crc, &err), COH_OK);
    assert_int_equal(n, 0);
    wt_recv_destroy(r);

    /* a whole-blob CRC that does not match (e.g. a mixed-up version) is refused at the end */
    wt_recv *bad = NULL;
    assert_int_equal(wt_recv_create(2, wt_snapshot_size(s), wt_snapshot_crc(s) ^ 1,
                                    wt_snapshot_config(s), &bad, &err),
                     COH_OK);
    transfer(s, bad, 1 << 20, 1 << 30);
    model *back = NULL;
    assert_int_equal(wt_recv_finish(bad, &back, &err), COH_EFORMAT);
    assert_null(back);
    wt_recv_destroy(bad);
    /* nonsense announcements */
    assert_int_equal(wt_recv_create(3, 4, 0, "{}", &bad, &err), COH_ERANGE);
    assert_int_equal(wt_recv_create(3, 100, 0, NULL, &bad, &err), COH_EINVAL);
    wt_snapshot_destroy(s);
    model_destroy(m);
}

static uint64_t rng_next(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* wt_crc32 (PCLMUL folding where the CPU has it) equals zlib's crc32 for every length,
 * alignment and starting CRC. */
static void test_crc32_matches_zlib(void **state)
{
    (void)state;
    size_t cap = 600000;
    unsigned char *buf = malloc(cap);
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < cap; i++)
        buf[i] = (unsigned char)rng_next(&x);
    print_message("wt_crc32 implementation: %s\n", wt_crc32_impl());
    for (int t = 0; t < 4000; t++) {
        size_t off = rng_next(&x) % 64;
        size_t len;
        switch (t % 4) {
        case 0: len = rng_next(&x) % 200; break;
        case 1: len = rng_next(&x) % 4096; break;
        case 2: len = rng_next(&x) % 70000; break;
        default: len = rng_next(&x) % (cap - 64); break;
        }
        uint32_t seed = t % 3 ? (uint32_t)rng_next(&x) : 0;
        uint32_t want = (uint32_t)crc32(seed, buf + off, (uInt)len);
        uint32_t got = wt_crc32(seed, buf + off, len);
        if (want != got)
            fail_msg("crc mismatch: off %zu len %zu seed %08x: zlib %08x, ours %08x", off, len,
                     seed, want, got);
        /* split in two: continuing from a CRC */
        size_t cut = len ? rng_next(&x) % len : 0;
        assert_int_equal(wt_crc32(wt_crc32(seed, buf + off, cut), buf + off + cut, len - cut),
                         want);
    }
    /* known answer: "123456789" -> 0xCBF43926 */
    assert_int_equal(wt_crc32(0, "123456789", 9), 0xCBF43926u);
    unsigned char zeros[256] = {0};
    assert_int_equal(wt_crc32(0, zeros, sizeof zeros), (uint32_t)crc32(0, zeros, sizeof zeros));
    wt_crc32_force_zlib(1);
    assert_string_equal(wt_crc32_impl(), "zlib");
    assert_int_equal(wt_crc32(7, buf, 100000), (uint32_t)crc32(7, buf, 100000));
    wt_crc32_force_zlib(0);
    free(buf);
}

/* Chunk CRCs come from the per-block table: equal to a direct CRC at any offset and length. */
static void test_chunk_crc_from_table(void **state)
{
    (void)state;
    model_config c = model_config_default(98);
    c.dim = 128;
    c.hidden_dim = 256;
    model *m = NULL;
    coh_err err;
    assert_int_equal(model_create(&c, &m, &err), COH_OK);
    model_init_random(m, 9);
    wt_snapshot *s = NULL;
    assert_int_equal(wt_snapshot_make(m, 1, &s, &err), COH_OK);
    size_t size = wt_snapshot_size(s);
    assert_true(size > 3 * WT_CRC_BLOCK);
    const unsigned char *blob = wt_snapshot_blob(s);
    assert_int_equal(wt_snapshot_crc(s), (uint32_t)crc32(0, blob, (uInt)size));
    uint64_t x = 12345;
    for (int t = 0; t < 300; t++) {
        size_t off = t % 3 == 0 ? (rng_next(&x) % (size / WT_CRC_BLOCK)) * WT_CRC_BLOCK
                                : rng_next(&x) % size;
        size_t max = t % 2 ? WT_CRC_BLOCK * (1 + rng_next(&x) % 5) : 1 + rng_next(&x) % size;
        const void *d;
        size_t n;
        uint32_t crc;
        assert_int_equal(wt_snapshot_chunk(s, off, max, &d, &n, &crc, &err), COH_OK);
        assert_ptr_equal(d, blob + off);
        assert_int_equal(crc, (uint32_t)crc32(0, blob + off, (uInt)n));
    }
    /* the reference count keeps the blob alive */
    wt_snapshot *again = wt_snapshot_retain(s);
    wt_snapshot_destroy(s);
    assert_int_equal(wt_snapshot_size(again), size);
    wt_snapshot_destroy(again);
    model_destroy(m);
}

/* A chunk given as several pieces lands straight in the buffer; a damaged piece is refused
 * and leaves the receiver where it was. */
static void test_pieces(void **state)
{
    (void)state;
    model *m = policy(6);
    wt_snapshot *s = NULL;
    coh_err err;
    assert_int_equal(wt_snapshot_make(m, 3, &s, &err), COH_OK);
    wt_recv *r = receiver_for(s);
    size_t size = wt_snapshot_size(s), step = 50001;
    for (size_t off = 0; off < size; off += step) {
        const void *d;
        size_t n;
        uint32_t crc;
        assert_int_equal(wt_snapshot_chunk(s, off, step, &d, &n, &crc, &err), COH_OK);
        const unsigned char *p = d;
        wt_piece pc[3] = {{p, n / 3}, {p + n / 3, 0}, {p + n / 3, n - n / 3}};
        unsigned char *bad = malloc(n);
        memcpy(bad, p + n / 3, n - n / 3);
        bad[0] ^= 0x80;
        wt_piece pb[2] = {{p, n / 3}, {bad, n - n / 3}};
        assert_int_equal(wt_recv_add_pieces(r, off, pb, 2, crc, &err), COH_EFORMAT);
        assert_int_equal(wt_recv_offset(r), off);
        free(bad);
        assert_int_equal(wt_recv_add_pieces(r, off, pc, 3, crc, &err), COH_OK);
    }
    model *back = NULL;
    assert_int_equal(wt_recv_finish(r, &back, &err), COH_OK);
    assert_memory_equal(model_params(back), model_params(m), model_num_params(m) * sizeof(float));
    model_destroy(back);
    wt_recv_destroy(r);
    wt_snapshot_destroy(s);
    model_destroy(m);
}

static float bits_f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* float -> bfloat16: round to nearest, ties to even; inf stays inf; NaN stays NaN. */
static void test_bf16_rounding(void **state)
{
    (void)state;
    assert_int_equal(wt_f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(wt_f32_to_bf16(-2.0f), 0xc000);
    assert_int_equal(wt_f32_to_bf16(bits_f(0x3f808000u)), 0x3f80); /* tie, even below */
    assert_int_equal(wt_f32_to_bf16(bits_f(0x3f818000u)), 0x3f82); /* tie, odd: up */
    assert_int_equal(wt_f32_to_bf16(bits_f(0x3f808001u)), 0x3f81); /* above the tie */
    assert_int_equal(wt_f32_to_bf16(bits_f(0x3f807fffu)), 0x3f80); /* below the tie */
    assert_int_equal(wt_f32_to_bf16(bits_f(0x7f800000u)), 0x7f80); /* inf */
    assert_int_equal(wt_f32_to_bf16(bits_f(0xff800000u)), 0xff80); /* -inf */
    assert_int_equal(wt_f32_to_bf16(bits_f(0x7f7fffffu)), 0x7f80); /* max rounds to inf */
    uint16_t nan = wt_f32_to_bf16(bits_f(0x7f800001u));         /* a NaN with a low payload */
    assert_true((nan & 0x7f80) == 0x7f80 && (nan & 0x7f) != 0);
    assert_int_equal(wt_f32_to_bf16(bits_f(0x00000001u)), 0x0000); /* tiny subnormal */
}

/* A BF16 variant: half the data bytes; the receiver widens it to the F32 file of the
 * rounded weights (its metadata CRC consistent, so ckpt_from_buffer accepts it). */
static void test_bf16_variant_roundtrip(void **state)
{
    (void)state;
    model *m = policy(11);
    wt_snapshot *s = NULL, *b = NULL;
    coh_err err;
    assert_int_equal(wt_snapshot_make(m, 4, &s, &err), COH_OK);
    assert_int_equal(wt_snapshot_make_bf16(s, &b, &err), COH_OK);
    assert_int_equal(wt_snapshot_wire(b), WT_WIRE_BF16);
    assert_int_equal(wt_snapshot_version(b), 4);
    size_t params = model_num_params(m) * 4;
    assert_int_equal(wt_snapshot_size(s) - wt_snapshot_size(b), params / 2);
    assert_int_equal(wt_snapshot_crc(b), (uint32_t)crc32(0, wt_snapshot_blob(b),
                                                          (uInt)wt_snapshot_size(b)));
    /* no BF16 of a BF16 variant */
    wt_snapshot *bb = NULL;
    assert_int_equal(wt_snapshot_make_bf16(b, &bb, &err), COH_EINVAL);
    wt_recv *r = receiver_for(b);
    wt_recv_set_bf16(r);
    transfer(b, r, 70000, 1 << 30);
    model *back = NULL;
    if (wt_recv_finish(r, &back, &err))
        fail_msg("%s", err.msg);
    const float *w = model_params_const(m), *g = model_params_const(back);
    for (size_t i = 0; i < model_num_params(m); i++) {
        float want = bits_f((uint32_t)wt_f32_to_bf16(w[i]) << 16);
        assert_memory_equal(&g[i], &want, 4);
    }
    size_t flen = 0;
    void *f32 = wt_recv_take_f32(r, &flen, NULL);
    assert_non_null(f32);
    assert_int_equal(flen, wt_snapshot_size(s));
    free(f32);
    model_destroy(back);
    wt_recv_destroy(r);
    wt_snapshot_destroy(b);
    wt_snapshot_destroy(s);
    model_destroy(m);
}

/* A delta carries only the tensors that changed; the receiver patches its base and checks
 * the whole CRC; a wrong base or bad ranges are refused. */
static void test_delta_variant(void **state)
{
    (void)state;
    model *m = policy(12);
    wt_snapshot *v1 = NULL, *v2 = NULL, *d = NULL;
    coh_err err;
    assert_int_equal(wt_snapshot_make(m, 1, &v1, &err), COH_OK);
    size_t np = model_num_params(m);
    for (size_t i = np / 2; i < np; i++)
        model_params(m)[i] *= 1.5f;
    assert_int_equal(wt_snapshot_make(m, 2, &v2, &err), COH_OK);
    assert_int_equal(wt_snapshot_make_delta(v1, v2, &d, &err), COH_OK);
    assert_int_equal(wt_snapshot_wire(d), WT_WIRE_DELTA);
    assert_int_equal(wt_snapshot_delta_base(d), 1);
    assert_int_equal(wt_snapshot_delta_result_size(d), wt_snapshot_size(v2));
    assert_int_equal(wt_snapshot_delta_result_crc(d), wt_snapshot_crc(v2));
    assert_true(wt_snapshot_size(d) < wt_snapshot_size(v2) * 3 / 4);
    const char *const *names;
    size_t nn = wt_snapshot_delta_names(d, &names);
    assert_true(nn >= 1);
    const wt_range *rg;
    size_t nr = wt_snapshot_delta_ranges(d, &rg);
    assert_int_equal(nr, nn + 1); /* the header + every changed tensor */
    assert_int_equal(rg[0].off, 0);
    for (size_t i = 1; i < nr; i++)
        assert_true(rg[i].off >= rg[i - 1].off + rg[i - 1].len);

    /* the receiver holds v1's blob */
    wt_recv *r = receiver_for(d);
    assert_int_equal(wt_recv_set_delta(r, wt_snapshot_blob(v1), wt_snapshot_size(v1), rg, nr,
                                       wt_snapshot_size(v2), wt_snapshot_crc(v2), &err),
                     COH_OK);
    transfer(d, r, 50000, 1 << 30);
    model *back = NULL;
    if (wt_recv_finish(r, &back, &err))
        fail_msg("%s", err.msg);
    assert_memory_equal(model_params_const(back), model_params_const(m), np * sizeof(float));
    model_destroy(back);
    wt_recv_destroy(r);

    /* a base that is not v1: the patched result fails the whole CRC */
    unsigned char *wrong = malloc(wt_snapshot_size(v1));
    memcpy(wrong, wt_snapshot_blob(v1), wt_snapshot_size(v1));
    wrong[wt_snapshot_size(v1) / 4] ^= 1; /* in a frozen tensor */
    r = receiver_for(d);
    assert_int_equal(wt_recv_set_delta(r, wrong, wt_snapshot_size(v1), rg, nr,
                                       wt_snapshot_size(v2), wt_snapshot_crc(v2), &err),
                     COH_OK);
    transfer(d, r, 1 << 20, 1 << 30);
    assert_int_equal(wt_recv_finish(r, &back, &err), COH_EFORMAT);
    assert_non_null(strstr(err.msg, "delta"));
    assert_null(wt_recv_take_f32(r, &np, NULL));
    wt_recv_destroy(r);
    free(wrong);

    /* bad ranges and sizes */
    r = receiver_for(d);
    wt_range over[2] = {{0, 100}, {50, 10}};
    assert_int_equal(wt_recv_set_delta(r, wt_snapshot_blob(v1), wt_snapshot_size(v1), over, 2,
                                       wt_snapshot_size(v2), 0, &err),
                     COH_EINVAL);
    wt_range past[1] = {{wt_snapshot_size(v2) - 4, 8}};
    assert_int_equal(wt_recv_set_delta(r, wt_snapshot_blob(v1), wt_snapshot_size(v1), past, 1,
                                       wt_snapshot_size(v2), 0, &err),
                     COH_EINVAL);
    assert_int_equal(wt_recv_set_delta(r, wt_snapshot_blob(v1), wt_snapshot_size(v1) - 1, rg,
                                       nr, wt_snapshot_size(v2), 0, &err),
                     COH_ERANGE);
    wt_range few[1] = {{0, 8}};
    assert_int_equal(wt_recv_set_delta(r, wt_snapshot_blob(v1), wt_snapshot_size(v1), few, 1,
                                       wt_snapshot_size(v2), 0, &err),
                     COH_EINVAL); /* does not add up to the stream's total */
    wt_recv_destroy(r);

    /* another layout: no delta */
    model_config c = model_config_default(98);
    c.n_layers += 1;
    model *m3 = NULL;
    wt_snapshot *v3 = NULL, *d3 = NULL;
    assert_int_equal(model_create(&c, &m3, &err), COH_OK);
    model_init_random(m3, 1);
    assert_int_equal(wt_snapshot_make(m3, 3, &v3, &err), COH_OK);
    assert_int_equal(wt_snapshot_make_delta(v2, v3, &d3, &err), COH_EUNSUPPORTED);
    assert_null(d3);
    /* identical versions: only the header travels */
    assert_int_equal(wt_snapshot_make_delta(v2, v2, &d3, &err), COH_OK);
    assert_int_equal(wt_snapshot_delta_ranges(d3, &rg), 1);
    wt_snapshot_destroy(d3);
    wt_snapshot_destroy(v3);
    model_destroy(m3);
    wt_snapshot_destroy(d);
    wt_snapshot_destroy(v2);
    wt_snapshot_destroy(v1);
    model_destroy(m);
}

/* Receivers through a wt_pool: a version written into the buffer the previous one gave back,
 * a bigger buffer used for a smaller version, a fresh one when none is big enough; the
 * pool's sizing rules and its bound. */
static void test_pool_reuse(void **state)
{
    (void)state;
    coh_err err;
    wt_pool *pool = NULL;
    assert_int_equal(wt_pool_create(&pool, &err), COH_OK);
    model *m1 = policy(3), *m2 = policy(4);
    wt_snapshot *v1 = NULL, *v2 = NULL;
    assert_int_equal(wt_snapshot_make(m1, 1, &v1, &err), COH_OK);
    assert_int_equal(wt_snapshot_make(m2, 2, &v2, &err), COH_OK);
    size_t size = wt_snapshot_size(v1);
    const wt_snapshot *order[] = {v1, v2, v1};
    const model *want[] = {m1, m2, m1};
    void *first = NULL;
    for (int k = 0; k < 3; k++) {
        const wt_snapshot *s = order[k];
        wt_recv *r = NULL;
        assert_int_equal(wt_recv_create_pooled(wt_snapshot_version(s), wt_snapshot_size(s),
                                               wt_snapshot_crc(s), wt_snapshot_config(s), pool,
                                               &r, &err),
                         COH_OK);
        transfer(s, r, 100000, 1 << 30);
        model *got = NULL;
        assert_int_equal(wt_recv_finish(r, &got, &err), COH_OK);
        assert_memory_equal(model_params_const(got), model_params_const(want[k]),
                            model_num_params(got) * sizeof(float));
        model_destroy(got);
        size_t len = 0, cap = 0;
        void *blob = wt_recv_take_f32(r, &len, &cap);
        assert_non_null(blob);
        assert_int_equal(len, size);
        if (k == 0)
            first = blob;
        else
            assert_ptr_equal(blob, first); /* the same buffer, version after version */
        wt_pool_put(pool, blob, cap);
        wt_recv_destroy(r);
    }
    wt_pool_stats st;
    wt_pool_get_stats(pool, &st);
    assert_int_equal(st.fresh, 1);
    assert_int_equal(st.reused, 2);
    assert_int_equal(st.buffers, 1);
    assert_int_equal(st.held_bytes, size);

    /* a bigger buffer full of garbage serves a smaller version; the model is exact */
    size_t cap = 0;
    void *big = wt_pool_get(pool, size, &cap); /* take the one buffer out */
    assert_ptr_equal(big, first);
    wt_pool_put(pool, big, cap);
    void *huge = malloc(size + size / 5);
    assert_non_null(huge);
    memset(huge, 0xab, size + size / 5);
    wt_pool_put(pool, huge, size + size / 5); /* pool: {size, 1.2 size} */
    void *got_buf = wt_pool_get(pool, size + 1, &cap); /* only the bigger one fits */
    assert_ptr_equal(got_buf, huge);
    assert_int_equal(cap, size + size / 5);
    wt_pool_put(pool, got_buf, cap);
    /* the smallest fitting buffer is chosen */
    got_buf = wt_pool_get(pool, size, &cap);
    assert_ptr_equal(got_buf, first);
    wt_pool_put(pool, got_buf, cap);
    /* far too big for the request (more than a third over): a fresh small buffer instead */
    wt_pool_get_stats(pool, &st);
    size_t fresh = st.fresh;
    got_buf = wt_pool_get(pool, size / 2, &cap);
    assert_ptr_not_equal(got_buf, first);
    assert_ptr_not_equal(got_buf, huge);
    assert_int_equal(cap, size / 2);
    wt_pool_get_stats(pool, &st);
    assert_int_equal(st.fresh, fresh + 1);
    /* a full pool keeps its largest buffers: the small one is freed */
    wt_pool_put(pool, got_buf, cap);
    wt_pool_get_stats(pool, &st);
    assert_int_equal(st.buffers, WT_POOL_MAX);
    assert_int_equal(st.held_bytes, size + size + size / 5);
    /* a version bigger than every pooled buffer: a fresh buffer, then both kept (the
     * smaller pooled one is dropped) */
    model_config c = model_config_default(98);
    c.n_layers += 2;
    model *m3 = NULL;
    wt_snapshot *v3 = NULL;
    assert_int_equal(model_create(&c, &m3, &err), COH_OK);
    model_init_random(m3, 9);
    assert_int_equal(wt_snapshot_make(m3, 3, &v3, &err), COH_OK);
    assert_true(wt_snapshot_size(v3) > size + size / 5);
    wt_recv *r = NULL;
    assert_int_equal(wt_recv_create_pooled(3, wt_snapshot_size(v3), wt_snapshot_crc(v3),
                                           wt_snapshot_config(v3), pool, &r, &err),
                     COH_OK);
    transfer(v3, r, 65536, 1 << 30);
    model *got = NULL;
    assert_int_equal(wt_recv_finish(r, &got, &err), COH_OK);
    assert_memory_equal(model_params_const(got), model_params_const(m3),
                        model_num_params(got) * sizeof(float));
    model_destroy(got);
    wt_recv_destroy(r);
    wt_pool_get_stats(pool, &st);
    assert_int_equal(st.buffers, WT_POOL_MAX);
    assert_int_equal(st.held_bytes, wt_snapshot_size(v3) + size + size / 5);
    /* a receiver refused (bad total CRC) still gives its buffer back */
    assert_int_equal(wt_recv_create_pooled(3, wt_snapshot_size(v3), wt_snapshot_crc(v3) ^ 1,
                                           wt_snapshot_config(v3), pool, &r, &err),
                     COH_OK);
    transfer(v3, r, 65536, 1 << 30);
    assert_int_equal(wt_recv_finish(r, &got, &err), COH_EFORMAT);
    assert_null(got);
    wt_recv_destroy(r);
    wt_pool_get_stats(pool, &st);
    assert_int_equal(st.buffers, WT_POOL_MAX);
    assert_int_equal(st.held_bytes, wt_snapshot_size(v3) + size + size / 5);
    /* no pool: plain allocations */
    got_buf = wt_pool_get(NULL, 100, &cap);
    assert_non_null(got_buf);
    assert_int_equal(cap, 100);
    wt_pool_put(NULL, got_buf, cap);
    wt_pool_get_stats(NULL, &st);
    assert_int_equal(st.fresh, 0);
    wt_snapshot_destroy(v3);
    model_destroy(m3);
    wt_snapshot_destroy(v2);
    wt_snapshot_destroy(v1);
    model_destroy(m2);
    model_destroy(m1);
    wt_pool_destroy(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_any_chunk_size),
        cmocka_unit_test(test_resume),
        cmocka_unit_test(test_bad_chunks_are_refused),
        cmocka_unit_test(test_crc32_matches_zlib),
        cmocka_unit_test(test_chunk_crc_from_table),
        cmocka_unit_test(test_pieces),
        cmocka_unit_test(test_bf16_rounding),
        cmocka_unit_test(test_bf16_variant_roundtrip),
        cmocka_unit_test(test_delta_variant),
        cmocka_unit_test(test_pool_reuse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
