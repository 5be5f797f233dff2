/* test_actor_vtrack.c - the actor's version tracking (actor/vtrack.h): notices, the held
 * version, the pending-policy hand-over between threads, waits woken by new notices, by a
 * published policy and by stop.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "model.h"
#include "policy.h"
#include "tokenizer.h"
#include "vtrack.h"

static policy *make_policy(int64_t version, uint32_t crc)
{
    model_config c = model_config_default(98);
    model *m = NULL;
    tokenizer *t = NULL;
    policy *p = NULL;
    coh_err err;
    assert_int_equal(model_create(&c, &m, &err), COH_OK);
    assert_int_equal(tok_create_default(&t, &err), COH_OK);
    assert_int_equal(policy_create(version, crc, m, t, &p, &err), COH_OK);
    return p;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void test_fresh_state(void **state)
{
    vtrack *vt = NULL;
    coh_err err;
    assert_int_equal(vtrack_create(&vt, &err), COH_OK);
    uint32_t crc = 1;
    assert_int_equal(vtrack_held(vt, &crc), -1);
    assert_int_equal(vtrack_learner_version(vt), -1);
    assert_null(vtrack_take(vt));
    assert_int_equal(vtrack_publish(vt, NULL), COH_EINVAL);
    vtrack_destroy(vt);
    vtrack_destroy(NULL);
}

static void test_notice_copied_and_learner_version(void **state)
{
    vtrack *vt = NULL;
    coh_err err;
    assert_int_equal(vtrack_create(&vt, &err), COH_OK);
    char cfg[] = "{\"vocab_size\": 98}";
    vtrack_notice n = {.version = 5, .total_bytes = 1000, .checksum = 0xabcd,
                       .has_manifest = 1, .config_json = cfg, .tokenizer_json = ""};
    assert_int_equal(vtrack_notice_seen(vt, &n), COH_OK);
    cfg[0] = 'X'; /* the tracker holds its own copy */
    assert_int_equal(vtrack_learner_version(vt), 5);
    vtrack_notice got;
    long seq = -7;
    assert_int_equal(vtrack_wait_download(vt, -1, &got, &seq), 0);
    assert_int_equal(got.version, 5);
    assert_int_equal(got.total_bytes, 1000);
    assert_int_equal(got.checksum, 0xabcd);
    assert_int_equal(got.has_manifest, 1);
    assert_string_equal(got.config_json, "{\"vocab_size\": 98}");
    assert_null(got.tokenizer_json); /* "" = none */
    assert_int_equal(seq, 1);
    vtrack_notice_free(&got);
    assert_null(got.config_json);

    /* registration sets the learner's version outright (a restart may go back), heartbeats
     * only raise it */
    vtrack_set_learner_version(vt, 3);
    assert_int_equal(vtrack_learner_version(vt), 3);
    vtrack_raise_learner_version(vt, 2);
    assert_int_equal(vtrack_learner_version(vt), 3);
    vtrack_raise_learner_version(vt, 9);
    assert_int_equal(vtrack_learner_version(vt), 9);
    vtrack_destroy(vt);
}

static void test_publish_take(void **state)
{
    vtrack *vt = NULL;
    coh_err err;
    assert_int_equal(vtrack_create(&vt, &err), COH_OK);
    policy *p1 = make_policy(1, 0x11), *p2 = make_policy(2, 0x22);
    assert_int_equal(vtrack_publish(vt, p1), COH_OK);
    uint32_t crc = 0;
    assert_int_equal(vtrack_held(vt, &crc), 1);
    assert_int_equal(crc, 0x11);
    /* a newer one replaces the pending one (p1 is destroyed: ASan checks the leak) */
    assert_int_equal(vtrack_publish(vt, p2), COH_OK);
    assert_int_equal(vtrack_held(vt, &crc), 2);
    assert_int_equal(crc, 0x22);
    policy *t = vtrack_take(vt);
    assert_ptr_equal(t, p2);
    assert_null(vtrack_take(vt));
    assert_int_equal(vtrack_held(vt, NULL), 2); /* still held: in use */
    policy_destroy(t);
    /* one left pending at destroy is freed */
    assert_int_equal(vtrack_publish(vt, make_policy(3, 0x33)), COH_OK);
    vtrack_destroy(vt);
}

typedef struct waiter {
    vtrack *vt;
    long skip;
    atomic_int done;
    int rc;
    vtrack_notice got;
    long seq;
    policy *p;
} waiter;

static void *wait_download_main(void *arg)
{
    waiter *w = arg;
    w->rc = vtrack_wait_download(w->vt, w->skip, &w->got, &w->seq);
    atomic_store(&w->done, 1);
    return NULL;
}

static void *wait_policy_main(void *arg)
{
    waiter *w = arg;
    w->p = vtrack_wait_policy(w->vt);
    atomic_store(&w->done, 1);
    return NULL;
}

static void test_download_wait_rules(void **state)
{
    vtrack *vt = NULL;
    coh_err err;
    assert_int_equal(vtrack_create(&vt, &err), COH_OK);
    /* nothing seen: the downloader waits until a notice arrives */
    waiter w = {.vt = vt, .skip = -1};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, wait_download_main, &w), 0);
    sleep_ms(100);
    assert_int_equal(atomic_load(&w.done), 0);
    vtrack_notice n = {.version = 4, .total_bytes = 10, .checksum = 0x44};
    assert_int_equal(vtrack_notice_seen(vt, &n), COH_OK);
    pthread_join(th, NULL);
    assert_int_equal(w.rc, 0);
    assert_int_equal(w.got.version, 4);
    long seq4 = w.seq;
    vtrack_notice_free(&w.got);

    /* the held version is not downloaded again */
    assert_int_equal(vtrack_publish(vt, make_policy(4, 0x44)), COH_OK);
    waiter w2 = {.vt = vt, .skip = -1};
    assert_int_equal(pthread_create(&th, NULL, wait_download_main, &w2), 0);
    sleep_ms(100);
    assert_int_equal(atomic_load(&w2.done), 0);
    /* the same version with another checksum is (the learner restarted and re-made it) */
    n.checksum = 0x45;
    assert_int_equal(vtrack_notice_seen(vt, &n), COH_OK);
    pthread_join(th, NULL);
    assert_int_equal(w2.rc, 0);
    assert_int_equal(w2.got.checksum, 0x45);
    assert_true(w2.seq > seq4);
    vtrack_notice_free(&w2.got);

    /* a notice given up on (skip_seq) waits for the next notice, even of the same version */
    waiter w3 = {.vt = vt, .skip = w2.seq};
    assert_int_equal(pthread_create(&th, NULL, wait_download_main, &w3), 0);
    sleep_ms(100);
    assert_int_equal(atomic_load(&w3.done), 0);
    assert_int_equal(vtrack_notice_seen(vt, &n), COH_OK);
    pthread_join(th, NULL);
    assert_int_equal(w3.rc, 0);
    assert_int_equal(w3.seq, w2.seq + 1);
    vtrack_notice_free(&w3.got);

    /* stop wakes a waiter for good */
    waiter w4 = {.vt = vt, .skip = w3.seq};
    assert_int_equal(pthread_create(&th, NULL, wait_download_main, &w4), 0);
    sleep_ms(50);
    vtrack_stop(vt);
    pthread_join(th, NULL);
    assert_int_equal(w4.rc, 1);
    assert_int_equal(vtrack_wait_download(vt, -1, &w4.got, &w4.seq), 1);
    vtrack_destroy(vt);
}

static void test_policy_wait(void **state)
{
    vtrack *vt = NULL;
    coh_err err;
    assert_int_equal(vtrack_create(&vt, &err), COH_OK);
    waiter w = {.vt = vt};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, wait_policy_main, &w), 0);
    sleep_ms(100);
    assert_int_equal(atomic_load(&w.done), 0);
    policy *p = make_policy(8, 0x88);
    assert_int_equal(vtrack_publish(vt, p), COH_OK);
    pthread_join(th, NULL);
    assert_ptr_equal(w.p, p);
    assert_int_equal(policy_version(w.p), 8);
    assert_null(vtrack_take(vt));
    policy_destroy(w.p);

    waiter w2 = {.vt = vt};
    assert_int_equal(pthread_create(&th, NULL, wait_policy_main, &w2), 0);
    sleep_ms(50);
    vtrack_stop(vt);
    pthread_join(th, NULL);
    assert_null(w2.p);
    vtrack_destroy(vt);
}

static void test_policy_create_checks(void **state)
{
    model_config c = model_config_default(98);
    model *m = NULL;
    tokenizer *t = NULL;
    policy *p = (policy *)&c;
    coh_err err;
    assert_int_equal(model_create(&c, &m, &err), COH_OK);
    assert_int_equal(tok_create_default(&t, &err), COH_OK);
    /* a refused bundle still frees what it was given (ASan checks) */
    assert_int_equal(policy_create(-1, 0, m, t, &p, &err), COH_EINVAL);
    assert_null(p);
    assert_int_equal(policy_create(1, 0, NULL, NULL, &p, &err), COH_EINVAL);
    /* the tokenizer a manifest carries */
    tokenizer *d = NULL;
    assert_int_equal(policy_load_tokenizer("", &d, &err), COH_OK);
    char *json = NULL;
    assert_int_equal(tok_to_json(d, &json, &err), COH_OK);
    tokenizer *back = NULL;
    assert_int_equal(policy_load_tokenizer(json, &back, &err), COH_OK);
    assert_int_equal(tok_vocab_size(back), tok_vocab_size(d));
    tokenizer *broken = NULL;
    assert_int_not_equal(policy_load_tokenizer("{not json", &broken, &err), COH_OK);
    assert_null(broken);
    free(json);
    tok_destroy(d);
    tok_destroy(back);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fresh_state),
        cmocka_unit_test(test_notice_copied_and_learner_version),
        cmocka_unit_test(test_publish_take),
        cmocka_unit_test(test_download_wait_rules),
        cmocka_unit_test(test_policy_wait),
        cmocka_unit_test(test_policy_create_checks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
