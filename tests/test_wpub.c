/* test_wpub.c - the learner's published weight versions (learner/wpub.c).
 *
 * Real snapshots (wt_snapshot_make of small random models, one seed per version so every
 * blob differs): before any publish nothing can be acquired; after publishing v0, v1, v2 the
 * current and the previous version can be acquired, older ones are gone, newer ones do not
 * exist yet. A download's reference keeps its snapshot alive across later publishes and even
 * across wpub_destroy until it is released (the ASan build proves there is no use after free
 * and LeakSanitizer that the last release frees it).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "weights.h"
#include "wpub.h"

#define HAS(msg, s)                                                                          \
    do {                                                                                     \
        if (!strstr((msg), (s)))                                                             \
            fail_msg("message \"%s\" lacks \"%s\"", (msg), (s));                              \
    } while (0)

#define NV 5

/* What a snapshot looked like when it was made. */
typedef struct facts {
    int64_t version;
    size_t size;
    uint32_t crc;
    uint32_t chunk_crc; /* of the first 4096 bytes */
    char config[64];    /* the first bytes of config.json */
} facts;

static facts made[NV];

static wt_snapshot *snapshot(int64_t version)
{
    model_config c = model_config_default(98);
    c.dim = 16;
    c.hidden_dim = 32;
    c.n_layers = 1;
    c.n_heads = 2;
    c.n_kv_heads = 2;
    c.max_seq = 16;
    model *m = NULL;
    coh_err err;
    if (model_create(&c, &m, &err) != COH_OK)
        fail_msg("%s", err.msg);
    model_init_random(m, 100 + (uint64_t)version);
    wt_snapshot *s = NULL;
    if (wt_snapshot_make(m, version, &s, &err) != COH_OK)
        fail_msg("%s", err.msg);
    model_destroy(m);
    facts *f = &made[version];
    f->version = version;
    f->size = wt_snapshot_size(s);
    f->crc = wt_snapshot_crc(s);
    const void *d;
    size_t n;
    assert_int_equal(wt_snapshot_chunk(s, 0, 4096, &d, &n, &f->chunk_crc, &err), COH_OK);
    memset(f->config, 0, sizeof f->config);
    strncpy(f->config, wt_snapshot_config(s), sizeof f->config - 1);
    return s;
}

/* s is still the intact snapshot of `version`. */
static void intact(const wt_snapshot *s, int64_t version)
{
    const facts *f = &made[version];
    assert_non_null(s);
    assert_int_equal(wt_snapshot_version(s), version);
    assert_int_equal(wt_snapshot_size(s), f->size);
    assert_int_equal(wt_snapshot_crc(s), f->crc);
    assert_int_equal(strncmp(wt_snapshot_config(s), f->config, strlen(f->config)), 0);
    const void *d;
    size_t n;
    uint32_t crc;
    coh_err err;
    assert_int_equal(wt_snapshot_chunk(s, 0, 4096, &d, &n, &crc, &err), COH_OK);
    assert_int_equal(crc, f->chunk_crc);
    /* the last byte too */
    assert_int_equal(wt_snapshot_chunk(s, f->size - 1, 4096, &d, &n, &crc, &err), COH_OK);
    assert_int_equal((int)n, 1);
}

static void publish(wpub *p, int64_t version)
{
    coh_err err;
    if (wpub_publish(p, snapshot(version), &err) != COH_OK)
        fail_msg("%s", err.msg);
    assert_int_equal(wpub_current_version(p), version);
    intact(wpub_current(p), version);
}

static wpub_ref *acquire_ok(wpub *p, int64_t v)
{
    wpub_ref *r = NULL;
    coh_err err;
    assert_int_equal(wpub_acquire(p, v, &r, &err), WPUB_OK);
    assert_non_null(r);
    intact(wpub_ref_snapshot(r), v);
    return r;
}

static void acquire_fails(wpub *p, int64_t v, wpub_verdict want, const char *frag)
{
    wpub_ref *r = (wpub_ref *)1;
    coh_err err;
    assert_int_equal(wpub_acquire(p, v, &r, &err), want);
    assert_null(r);
    HAS(err.msg, frag);
}

static void test_versions(void **state)
{
    (void)state;
    wpub *p = NULL;
    coh_err err;
    assert_int_equal(wpub_create(&p, &err), COH_OK);
    assert_non_null(p);

    /* nothing published */
    assert_null(wpub_current(p));
    assert_int_equal(wpub_current_version(p), -1);
    acquire_fails(p, 0, WPUB_NONE, "no version");
    acquire_fails(p, -1, WPUB_NONE, "no version");

    publish(p, 0);
    wpub_release(acquire_ok(p, 0));
    acquire_fails(p, 1, WPUB_FUTURE, "version 1 does not exist; the newest is 0");
    acquire_fails(p, -1, WPUB_GONE, "no longer kept");

    publish(p, 1);
    assert_true(made[1].crc != made[0].crc); /* the checks below can tell versions apart */
    assert_true(made[1].chunk_crc != made[0].chunk_crc);
    wpub_ref *a = acquire_ok(p, 1), *b = acquire_ok(p, 0);
    assert_ptr_equal(wpub_ref_snapshot(a), wpub_current(p));
    acquire_fails(p, 2, WPUB_FUTURE, "does not exist");
    wpub_release(a);
    wpub_release(b);

    publish(p, 2);
    a = acquire_ok(p, 2);
    b = acquire_ok(p, 1);
    acquire_fails(p, 0, WPUB_GONE, "version 0 is no longer kept; the newest is 2");
    acquire_fails(p, 3, WPUB_FUTURE, "version 3 does not exist");
    acquire_fails(p, 1000, WPUB_FUTURE, "does not exist");
    /* two references to the same version share one snapshot */
    wpub_ref *a2 = acquire_ok(p, 2);
    assert_ptr_equal(wpub_ref_snapshot(a2), wpub_ref_snapshot(a));
    wpub_release(a2);
    wpub_release(a);
    wpub_release(b);
    intact(wpub_current(p), 2);
    wpub_release(NULL);
    wpub_destroy(p);
    wpub_destroy(NULL);
}

/* A download started on a version keeps streaming it while newer ones are published. */
static void test_reference_outlives_publishes(void **state)
{
    (void)state;
    wpub *p = NULL;
    coh_err err;
    assert_int_equal(wpub_create(&p, &err), COH_OK);
    publish(p, 0);
    wpub_ref *r0 = acquire_ok(p, 0);
    wpub_ref *r0b = acquire_ok(p, 0);
    const wt_snapshot *s0 = wpub_ref_snapshot(r0);
    publish(p, 1);
    intact(s0, 0);
    publish(p, 2); /* the publisher lets go of v0; the downloads still hold it */
    acquire_fails(p, 0, WPUB_GONE, "no longer kept");
    intact(wpub_ref_snapshot(r0), 0);
    wpub_ref *r1 = acquire_ok(p, 1);
    publish(p, 3);
    acquire_fails(p, 1, WPUB_GONE, "no longer kept");
    intact(s0, 0);
    intact(wpub_ref_snapshot(r1), 1);
    wpub_release(r0);
    intact(wpub_ref_snapshot(r0b), 0); /* one reference left: still alive */
    wpub_release(r0b);                 /* the last one: freed (LeakSanitizer checks) */
    intact(wpub_ref_snapshot(r1), 1);
    wpub_release(r1);
    /* the two kept ones are untouched by all this */
    wpub_release(acquire_ok(p, 2));
    wpub_release(acquire_ok(p, 3));
    wpub_destroy(p);
}

/* wpub_destroy while downloads still hold the current and the previous version. */
static void test_destroy_with_reference(void **state)
{
    (void)state;
    wpub *p = NULL;
    coh_err err;
    assert_int_equal(wpub_create(&p, &err), COH_OK);
    publish(p, 3);
    publish(p, 4);
    wpub_ref *cur = acquire_ok(p, 4), *prev = acquire_ok(p, 3);
    wpub_destroy(p);
    intact(wpub_ref_snapshot(cur), 4);
    intact(wpub_ref_snapshot(prev), 3);
    wpub_release(prev);
    intact(wpub_ref_snapshot(cur), 4);
    wpub_release(cur);
}

/* Variants: made once per version and shared; a delta from the previous version; fallbacks
 * to the full snapshot when the base is not kept or not older; a variant outlives the
 * publisher and the version's reference while a stream holds it. */
static void test_variants(void **state)
{
    (void)state;
    wpub *p = NULL;
    coh_err err;
    assert_int_equal(wpub_create(&p, &err), COH_OK);
    for (int64_t v = 0; v < 3; v++)
        assert_int_equal(wpub_publish(p, snapshot(v), &err), COH_OK);
    wpub_ref *r = NULL;
    assert_int_equal(wpub_acquire(p, 2, &r, &err), WPUB_OK);
    char why[200];
    wt_snapshot *f = NULL, *b1 = NULL, *b2 = NULL, *d = NULL, *full = NULL;
    assert_int_equal(wpub_variant(p, r, WT_WIRE_F32, -1, &f, why, sizeof why, &err), COH_OK);
    assert_ptr_equal(f, wpub_ref_snapshot(r));
    assert_int_equal(wpub_variant(p, r, WT_WIRE_BF16, -1, &b1, why, sizeof why, &err), COH_OK);
    assert_int_equal(wpub_variant(p, r, WT_WIRE_BF16, -1, &b2, why, sizeof why, &err), COH_OK);
    assert_ptr_equal(b1, b2); /* made once, shared */
    assert_int_equal(wt_snapshot_wire(b1), WT_WIRE_BF16);
    assert_int_equal(wt_snapshot_version(b1), 2);
    assert_int_equal(wpub_variant(p, r, WT_WIRE_DELTA, 1, &d, why, sizeof why, &err), COH_OK);
    assert_int_equal(wt_snapshot_wire(d), WT_WIRE_DELTA);
    assert_int_equal(wt_snapshot_delta_base(d), 1);
    assert_int_equal(wt_snapshot_delta_result_crc(d), made[2].crc);
    assert_string_equal(why, "");
    /* version 0 is no longer kept: the full snapshot, and why */
    assert_int_equal(wpub_variant(p, r, WT_WIRE_DELTA, 0, &full, why, sizeof why, &err), COH_OK);
    assert_int_equal(wt_snapshot_wire(full), WT_WIRE_F32);
    HAS(why, "no longer kept");
    wt_snapshot_destroy(full);
    /* a base that is not older */
    assert_int_equal(wpub_variant(p, r, WT_WIRE_DELTA, 2, &full, why, sizeof why, &err), COH_OK);
    assert_int_equal(wt_snapshot_wire(full), WT_WIRE_F32);
    HAS(why, "not older");
    wt_snapshot_destroy(full);
    /* unknown wire */
    assert_int_equal(wpub_variant(p, r, (wt_wire)7, -1, &full, why, sizeof why, &err),
                     COH_EINVAL);
    assert_null(full);
    /* the streams' references outlive the version and the publisher */
    wpub_release(r);
    assert_int_equal(wpub_publish(p, snapshot(3), &err), COH_OK);
    assert_int_equal(wpub_publish(p, snapshot(4), &err), COH_OK);
    wpub_destroy(p);
    assert_int_equal(wt_snapshot_version(f), 2);
    assert_int_equal(wt_snapshot_crc(f), made[2].crc);
    assert_int_equal(wt_snapshot_size(d) > 0, 1);
    wt_snapshot_destroy(f);
    wt_snapshot_destroy(b1);
    wt_snapshot_destroy(b2);
    wt_snapshot_destroy(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_versions),
        cmocka_unit_test(test_reference_outlives_publishes),
        cmocka_unit_test(test_destroy_with_reference),
        cmocka_unit_test(test_variants),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
