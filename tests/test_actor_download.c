/* test_actor_download.c - the actor's downloader and watcher (actor/download.h) against a
 * real in-process Learner on a loopback port serving a real weights snapshot: a clean
 * download gives the exact weights; a chunk with a bad CRC and a stream broken after two
 * chunks are resumed at the verified offset; a version no longer kept is skipped; an unknown
 * actor registers again and goes on; and the watcher + downloader threads turn a
 * VersionNotice into a policy waiting in the vtrack.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "actor_harness.h"
#include "actlog.h"
#include "cohort/v1/learner.pb-c.h"
#include "download.h"
#include "model.h"
#include "session.h"
#include "vtrack.h"
#include "weights.h"

#define VERSION 7
#define CHUNK 65536

enum mode { D_CLEAN, D_CORRUPT_FIRST, D_BREAK_AFTER_2, D_GONE, D_UNKNOWN_FIRST };

static wt_snapshot *g_snap;
static int g_mode;
static int g_streams;        /* DownloadWeights calls */
static uint64_t g_offsets[16], g_ids[16];
static int g_registrations;
static uint64_t g_next_id = 100;

typedef struct dl_call {
    size_t offset;
    int sent, corrupt, break_after;
} dl_call;

static void dl_next(rpc_call *call, dl_call *d);

static void dl_sent(rpc_call *call, int ok, void *data)
{
    dl_call *d = data;
    if (!ok) {
        rpc_call_finish(call, GRPC_STATUS_CANCELLED, "peer went away");
        free(d);
        return;
    }
    dl_next(call, d);
}

static void dl_next(rpc_call *call, dl_call *d)
{
    size_t total = wt_snapshot_size(g_snap);
    if (d->break_after && d->sent == d->break_after) {
        rpc_call_finish(call, GRPC_STATUS_UNAVAILABLE, "connection reset (test)");
        free(d);
        return;
    }
    if (d->sent > 0 && d->offset == total) {
        rpc_call_finish(call, GRPC_STATUS_OK, NULL);
        free(d);
        return;
    }
    const void *data = NULL;
    size_t len = 0;
    uint32_t crc = 0;
    wt_snapshot_chunk(g_snap, d->offset, CHUNK, &data, &len, &crc, NULL);
    Cohort__V1__WeightChunk c = COHORT__V1__WEIGHT_CHUNK__INIT;
    Cohort__V1__WeightManifest man = COHORT__V1__WEIGHT_MANIFEST__INIT;
    c.version = VERSION;
    c.offset = d->offset;
    c.data.data = (uint8_t *)data;
    c.data.len = len;
    c.chunk_crc32 = d->corrupt && d->sent == 0 ? crc ^ 1u : crc;
    c.total_bytes = total;
    c.total_crc32 = wt_snapshot_crc(g_snap);
    if (d->sent == 0) {
        man.format = "safetensors";
        man.config_json = (char *)wt_snapshot_config(g_snap);
        man.tokenizer_json = "";
        c.manifest = &man;
    }
    d->offset += len;
    d->sent++;
    if (rpc_call_send_msg(call, &c.base, dl_sent, d) != COH_OK) {
        rpc_call_finish(call, GRPC_STATUS_CANCELLED, NULL);
        free(d);
    }
}

static void h_download(rpc_call *call, rpc_event ev, void *data)
{
    Cohort__V1__DownloadRequest *req = (Cohort__V1__DownloadRequest *)rpc_call_unpack_request(
        call, &cohort__v1__download_request__descriptor);
    if (!req)
        return;
    ah_lock();
    int n = g_streams++;
    if (n < 16) {
        g_offsets[n] = req->offset;
        g_ids[n] = req->actor_id;
    }
    int mode = g_mode;
    ah_unlock();
    int64_t v = req->version;
    uint64_t off = req->offset;
    rpc_msg_free(&req->base);
    if (mode == D_GONE) {
        rpc_call_fail(call, GRPC_STATUS_FAILED_PRECONDITION,
                      "version 7 is no longer kept; download version 9");
        return;
    }
    if (mode == D_UNKNOWN_FIRST && n == 0) {
        /* as an older learner says it: no typed reason, the message prefix decides */
        rpc_call_fail(call, GRPC_STATUS_NOT_FOUND, "unknown actor 0000000000000064");
        return;
    }
    if (v != VERSION || off > wt_snapshot_size(g_snap)) {
        rpc_call_fail(call, GRPC_STATUS_NOT_FOUND, "no such version");
        return;
    }
    dl_call *d = calloc(1, sizeof *d);
    d->offset = off;
    d->corrupt = mode == D_CORRUPT_FIRST && n == 0;
    d->break_after = mode == D_BREAK_AFTER_2 && n == 0 ? 2 : 0;
    dl_next(call, d);
}

static void h_register(rpc_call *call, rpc_event ev, void *data)
{
    Cohort__V1__SamplingParams sp = COHORT__V1__SAMPLING_PARAMS__INIT;
    sp.temperature = 1;
    sp.top_p = 1;
    sp.max_new_tokens = 4;
    Cohort__V1__RegisterReply rep = COHORT__V1__REGISTER_REPLY__INIT;
    ah_lock();
    g_registrations++;
    rep.actor_id = g_next_id++;
    ah_unlock();
    rep.heartbeat_interval_ms = 500;
    rep.lease_ttl_ms = 3000;
    rep.group_size = 2;
    rep.sampling = &sp;
    rep.current_version = VERSION;
    rpc_call_reply_msg(call, &rep.base);
}

static void watch_cancelled(rpc_call *call, void *data) {}

static void h_watch(rpc_call *call, rpc_event ev, void *data)
{
    Cohort__V1__WeightManifest man = COHORT__V1__WEIGHT_MANIFEST__INIT;
    man.format = "safetensors";
    man.config_json = (char *)wt_snapshot_config(g_snap);
    Cohort__V1__VersionNotice n = COHORT__V1__VERSION_NOTICE__INIT;
    n.version = VERSION;
    n.step = VERSION;
    n.total_bytes = wt_snapshot_size(g_snap);
    n.checksum = wt_snapshot_crc(g_snap);
    n.format = "safetensors";
    n.manifest = &man;
    rpc_call_on_cancel(call, watch_cancelled, NULL); /* held open until cancelled */
    rpc_call_send_msg(call, &n.base, NULL, NULL);
}

static ah_server srv;
static rpc_channel *ch;
static model *g_model;

static int setup(void **state)
{
    static const ah_method methods[] = {
        {"/cohort.v1.Learner/DownloadWeights", RPC_SERVER_STREAM, h_download, NULL},
        {"/cohort.v1.Learner/RegisterActor", RPC_UNARY, h_register, NULL},
        {"/cohort.v1.Learner/WatchVersions", RPC_SERVER_STREAM, h_watch, NULL},
    };
    actlog_setup("test", 1);
    coh_err err;
    model_config c = model_config_default(98);
    if (model_create(&c, &g_model, &err))
        return -1;
    model_init_random(g_model, 5);
    if (wt_snapshot_make(g_model, VERSION, &g_snap, &err))
        return -1;
    if (wt_snapshot_size(g_snap) < 3 * CHUNK) {
        fprintf(stderr, "the test model is too small for three chunks\n");
        return -1;
    }
    if (ah_start(&srv, methods, 3) != COH_OK) {
        fprintf(stderr, "cannot start the test server: %s\n", srv.err);
        return -1;
    }
    char target[64];
    rpc_channel_config cc = {.max_receive_bytes = -1};
    if (rpc_channel_create(ah_target(&srv, target, sizeof target), &cc, &ch, &err))
        return -1;
    return 0;
}

static int teardown(void **state)
{
    rpc_channel_destroy(ch);
    ah_stop(&srv);
    wt_snapshot_destroy(g_snap);
    model_destroy(g_model);
    return 0;
}

typedef struct fixture {
    vtrack *vt;
    session *s;
} fixture;

static void fixture_up(fixture *f, int mode)
{
    coh_err err;
    assert_int_equal(vtrack_create(&f->vt, &err), COH_OK);
    session_config sc = {.learner_addr = "test", .name = "dl", .threads = 1};
    assert_int_equal(session_create(ch, f->vt, &sc, &f->s, &err), COH_OK);
    assert_int_equal(session_register(f->s, 0), 0);
    ah_lock();
    g_mode = mode;
    g_streams = 0;
    g_registrations = 0;
    ah_unlock();
}

static void fixture_down(fixture *f)
{
    session_destroy(f->s);
    vtrack_destroy(f->vt);
}

static vtrack_notice notice(int with_config)
{
    vtrack_notice n = {.version = VERSION, .total_bytes = wt_snapshot_size(g_snap),
                       .checksum = wt_snapshot_crc(g_snap)};
    if (with_config)
        n.config_json = (char *)wt_snapshot_config(g_snap);
    return n;
}

static void assert_same_weights(const policy *p)
{
    assert_int_equal(policy_version(p), VERSION);
    assert_int_equal(policy_checksum(p), wt_snapshot_crc(g_snap));
    const model *m = policy_model(p);
    assert_int_equal(model_num_params(m), model_num_params(g_model));
    assert_memory_equal(model_params_const(m), model_params_const(g_model),
                        model_num_params(m) * sizeof(float));
    assert_non_null(policy_tokenizer(p));
}

static void test_clean_download(void **state)
{
    fixture f;
    fixture_up(&f, D_CLEAN);
    for (int with_config = 0; with_config < 2; with_config++) {
        vtrack_notice n = notice(with_config);
        policy *p = NULL;
        assert_int_equal(download_version(f.s, &n, &p), DOWNLOAD_OK);
        assert_same_weights(p);
        policy_destroy(p);
    }
    ah_lock();
    assert_int_equal(g_streams, 2); /* one stream each */
    assert_int_equal(g_offsets[0], 0);
    assert_int_equal(g_ids[0], 100);
    ah_unlock();
    fixture_down(&f);
}

static void test_bad_chunk_crc_resumes(void **state)
{
    fixture f;
    fixture_up(&f, D_CORRUPT_FIRST);
    vtrack_notice n = notice(0);
    policy *p = NULL;
    assert_int_equal(download_version(f.s, &n, &p), DOWNLOAD_OK);
    assert_same_weights(p);
    policy_destroy(p);
    ah_lock();
    assert_int_equal(g_streams, 2);
    assert_int_equal(g_offsets[1], 0); /* the refused first chunk is fetched again */
    ah_unlock();
    fixture_down(&f);
}

static void test_broken_stream_resumes_at_offset(void **state)
{
    fixture f;
    fixture_up(&f, D_BREAK_AFTER_2);
    vtrack_notice n = notice(1);
    policy *p = NULL;
    assert_int_equal(download_version(f.s, &n, &p), DOWNLOAD_OK);
    assert_same_weights(p);
    policy_destroy(p);
    ah_lock();
    assert_int_equal(g_streams, 2);
    assert_int_equal(g_offsets[0], 0);
    assert_int_equal(g_offsets[1], 2 * CHUNK); /* two chunks verified before the break */
    ah_unlock();
    fixture_down(&f);
}

static void test_version_gone_is_skipped(void **state)
{
    fixture f;
    fixture_up(&f, D_GONE);
    vtrack_notice n = notice(1);
    policy *p = (policy *)&n;
    assert_int_equal(download_version(f.s, &n, &p), DOWNLOAD_SKIP);
    assert_null(p);
    ah_lock();
    assert_int_equal(g_streams, 1); /* not retried */
    ah_unlock();
    /* a notice whose size disagrees with the chunks is given up, not retried */
    ah_lock();
    g_mode = D_CLEAN;
    ah_unlock();
    n.total_bytes += 4;
    assert_int_equal(download_version(f.s, &n, &p), DOWNLOAD_SKIP);
    assert_null(p);
    fixture_down(&f);
}

static void test_unknown_actor_registers_again(void **state)
{
    fixture f;
    fixture_up(&f, D_UNKNOWN_FIRST);
    vtrack_notice n = notice(0);
    policy *p = NULL;
    assert_int_equal(download_version(f.s, &n, &p), DOWNLOAD_OK);
    assert_same_weights(p);
    policy_destroy(p);
    uint64_t id = session_identity(f.s, NULL);
    ah_lock();
    assert_int_equal(g_registrations, 1);
    assert_int_equal(g_streams, 2);
    assert_int_equal(g_ids[1], id); /* the second stream uses the new id */
    assert_true(g_ids[0] != id);
    ah_unlock();
    fixture_down(&f);
}

typedef struct thread_arg {
    session *s;
    vtrack *vt;
} thread_arg;

static void *watch_main(void *arg)
{
    thread_arg *a = arg;
    download_watch_run(a->s, a->vt);
    return NULL;
}

static void *download_main(void *arg)
{
    thread_arg *a = arg;
    download_run(a->s, a->vt);
    return NULL;
}

static void test_watch_and_download_threads(void **state)
{
    fixture f;
    fixture_up(&f, D_CLEAN);
    thread_arg a = {.s = f.s, .vt = f.vt};
    pthread_t tw, td;
    assert_int_equal(pthread_create(&tw, NULL, watch_main, &a), 0);
    assert_int_equal(pthread_create(&td, NULL, download_main, &a), 0);
    policy *p = vtrack_wait_policy(f.vt);
    assert_non_null(p);
    assert_same_weights(p);
    assert_int_equal(vtrack_learner_version(f.vt), VERSION);
    assert_int_equal(vtrack_held(f.vt, NULL), VERSION);
    /* stop: the watch stream held open by the server is cancelled, both threads end */
    session_stop(f.s, 0);
    pthread_join(tw, NULL);
    pthread_join(td, NULL);
    assert_int_equal(session_fatal(f.s), 0);
    ah_lock();
    assert_int_equal(g_streams, 1); /* downloaded once: the held version is not fetched again */
    ah_unlock();
    policy_destroy(p);
    fixture_down(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clean_download),
        cmocka_unit_test(test_bad_chunk_crc_resumes),
        cmocka_unit_test(test_broken_stream_resumes_at_offset),
        cmocka_unit_test(test_version_gone_is_skipped),
        cmocka_unit_test(test_unknown_actor_registers_again),
        cmocka_unit_test(test_watch_and_download_threads),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
