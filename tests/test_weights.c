/* test_weights.c - chunked, checksummed, resumable weight transfer (common/weights.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_any_chunk_size),
        cmocka_unit_test(test_resume),
        cmocka_unit_test(test_bad_chunks_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
