/* weights.c - policy snapshots as chunked, checksummed bytes (see weights.h). */
#include "weights.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "checkpoint.h"

uint32_t wt_crc32(uint32_t crc, const void *data, size_t len)
{
    const unsigned char *p = data;
    uLong c = crc;
    while (len > 0) {
        uInt n = len > 0x40000000u ? 0x40000000u : (uInt)len;
        c = crc32(c, p, n);
        p += n;
        len -= n;
    }
    return (uint32_t)c;
}

/* ---- sender ------------------------------------------------------------------------------- */

struct wt_snapshot {
    int64_t version;
    char *config;
    unsigned char *blob;
    size_t size;
    uint32_t crc;
};

int wt_snapshot_make(const model *m, int64_t version, wt_snapshot **out, coh_err *err)
{
    *out = NULL;
    wt_snapshot *s = calloc(1, sizeof *s);
    if (!s)
        return coh_fail(err, COH_ENOMEM, "out of memory for a weight snapshot");
    void *blob = NULL;
    int rc = ckpt_to_buffer(m, &s->config, &blob, &s->size, err);
    if (rc) {
        free(s);
        return rc;
    }
    s->blob = blob;
    s->version = version;
    s->crc = wt_crc32(0, s->blob, s->size);
    *out = s;
    return COH_OK;
}

void wt_snapshot_destroy(wt_snapshot *s)
{
    if (!s)
        return;
    free(s->config);
    free(s->blob);
    free(s);
}

int64_t wt_snapshot_version(const wt_snapshot *s) { return s->version; }
size_t wt_snapshot_size(const wt_snapshot *s) { return s->size; }
uint32_t wt_snapshot_crc(const wt_snapshot *s) { return s->crc; }
const char *wt_snapshot_config(const wt_snapshot *s) { return s->config; }

int wt_snapshot_chunk(const wt_snapshot *s, size_t offset, size_t max_len, const void **data,
                      size_t *len, uint32_t *crc, coh_err *err)
{
    if (offset > s->size)
        return coh_fail(err, COH_ERANGE,
                        "offset %zu is past the end of version %lld (%zu bytes); restart the "
                        "download at 0",
                        offset, (long long)s->version, s->size);
    size_t n = s->size - offset;
    if (n > max_len)
        n = max_len;
    *data = s->blob + offset;
    *len = n;
    *crc = wt_crc32(0, s->blob + offset, n);
    return COH_OK;
}

/* ---- receiver ----------------------------------------------------------------------------- */

struct wt_recv {
    int64_t version;
    size_t total, have;
    uint32_t total_crc;
    unsigned char *buf;
    char *config;
};

int wt_recv_create(int64_t version, size_t total, uint32_t total_crc, const char *config,
                   wt_recv **out, coh_err *err)
{
    *out = NULL;
    if (!config)
        return coh_fail(err, COH_EINVAL, "version %lld arrived without its config.json",
                        (long long)version);
    if (total < 8 || total > ((size_t)1 << 40))
        return coh_fail(err, COH_ERANGE,
                        "version %lld announces %zu bytes of weights, which cannot be a "
                        "safetensors file of a policy",
                        (long long)version, total);
    wt_recv *r = calloc(1, sizeof *r);
    if (!r)
        return coh_fail(err, COH_ENOMEM, "out of memory for a weight download");
    r->buf = malloc(total);
    r->config = strdup(config);
    if (!r->buf || !r->config) {
        wt_recv_destroy(r);
        return coh_fail(err, COH_ENOMEM, "cannot hold %zu bytes of weights in memory", total);
    }
    r->version = version;
    r->total = total;
    r->total_crc = total_crc;
    *out = r;
    return COH_OK;
}

void wt_recv_destroy(wt_recv *r)
{
    if (!r)
        return;
    free(r->buf);
    free(r->config);
    free(r);
}

int64_t wt_recv_version(const wt_recv *r) { return r->version; }
size_t wt_recv_offset(const wt_recv *r) { return r->have; }
int wt_recv_complete(const wt_recv *r) { return r->have == r->total; }

int wt_recv_add(wt_recv *r, size_t offset, const void *data, size_t len, uint32_t crc,
                coh_err *err)
{
    if (offset != r->have)
        return coh_fail(err, COH_EINVAL,
                        "chunk of version %lld at offset %zu, but %zu bytes are held: chunks "
                        "must arrive in order; resume at %zu",
                        (long long)r->version, offset, r->have, r->have);
    if (len > r->total - r->have)
        return coh_fail(err, COH_ERANGE,
                        "chunk of %zu bytes at offset %zu runs past the announced %zu bytes of "
                        "version %lld",
                        len, offset, r->total, (long long)r->version);
    if (len && !data)
        return coh_fail(err, COH_EINVAL, "chunk without data");
    if (wt_crc32(0, data, len) != crc)
        return coh_fail(err, COH_EFORMAT,
                        "chunk at offset %zu of version %lld fails its CRC-32 check (damaged "
                        "in transit); ask for it again",
                        offset, (long long)r->version);
    if (len)
        memcpy(r->buf + r->have, data, len);
    r->have += len;
    return COH_OK;
}

int wt_recv_finish(wt_recv *r, model **out, coh_err *err)
{
    *out = NULL;
    if (r->have != r->total)
        return coh_fail(err, COH_ESTATE, "version %lld is incomplete: %zu of %zu bytes",
                        (long long)r->version, r->have, r->total);
    if (wt_crc32(0, r->buf, r->total) != r->total_crc)
        return coh_fail(err, COH_EFORMAT,
                        "version %lld: the assembled %zu bytes fail the announced CRC-32; "
                        "download it again",
                        (long long)r->version, r->total);
    return ckpt_from_buffer(r->config, strlen(r->config), r->buf, r->total, out, err);
}
