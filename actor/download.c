/* download.c - watching policy versions and downloading them (see download.h). */
#include "download.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "actlog.h"
#include "cohort/v1/learner.pb-c.h"
#include "rpc_wchunk.h"
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

/* ---- the cache ------------------------------------------------------------------------- */

struct download_cache {
    int64_t version;
    void *blob; /* verified F32 blob of version (only with download_opts.delta) */
    size_t len, cap;
    wt_pool *pool; /* the download buffers, kept from one version to the next */
};

int download_cache_create(download_cache **out)
{
    *out = calloc(1, sizeof **out);
    if (!*out)
        return COH_ENOMEM;
    (*out)->version = -1;
    if (wt_pool_create(&(*out)->pool, NULL)) {
        free(*out);
        *out = NULL;
        return COH_ENOMEM;
    }
    return COH_OK;
}

/* Forget the held version; its buffer goes back to the pool for the next download. */
static void download_cache_clear_(download_cache *c)
{
    if (!c)
        return;
    wt_pool_put(c->pool, c->blob, c->cap);
    c->blob = NULL;
    c->len = c->cap = 0;
    c->version = -1;
}

void download_cache_destroy(download_cache *c)
{
    if (!c)
        return;
    download_cache_clear_(c);
    wt_pool_destroy(c->pool);
    free(c);
}

void download_cache_stats(const download_cache *c, wt_pool_stats *st)
{
    wt_pool_get_stats(c ? c->pool : NULL, st);
}

const void *download_cache_blob(const download_cache *c, size_t *len)
{
    *len = c && c->blob ? c->len : 0;
    return c ? c->blob : NULL;
}

int64_t download_cache_version(const download_cache *c) { return c ? c->version : -1; }

/* ---- one version ----------------------------------------------------------------------- */

/* The chunk size to ask for: o's, else what fits gRPC's default 4 MiB receive limit next to
 * the manifest (config + tokenizer) the notice announced, in whole 64 KiB CRC blocks. */
static uint32_t download_chunk_size_(const vtrack_notice *nt, const download_opts *o)
{
    if (o && o->max_chunk_bytes)
        return o->max_chunk_bytes;
    if (!nt->has_manifest)
        return 0; /* server default (1 MiB) */
    size_t man = (nt->config_json ? strlen(nt->config_json) : 0) +
                 (nt->tokenizer_json ? strlen(nt->tokenizer_json) : 0) + (64u << 10);
    size_t lim = (size_t)4 << 20, cap = (size_t)3 << 20;
    if (man >= lim - (64u << 10))
        return 64u << 10;
    size_t c = lim - man;
    if (c > cap)
        c = cap;
    c &= ~(size_t)0xffff;
    return (uint32_t)(c < (64u << 10) ? 64u << 10 : c);
}

/* What a stream's first chunk must agree with for the receiver r to continue. */
static int download_same_kind_(const wchunk_view *v, int kind, size_t total, uint32_t crc)
{
    int k = v->delta ? WT_WIRE_DELTA
            : v->wire_dtype == COHORT__V1__WEIGHT_WIRE_DTYPE__WEIGHT_WIRE_DTYPE_BF16
                ? WT_WIRE_BF16
                : WT_WIRE_F32;
    return k == kind && v->total_bytes == total && v->total_crc32 == crc;
}

download_result download_version_opts(session *s, const vtrack_notice *nt,
                                      const download_opts *o, download_cache *cache,
                                      policy **out)
{
    *out = NULL;
    download_opts dflt = {0};
    if (!o)
        o = &dflt;
    wt_recv *r = NULL;
    int kind = WT_WIRE_F32; /* of r */
    size_t r_total = 0;
    uint32_t r_crc = 0;
    char *tok_json = download_dup_(nt->tokenizer_json);
    char *cfg_json = download_dup_(nt->config_json);
    int tok_known = nt->has_manifest;
    coh_err err;
    coh_err_clear(&err);
    long backoff = 200;
    int failures = 0, delta_refused = 0;
    download_result result = DOWNLOAD_STOPPED;
    double t0 = download_now_();
    uint32_t chunk = download_chunk_size_(nt, o);
    wchunk_view v;
    wchunk_view_init(&v);
    wt_pool *pool = cache ? cache->pool : NULL;
    if (nt->config_json) { /* a notice that cannot be a policy: do not even ask */
        wt_recv *probe = NULL;
        if (wt_recv_create_pooled(nt->version, nt->total_bytes, nt->checksum, nt->config_json,
                                  pool, &probe, &err)) {
            AWARN("version %lld: %s", (long long)nt->version, err.msg);
            result = DOWNLOAD_SKIP;
            goto done;
        }
        wt_recv_destroy(probe);
    }
retry:
    while (!session_stopping(s)) {
        uint64_t id = session_identity(s, NULL);
        Cohort__V1__DownloadRequest req = COHORT__V1__DOWNLOAD_REQUEST__INIT;
        req.actor_id = id;
        req.version = nt->version;
        req.offset = r ? wt_recv_offset(r) : 0;
        req.max_chunk_bytes = chunk;
        if (o->bf16)
            req.wire_dtype = COHORT__V1__WEIGHT_WIRE_DTYPE__WEIGHT_WIRE_DTYPE_BF16;
        else if (o->delta && !delta_refused && cache && cache->blob &&
                 cache->version >= 0 && cache->version < nt->version &&
                 (!r || kind == WT_WIRE_DELTA)) {
            req.delta = 1;
            req.base_version = cache->version;
        }
        rpc_stream *st = NULL;
        int op = session_open_stream(s, M_DOWNLOAD, &req.base, 300000, &st);
        if (op < 0)
            break;
        if (op > 0) {
            if (session_sleep_ms(s, 1000))
                break;
            continue;
        }
        const rpc_piece *pcs;
        size_t npc;
        int broken = 0, progressed = 0, first = 1; /* broken: 1 = resume, 2 = give up */
        while (!broken && rpc_stream_next_pieces(st, &pcs, &npc) == 1) {
            if (wchunk_decode(&v, pcs, npc, &err)) {
                AWARN("version %lld: %s; resuming", (long long)nt->version, err.msg);
                broken = 1;
                break;
            }
            if (v.manifest) {
                if (!tok_known) {
                    free(tok_json);
                    tok_json = download_dup_(v.manifest->tokenizer_json);
                    tok_known = 1;
                }
                if (!cfg_json)
                    cfg_json = download_dup_(v.manifest->config_json);
            }
            if (v.version != nt->version) {
                AWARN("version %lld: chunk names version %lld", (long long)nt->version,
                      (long long)v.version);
                broken = 2;
                break;
            }
            if (first && r && !download_same_kind_(&v, kind, r_total, r_crc)) {
                /* the learner answers the resumed request differently (e.g. it could not
                 * make the delta any more): start this version again from byte 0 */
                AWARN("version %lld: the resumed stream carries other bytes; restarting at 0",
                      (long long)nt->version);
                wt_recv_destroy(r);
                r = NULL;
                broken = 1;
                break;
            }
            if (!r) {
                if (!cfg_json) {
                    AWARN("version %lld: no config.json (the first chunk carries no manifest)",
                          (long long)nt->version);
                    broken = 2;
                    break;
                }
                if (v.offset != 0) {
                    broken = 1;
                    break;
                }
                if (v.delta) {
                    kind = WT_WIRE_DELTA;
                    if (!req.delta || v.delta->base_version != req.base_version ||
                        v.delta->result_bytes != nt->total_bytes ||
                        v.delta->result_crc32 != nt->checksum) {
                        AWARN("version %lld: a delta that does not match the request or the "
                              "notice (base %lld, %llu bytes, crc %08x); downloading in full",
                              (long long)nt->version, (long long)v.delta->base_version,
                              (unsigned long long)v.delta->result_bytes,
                              v.delta->result_crc32);
                        delta_refused = 1;
                        broken = 1;
                        break;
                    }
                } else if (v.wire_dtype ==
                           COHORT__V1__WEIGHT_WIRE_DTYPE__WEIGHT_WIRE_DTYPE_BF16) {
                    kind = WT_WIRE_BF16;
                } else {
                    kind = WT_WIRE_F32;
                    if (v.total_bytes != nt->total_bytes || v.total_crc32 != nt->checksum) {
                        AWARN("version %lld: chunk names %llu bytes, crc %08x; expected %llu "
                              "bytes, crc %08x",
                              (long long)nt->version, (unsigned long long)v.total_bytes,
                              v.total_crc32, (unsigned long long)nt->total_bytes, nt->checksum);
                        broken = 2;
                        break;
                    }
                }
                if (wt_recv_create_pooled(nt->version, v.total_bytes, v.total_crc32, cfg_json,
                                          pool, &r, &err)) {
                    AWARN("version %lld: %s", (long long)nt->version, err.msg);
                    broken = 2;
                    break;
                }
                r_total = v.total_bytes;
                r_crc = v.total_crc32;
                if (kind == WT_WIRE_BF16)
                    wt_recv_set_bf16(r);
                if (kind == WT_WIRE_DELTA) {
                    size_t nr = v.delta->n_range_offsets;
                    wt_range *rg = malloc((nr ? nr : 1) * sizeof *rg);
                    int drc = COH_ENOMEM;
                    if (rg && nr == v.delta->n_range_lengths) {
                        for (size_t i = 0; i < nr; i++)
                            rg[i] = (wt_range){(size_t)v.delta->range_offsets[i],
                                               (size_t)v.delta->range_lengths[i]};
                        drc = wt_recv_set_delta(r, cache->blob, cache->len, rg, nr,
                                                v.delta->result_bytes, v.delta->result_crc32,
                                                &err);
                    } else if (rg) {
                        drc = coh_fail(&err, COH_EFORMAT, "delta range lists differ in length");
                    }
                    free(rg);
                    if (drc) {
                        AWARN("version %lld: unusable delta (%s); downloading in full",
                              (long long)nt->version, err.msg);
                        wt_recv_destroy(r);
                        r = NULL;
                        delta_refused = 1;
                        broken = 1;
                        break;
                    }
                }
            } else if (v.total_bytes != r_total || v.total_crc32 != r_crc) {
                AWARN("version %lld: chunk names %llu bytes, crc %08x mid-stream",
                      (long long)nt->version, (unsigned long long)v.total_bytes, v.total_crc32);
                broken = 2;
                break;
            }
            first = 0;
            if (wt_recv_complete(r) && v.data_len == 0)
                continue;
            if (wt_recv_add_pieces(r, v.offset, v.data, v.ndata, v.chunk_crc32, &err)) {
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
            if (stat.code == GRPC_STATUS_INVALID_ARGUMENT && (req.delta || req.wire_dtype)) {
                /* a learner that refuses what we asked for: fall back to the plain F32 */
                AWARN("version %lld: the learner refused the request (%s); downloading F32 "
                      "in full",
                      (long long)nt->version, stat.message);
                delta_refused = 1;
                if (o->bf16) {
                    dflt = *o;
                    dflt.bf16 = 0;
                    o = &dflt;
                }
                wt_recv_destroy(r);
                r = NULL;
                continue;
            }
            if (stat.code == GRPC_STATUS_OK)
                AWARN("version %lld: stream ended at byte %zu of %zu; resuming",
                      (long long)nt->version, r ? wt_recv_offset(r) : (size_t)0, r_total);
            else
                AWARN("version %lld: download broken at byte %zu (%s: %s); resuming",
                      (long long)nt->version, r ? wt_recv_offset(r) : (size_t)0,
                      rpc_status_name(stat.code), stat.message);
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
        if (kind == WT_WIRE_DELTA && !delta_refused) {
            AWARN("delta refused: %s", err.msg);
            download_cache_clear_(cache);
            delta_refused = 1;
            wt_recv_destroy(r);
            r = NULL;
            goto retry;
        }
        AWARN("version %lld refused: %s", (long long)nt->version, err.msg);
        result = DOWNLOAD_SKIP;
        goto done;
    }
    if (cache && o->delta) {
        /* the new version's blob becomes the base of the next delta; the old base's buffer
         * goes back to the pool (as does, when r is destroyed, every buffer r still has) */
        size_t len = 0, cap = 0;
        void *blob = kind == WT_WIRE_BF16 ? NULL : wt_recv_take_f32(r, &len, &cap);
        download_cache_clear_(cache);
        if (blob) {
            cache->blob = blob;
            cache->len = len;
            cache->cap = cap;
            cache->version = nt->version;
        }
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
    ALOG("version %lld downloaded and verified (%s, %zu bytes on the wire, crc %08x, %.2f s)%s",
         (long long)nt->version,
         kind == WT_WIRE_BF16 ? "bf16" : kind == WT_WIRE_DELTA ? "delta" : "f32", r_total,
         nt->checksum, download_now_() - t0,
         kind == WT_WIRE_BF16 ? "; sampling with the bf16-rounded weights" : "");
    result = DOWNLOAD_OK;
done:
    wchunk_view_clear(&v);
    wt_recv_destroy(r);
    free(tok_json);
    free(cfg_json);
    return result;
}

download_result download_version(session *s, const vtrack_notice *nt, policy **out)
{
    return download_version_opts(s, nt, NULL, NULL, out);
}

/* ---- the downloader thread ------------------------------------------------------------- */

void download_run(session *s, vtrack *vt) { download_run_opts(s, vt, NULL); }

void download_run_opts(session *s, vtrack *vt, const download_opts *o)
{
    download_cache *cache = NULL;
    if (download_cache_create(&cache))
        AWARN("out of memory for the download cache; downloading versions in full into "
              "fresh buffers");
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
        download_result rc = download_version_opts(s, &nt, o, cache, &p);
        vtrack_notice_free(&nt);
        if (rc == DOWNLOAD_STOPPED)
            break;
        if (rc == DOWNLOAD_SKIP) {
            failed_seq = seq;
            continue;
        }
        vtrack_publish(vt, p);
    }
    download_cache_destroy(cache);
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
