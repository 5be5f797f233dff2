/* download.c - watching policy versions and downloading them (see download.h). */
#include "download.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "actlog.h"
#include "cohort/v1/learner.pb-c.h"
#include "weights.h"

#define M_WATCH "/cohort.v1.Learner/WatchVersions"
#define M_DOWNLOAD "/cohort.v1.Learner/DownloadWeights"
#define DOWNLOAD_MAX_FAILURES 20

static double download_now_(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static char *download_dup_(const char *s) { return s && *s ? strdup(s) : NULL; }

/* ---- one version ----------------------------------------------------------------------- */

download_result download_version(session *s, const vtrack_notice *nt, policy **out)
{
    *out = NULL;
    wt_recv *r = NULL;
    char *tok_json = download_dup_(nt->tokenizer_json);
    int tok_known = nt->has_manifest;
    coh_err err;
    coh_err_clear(&err);
    long backoff = 200;
    int failures = 0;
    download_result result = DOWNLOAD_STOPPED;
    double t0 = download_now_();
    if (nt->config_json &&
        wt_recv_create(nt->version, nt->total_bytes, nt->checksum, nt->config_json, &r, &err)) {
        AWARN("version %lld: %s", (long long)nt->version, err.msg);
        result = DOWNLOAD_SKIP;
        goto done;
    }
    while (!session_stopping(s)) {
        uint64_t id = session_identity(s, NULL);
        Cohort__V1__DownloadRequest req = COHORT__V1__DOWNLOAD_REQUEST__INIT;
        req.actor_id = id;
        req.version = nt->version;
        req.offset = r ? wt_recv_offset(r) : 0;
        rpc_stream *st = NULL;
        int o = session_open_stream(s, M_DOWNLOAD, &req.base, 300000, &st);
        if (o < 0)
            break;
        if (o > 0) {
            if (session_sleep_ms(s, 1000))
                break;
            continue;
        }
        const uint8_t *msg;
        size_t len;
        int broken = 0, progressed = 0; /* broken: 1 = resume, 2 = give the version up */
        while (!broken && rpc_stream_next(st, &msg, &len) == 1) {
            Cohort__V1__WeightChunk *c = (Cohort__V1__WeightChunk *)rpc_unpack(
                &cohort__v1__weight_chunk__descriptor, msg, len);
            if (!c) {
                AWARN("version %lld: malformed WeightChunk; resuming", (long long)nt->version);
                broken = 1;
                break;
            }
            if (c->manifest) {
                if (!tok_known) {
                    free(tok_json);
                    tok_json = download_dup_(c->manifest->tokenizer_json);
                    tok_known = 1;
                }
                if (!r) {
                    if (!c->manifest->config_json || !*c->manifest->config_json) {
                        coh_fail(&err, COH_EFORMAT, "the manifest has no config_json");
                        r = NULL;
                    } else {
                        wt_recv_create(nt->version, nt->total_bytes, nt->checksum,
                                       c->manifest->config_json, &r, &err);
                    }
                    if (!r) {
                        AWARN("version %lld: no usable config.json in the manifest: %s",
                              (long long)nt->version, err.msg);
                        rpc_msg_free(&c->base);
                        broken = 2;
                        break;
                    }
                }
            }
            if (!r) {
                AWARN("version %lld: first chunk carries no manifest", (long long)nt->version);
                rpc_msg_free(&c->base);
                broken = 2;
                break;
            }
            if (c->version != nt->version || c->total_bytes != nt->total_bytes ||
                c->total_crc32 != nt->checksum) {
                AWARN("version %lld: chunk names version %lld, %llu bytes, crc %08x; expected "
                      "%llu bytes, crc %08x",
                      (long long)nt->version, (long long)c->version,
                      (unsigned long long)c->total_bytes, c->total_crc32,
                      (unsigned long long)nt->total_bytes, nt->checksum);
                rpc_msg_free(&c->base);
                broken = 2;
                break;
            }
            if (wt_recv_complete(r) && c->data.len == 0) {
                rpc_msg_free(&c->base);
                continue;
            }
            int arc = wt_recv_add(r, c->offset, c->data.data, c->data.len, c->chunk_crc32, &err);
            rpc_msg_free(&c->base);
            if (arc) {
                AWARN("version %lld: chunk refused (%s); resuming at byte %zu",
                      (long long)nt->version, err.msg, wt_recv_offset(r));
                broken = 1;
                break;
            }
            progressed = 1;
        }
        rpc_status stat;
        session_close_stream(s, st, &stat);
        if (broken == 2) {
            result = DOWNLOAD_SKIP;
            goto done;
        }
        if (r && wt_recv_complete(r))
            break;
        if (session_stopping(s))
            break;
        if (!broken) {
            if (session_is_unknown_actor(&stat)) {
                if (session_register(s, id))
                    break;
                continue;
            }
            if (stat.code == GRPC_STATUS_FAILED_PRECONDITION ||
                stat.code == GRPC_STATUS_NOT_FOUND) {
                ALOG("version %lld not downloadable (%s: %s); waiting for a newer notice",
                     (long long)nt->version, rpc_status_name(stat.code), stat.message);
                result = DOWNLOAD_SKIP;
                goto done;
            }
            if (stat.code == GRPC_STATUS_OK)
                AWARN("version %lld: stream ended at byte %zu of %llu; resuming",
                      (long long)nt->version, r ? wt_recv_offset(r) : (size_t)0,
                      (unsigned long long)nt->total_bytes);
            else
                AWARN("version %lld: download broken at byte %zu of %llu (%s: %s); resuming",
                      (long long)nt->version, r ? wt_recv_offset(r) : (size_t)0,
                      (unsigned long long)nt->total_bytes, rpc_status_name(stat.code),
                      stat.message);
        }
        if (progressed) {
            backoff = 200;
            failures = 0;
        }
        if (++failures > DOWNLOAD_MAX_FAILURES) {
            /* give this version up; a newer notice (or a re-watch) brings it back */
            result = DOWNLOAD_SKIP;
            goto done;
        }
        if (session_sleep_ms(s, backoff))
            break;
        backoff = session_next_backoff(backoff);
    }
    if (!r || !wt_recv_complete(r) || session_stopping(s))
        goto done;
    model *m = NULL;
    tokenizer *tok = NULL;
    if (wt_recv_finish(r, &m, &err)) {
        AWARN("version %lld refused: %s", (long long)nt->version, err.msg);
        result = DOWNLOAD_SKIP;
        goto done;
    }
    if (policy_load_tokenizer(tok_json, &tok, &err)) {
        AWARN("version %lld: tokenizer: %s; using the default tokenizer",
              (long long)nt->version, err.msg);
        if (tok_create_default(&tok, &err)) {
            model_destroy(m);
            result = DOWNLOAD_SKIP;
            goto done;
        }
    }
    if (policy_create(nt->version, nt->checksum, m, tok, out, &err)) {
        AWARN("version %lld: %s", (long long)nt->version, err.msg);
        result = DOWNLOAD_SKIP;
        goto done;
    }
    ALOG("version %lld downloaded and verified (%llu bytes, crc %08x, %.2f s)",
         (long long)nt->version, (unsigned long long)nt->total_bytes, nt->checksum,
         download_now_() - t0);
    result = DOWNLOAD_OK;
done:
    wt_recv_destroy(r);
    free(tok_json);
    return result;
}

/* ---- the downloader thread ------------------------------------------------------------- */

void download_run(session *s, vtrack *vt)
{
    long failed_seq = -1; /* sequence number of a notice given up on */
    for (;;) {
        vtrack_notice nt;
        long seq = 0;
        int w = vtrack_wait_download(vt, failed_seq, &nt, &seq);
        if (w == 1)
            break;
        if (w < 0) { /* out of memory copying the notice: try again a little later */
            if (session_sleep_ms(s, 200))
                break;
            continue;
        }
        policy *p = NULL;
        download_result rc = download_version(s, &nt, &p);
        vtrack_notice_free(&nt);
        if (rc == DOWNLOAD_STOPPED)
            break;
        if (rc == DOWNLOAD_SKIP) {
            failed_seq = seq;
            continue;
        }
        vtrack_publish(vt, p);
    }
}

/* ---- the watcher thread ---------------------------------------------------------------- */

void download_watch_run(session *s, vtrack *vt)
{
    long backoff = 200;
    while (!session_stopping(s)) {
        long gen = 0;
        uint64_t id = session_identity(s, &gen);
        Cohort__V1__WatchVersionsRequest req = COHORT__V1__WATCH_VERSIONS_REQUEST__INIT;
        req.actor_id = id;
        rpc_stream *st = NULL;
        int o = session_open_stream(s, M_WATCH, &req.base, 600000, &st);
        if (o < 0)
            break;
        if (o > 0) {
            if (session_sleep_ms(s, 1000))
                break;
            continue;
        }
        int got = 0, rc;
        const uint8_t *msg;
        size_t len;
        while ((rc = rpc_stream_next(st, &msg, &len)) == 1) {
            Cohort__V1__VersionNotice *n = (Cohort__V1__VersionNotice *)rpc_unpack(
                &cohort__v1__version_notice__descriptor, msg, len);
            if (!n) {
                AWARN("WatchVersions: malformed VersionNotice ignored");
                continue;
            }
            got = 1;
            backoff = 200;
            vtrack_notice vn = {.version = n->version,
                                .total_bytes = n->total_bytes,
                                .checksum = n->checksum,
                                .has_manifest = n->manifest != NULL,
                                .config_json = n->manifest ? n->manifest->config_json : NULL,
                                .tokenizer_json =
                                    n->manifest ? n->manifest->tokenizer_json : NULL};
            if (vtrack_notice_seen(vt, &vn))
                AWARN("WatchVersions: out of memory recording version %lld",
                      (long long)n->version);
            rpc_msg_free(&n->base);
        }
        rpc_status stat;
        session_close_stream(s, st, &stat);
        if (session_stopping(s))
            break;
        if (rc == 0) {
            ALOG("WatchVersions ended (run finished?); watching again");
        } else if (session_is_unknown_actor(&stat)) {
            if (session_register(s, id))
                break;
            continue;
        } else if (stat.code == GRPC_STATUS_DEADLINE_EXCEEDED && got) {
            continue; /* long-lived stream reached its deadline: re-watch at once */
        } else {
            AWARN("WatchVersions: %s: %s; reconnecting in %ld ms", rpc_status_name(stat.code),
                  stat.message, backoff);
        }
        if (session_sleep_ms_gen(s, backoff, gen))
            break;
        long gen_now = 0;
        session_identity(s, &gen_now);
        backoff = gen_now != gen ? 200 : session_next_backoff(backoff);
    }
}
