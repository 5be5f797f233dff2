/* test_history.c - the learner's recent step records (learner/history.c).
 *
 * A ring of the last capacity steps: [first, end) after pushing steps in order, each held
 * step's record intact, older ones gone; the last record; a restart (a lower step) and a
 * jump forward both start the history over at the pushed step.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "history.h"

#define CAP 4

static mhist *make(int cap)
{
    mhist *h = NULL;
    coh_err err;
    assert_int_equal(mhist_create(cap, &h, &err), COH_OK);
    assert_non_null(h);
    return h;
}

/* A record for step s whose every field tells the step and the run (tag). */
static mhist_rec rec(long s, int tag)
{
    mhist_rec r;
    memset(&r, 0, sizeof r);
    r.m.step = s;
    r.reward_latency_ms = 10.0 * (double)s + tag;
    for (int k = 0; k < TRAINER_DROP_N; k++)
        r.dropped_total[k] = s * 100 + k + tag * 1000;
    return r;
}

static void check(const mhist_rec *got, long s, int tag)
{
    assert_non_null(got);
    assert_int_equal(got->m.step, s);
    assert_true(got->reward_latency_ms == 10.0 * (double)s + tag);
    for (int k = 0; k < TRAINER_DROP_N; k++)
        assert_int_equal(got->dropped_total[k], s * 100 + k + tag * 1000);
}

static void test_create(void **state)
{
    (void)state;
    coh_err err;
    mhist *h = (mhist *)1;
    assert_int_equal(mhist_create(0, &h, &err), COH_EINVAL);
    assert_null(h);
    assert_int_equal(mhist_create((1 << 20) + 1, &h, &err), COH_EINVAL);
    assert_null(h);
    h = make(CAP);
    assert_int_equal(mhist_first(h), mhist_end(h)); /* empty */
    assert_null(mhist_last(h));
    assert_null(mhist_get(h, 0));
    assert_null(mhist_get(h, 1));
    mhist_destroy(h);
    mhist_destroy(NULL);
}

static void test_ring(void **state)
{
    (void)state;
    mhist *h = make(CAP);
    for (long s = 1; s <= 10; s++) {
        mhist_rec r = rec(s, 0);
        mhist_push(h, &r);
        long first = s - CAP + 1 < 1 ? 1 : s - CAP + 1; /* 1, 1, 1, 1, 2, 3, ..., 7 */
        assert_int_equal(mhist_first(h), first);
        assert_int_equal(mhist_end(h), s + 1);
        check(mhist_last(h), s, 0);
        for (long q = 0; q <= s + 2; q++) {
            if (q >= first && q <= s)
                check(mhist_get(h, q), q, 0);
            else
                assert_null(mhist_get(h, q));
        }
    }
    /* after 10 pushes into 4 slots: steps 7..10 */
    assert_int_equal(mhist_first(h), 7);
    assert_int_equal(mhist_end(h), 11);
    assert_null(mhist_get(h, 6));
    assert_null(mhist_get(h, 1));
    assert_null(mhist_get(h, -1));
    check(mhist_get(h, 7), 7, 0);
    check(mhist_get(h, 10), 10, 0);
    assert_null(mhist_get(h, 11));
    mhist_destroy(h);
}

static void test_restart(void **state)
{
    (void)state;
    mhist *h = make(CAP);
    for (long s = 1; s <= 6; s++) {
        mhist_rec r = rec(s, 0);
        mhist_push(h, &r);
    }
    assert_int_equal(mhist_first(h), 3);
    assert_int_equal(mhist_end(h), 7);

    /* a restarted learner (checkpoint at step 4) pushes step 5 again: start over at 5 */
    mhist_rec r = rec(5, 1);
    mhist_push(h, &r);
    assert_int_equal(mhist_first(h), 5);
    assert_int_equal(mhist_end(h), 6);
    check(mhist_last(h), 5, 1);
    check(mhist_get(h, 5), 5, 1);
    assert_null(mhist_get(h, 4));
    assert_null(mhist_get(h, 6)); /* the old run's step 6 is not shown */
    assert_null(mhist_get(h, 3));
    r = rec(6, 1);
    mhist_push(h, &r);
    assert_int_equal(mhist_first(h), 5);
    assert_int_equal(mhist_end(h), 7);
    check(mhist_get(h, 5), 5, 1);
    check(mhist_get(h, 6), 6, 1);

    /* going back to 0 */
    r = rec(0, 2);
    mhist_push(h, &r);
    assert_int_equal(mhist_first(h), 0);
    assert_int_equal(mhist_end(h), 1);
    check(mhist_get(h, 0), 0, 2);
    check(mhist_last(h), 0, 2);
    assert_null(mhist_get(h, 5));

    /* pushing the last step again (not lower than it) replaces its record, keeps the rest */
    r = rec(1, 2);
    mhist_push(h, &r);
    r = rec(1, 3);
    mhist_push(h, &r);
    assert_int_equal(mhist_first(h), 0);
    assert_int_equal(mhist_end(h), 2);
    check(mhist_get(h, 0), 0, 2);
    check(mhist_get(h, 1), 1, 3);
    check(mhist_last(h), 1, 3);
    mhist_destroy(h);
}

static void test_gap_forward(void **state)
{
    (void)state;
    mhist *h = make(CAP);
    for (long s = 1; s <= 3; s++) {
        mhist_rec r = rec(s, 0);
        mhist_push(h, &r);
    }
    /* step 4 follows 3 (end == 4): no gap */
    mhist_rec r = rec(4, 0);
    mhist_push(h, &r);
    assert_int_equal(mhist_first(h), 1);
    assert_int_equal(mhist_end(h), 5);
    /* step 9 skips 5..8: the history restarts at 9 */
    r = rec(9, 0);
    mhist_push(h, &r);
    assert_int_equal(mhist_first(h), 9);
    assert_int_equal(mhist_end(h), 10);
    check(mhist_last(h), 9, 0);
    for (long q = 0; q < 9; q++)
        assert_null(mhist_get(h, q));
    check(mhist_get(h, 9), 9, 0);
    /* a skip by less than the capacity restarts it too (steps 5..6 missing) */
    r = rec(10, 0);
    mhist_push(h, &r);
    r = rec(12, 0);
    mhist_push(h, &r);
    assert_int_equal(mhist_first(h), 12);
    assert_int_equal(mhist_end(h), 13);
    assert_null(mhist_get(h, 10));
    assert_null(mhist_get(h, 11));
    check(mhist_get(h, 12), 12, 0);
    mhist_destroy(h);
}

static void test_capacity_one(void **state)
{
    (void)state;
    mhist *h = make(1);
    for (long s = 0; s < 5; s++) {
        mhist_rec r = rec(s, 4);
        mhist_push(h, &r);
        assert_int_equal(mhist_first(h), s);
        assert_int_equal(mhist_end(h), s + 1);
        check(mhist_get(h, s), s, 4);
        check(mhist_last(h), s, 4);
        if (s > 0)
            assert_null(mhist_get(h, s - 1));
    }
    /* a negative step is ignored */
    mhist_rec r = rec(-3, 4);
    mhist_push(h, &r);
    assert_int_equal(mhist_first(h), 4);
    assert_int_equal(mhist_end(h), 5);
    check(mhist_last(h), 4, 4);
    mhist_destroy(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create),
        cmocka_unit_test(test_ring),
        cmocka_unit_test(test_restart),
        cmocka_unit_test(test_gap_forward),
        cmocka_unit_test(test_capacity_one),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
