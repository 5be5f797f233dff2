/* weights.c - policy snapshots as chunked, checksummed bytes (see weights.h). */
#include "weights.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <string.h>
#include <zlib.h>
#ifdef __GLIBC__
#include <malloc.h> /* mallopt */
#endif

#include <cjson/cJSON.h>

#include "checkpoint.h"

/* ---- CRC-32 --------------------------------------------------------------------------------
 *
 * zlib's CRC-32 is the bit-reflected CRC with P(x) = 0x104C11DB7 (x^32 + x^26 + ... + 1),
 * initial value and final xor 0xFFFFFFFF. The fast path is the carry-less multiplication
 * folding of Gopal et al., "Fast CRC Computation for Generic Polynomials Using PCLMULQDQ"
 * (Intel, 2009): four 128-bit lanes are folded 512 bits forward per step, then folded into one
 * lane, reduced to 64 bits and Barrett-reduced to 32.
 *
 * Folding constants. In the reflected domain a 128-bit lane at distance D bits ahead of the
 * end of the message is multiplied by x^(D) mod P; because the lane's two 64-bit halves are
 * each multiplied separately (and reflection moves the product one bit), the constant for a
 * half that sits E bits ahead is  k(E) = reflect32(x^E mod P) << 1  (33 bits):
 *   k1 = k(4*128 + 32) = k(544) = 0x154442bd4    fold 4 lanes forward 512 bits (high half)
 *   k2 = k(4*128 - 32) = k(480) = 0x1c6e41596    (low half)
 *   k3 = k(128 + 32)   = k(160) = 0x1751997d0    fold 1 lane forward 128 bits (high half)
 *   k4 = k(128 - 32)   = k(96)  = 0x0ccaa009e    (low half)
 *   k5 = k(64)                  = 0x163cd6124    128 -> 64 bits
 *   P' = reflect33(P)           = 0x1db710641    Barrett: the polynomial
 *   mu = reflect33(floor(x^64 / P)) = 0x1f7011641  Barrett: the quotient
 * crc_derive() computes them from P at start-up, exactly as written here (x^E mod P by
 * repeated shift-and-reduce, floor(x^64 / P) by long division over GF(2)); the test
 * checks the CRCs against zlib on random lengths and alignments. */

#if defined(__x86_64__) && defined(__GNUC__)
#define WT_HAVE_PCLMUL 1
#include <immintrin.h>
#endif

#define WT_CRC_POLY 0x104C11DB7ull

static uint64_t crc_reflect(uint64_t v, int bits)
{
    uint64_t r = 0;
    for (int i = 0; i < bits; i++)
        if (v >> i & 1)
            r |= 1ull << (bits - 1 - i);
    return r;
}

/* x^e mod P over GF(2), not reflected. */
static uint64_t crc_xpow_mod(unsigned e)
{
    uint64_t r = 1;
    while (e--) {
        r <<= 1;
        if (r >> 32 & 1)
            r ^= WT_CRC_POLY;
    }
    return r;
}

typedef struct crc_consts {
    uint64_t k1k2[2], k3k4[2], k5[2], pmu[2];
} crc_consts;

static void crc_derive(crc_consts *k)
{
    k->k1k2[0] = crc_reflect(crc_xpow_mod(4 * 128 + 32), 32) << 1;
    k->k1k2[1] = crc_reflect(crc_xpow_mod(4 * 128 - 32), 32) << 1;
    k->k3k4[0] = crc_reflect(crc_xpow_mod(128 + 32), 32) << 1;
    k->k3k4[1] = crc_reflect(crc_xpow_mod(128 - 32), 32) << 1;
    k->k5[0] = crc_reflect(crc_xpow_mod(64), 32) << 1;
    k->k5[1] = 0;
    /* floor(x^64 / P): long division over GF(2), bringing down the 65 bits of x^64 */
    uint64_t rem = 0, q = 0;
    for (int i = 64; i >= 0; i--) {
        rem = rem << 1 | (uint64_t)(i == 64);
        q <<= 1;
        if (rem >> 32 & 1) {
            rem ^= WT_CRC_POLY;
            q |= 1;
        }
    }
    k->pmu[0] = crc_reflect(WT_CRC_POLY, 33);
    k->pmu[1] = crc_reflect(q, 33);
}

static uint32_t crc_zlib(uint32_t crc, const unsigned char *p, size_t len)
{
    uLong c = crc;
    while (len > 0) {
        uInt n = len > 0x40000000u ? 0x40000000u : (uInt)len;
        c = crc32(c, p, n);
        p += n;
        len -= n;
    }
    return (uint32_t)c;
}

#ifdef WT_HAVE_PCLMUL
/* The folding loop over len bytes (len >= 64, a multiple of 16), state = the inverted CRC
 * register; returns the new inverted register. */
__attribute__((target("pclmul,sse4.1"))) static uint32_t
crc_fold(const crc_consts *k, uint32_t state, const unsigned char *p, size_t len)
{
    __m128i a = _mm_xor_si128(_mm_loadu_si128((const __m128i *)p),
                              _mm_cvtsi32_si128((int)state));
    __m128i b = _mm_loadu_si128((const __m128i *)(p + 16));
    __m128i c = _mm_loadu_si128((const __m128i *)(p + 32));
    __m128i d = _mm_loadu_si128((const __m128i *)(p + 48));
    __m128i kk = _mm_loadu_si128((const __m128i *)k->k1k2);
    p += 64;
    len -= 64;
    while (len >= 64) {
        __m128i al = _mm_clmulepi64_si128(a, kk, 0x00), ah = _mm_clmulepi64_si128(a, kk, 0x11);
        __m128i bl = _mm_clmulepi64_si128(b, kk, 0x00), bh = _mm_clmulepi64_si128(b, kk, 0x11);
        __m128i cl = _mm_clmulepi64_si128(c, kk, 0x00), ch = _mm_clmulepi64_si128(c, kk, 0x11);
        __m128i dl = _mm_clmulepi64_si128(d, kk, 0x00), dh = _mm_clmulepi64_si128(d, kk, 0x11);
        a = _mm_xor_si128(_mm_xor_si128(al, ah), _mm_loadu_si128((const __m128i *)p));
        b = _mm_xor_si128(_mm_xor_si128(bl, bh), _mm_loadu_si128((const __m128i *)(p + 16)));
        c = _mm_xor_si128(_mm_xor_si128(cl, ch), _mm_loadu_si128((const __m128i *)(p + 32)));
        d = _mm_xor_si128(_mm_xor_si128(dl, dh), _mm_loadu_si128((const __m128i *)(p + 48)));
        p += 64;
        len -= 64;
    }
    /* four lanes into one */
    kk = _mm_loadu_si128((const __m128i *)k->k3k4);
    __m128i t;
    t = _mm_clmulepi64_si128(a, kk, 0x00);
    a = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(a, kk, 0x11), t), b);
    t = _mm_clmulepi64_si128(a, kk, 0x00);
    a = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(a, kk, 0x11), t), c);
    t = _mm_clmulepi64_si128(a, kk, 0x00);
    a = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(a, kk, 0x11), t), d);
    while (len >= 16) {
        t = _mm_clmulepi64_si128(a, kk, 0x00);
        a = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(a, kk, 0x11), t),
                          _mm_loadu_si128((const __m128i *)p));
        p += 16;
        len -= 16;
    }
    /* 128 -> 64 bits */
    const __m128i mask32 = _mm_setr_epi32(-1, 0, -1, 0);
    t = _mm_clmulepi64_si128(a, kk, 0x10);
    a = _mm_xor_si128(_mm_srli_si128(a, 8), t);
    __m128i k5 = _mm_loadu_si128((const __m128i *)k->k5);
    t = _mm_srli_si128(a, 4);
    a = _mm_xor_si128(_mm_clmulepi64_si128(_mm_and_si128(a, mask32), k5, 0x00), t);
    /* Barrett reduction to 32 bits */
    __m128i pm = _mm_loadu_si128((const __m128i *)k->pmu);
    t = _mm_and_si128(a, mask32);
    t = _mm_clmulepi64_si128(t, pm, 0x10);
    t = _mm_and_si128(t, mask32);
    t = _mm_clmulepi64_si128(t, pm, 0x00);
    a = _mm_xor_si128(a, t);
    return (uint32_t)_mm_extract_epi32(a, 1);
}
#endif

/* 0 = undecided, 1 = zlib, 2 = pclmul; decided once (idempotently: racing threads agree). */
static _Atomic int crc_mode;
static _Atomic int crc_forced_zlib;
static crc_consts crc_k; /* written only before crc_mode becomes 2 (release/acquire) */

static int crc_choose(void)
{
    int m = atomic_load_explicit(&crc_mode, memory_order_acquire);
    if (m)
        return m;
    m = 1;
#ifdef WT_HAVE_PCLMUL
    __builtin_cpu_init();
    if (__builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1")) {
        static _Atomic int derived;
        int expected = 0;
        if (atomic_compare_exchange_strong_explicit(&derived, &expected, 1,
                                                    memory_order_acq_rel,
                                                    memory_order_acquire)) {
            crc_derive(&crc_k);
            atomic_store_explicit(&derived, 2, memory_order_release);
        }
        while (atomic_load_explicit(&derived, memory_order_acquire) != 2)
            ;
        m = 2;
    }
#endif
    atomic_store_explicit(&crc_mode, m, memory_order_release);
    return m;
}

const char *wt_crc32_impl(void)
{
    return crc_choose() == 2 && !atomic_load(&crc_forced_zlib) ? "pclmul" : "zlib";
}

void wt_crc32_force_zlib(int force) { atomic_store(&crc_forced_zlib, force != 0); }

uint32_t wt_crc32(uint32_t crc, const void *data, size_t len)
{
    const unsigned char *p = data;
#ifdef WT_HAVE_PCLMUL
    if (len >= 64 && crc_choose() == 2 && !atomic_load_explicit(&crc_forced_zlib,
                                                                memory_order_relaxed)) {
        size_t n = len & ~(size_t)15;
        crc = ~crc_fold(&crc_k, ~crc, p, n);
        p += n;
        len -= n;
    }
#endif
    return crc_zlib(crc, p, len);
}

/* ---- sender ------------------------------------------------------------------------------- */

struct wt_snapshot {
    _Atomic long refs;
    int64_t version;
    char *config;
    unsigned char *blob;
    size_t size;
    uint32_t crc;
    uint32_t *blk_crc; /* CRC-32 of each WT_CRC_BLOCK block (the last one may be short) */
    size_t nblk;
    uLong blk_op;      /* crc32_combine_gen(WT_CRC_BLOCK) */
    wt_wire wire;
    /* delta variants */
    int64_t base_version;
    wt_range *ranges;
    size_t nranges;
    char **names;
    size_t nnames;
    size_t result_size;
    uint32_t result_crc;
};

/* Fill the CRC table and the whole CRC of s->blob (s->size bytes); sets refs to 1. */
static int snapshot_index(wt_snapshot *s, coh_err *err)
{
    atomic_init(&s->refs, 1);
    s->nblk = (s->size + WT_CRC_BLOCK - 1) / WT_CRC_BLOCK;
    s->blk_crc = malloc((s->nblk ? s->nblk : 1) * sizeof *s->blk_crc);
    if (!s->blk_crc)
        return coh_fail(err, COH_ENOMEM, "out of memory for a weight snapshot's CRC table");
    /* one pass over the blob: every block's CRC, the whole CRC combined from them */
    s->blk_op = crc32_combine_gen((z_off_t)WT_CRC_BLOCK);
    uint32_t whole = 0;
    for (size_t i = 0; i < s->nblk; i++) {
        size_t off = i * WT_CRC_BLOCK;
        size_t n = s->size - off < WT_CRC_BLOCK ? s->size - off : WT_CRC_BLOCK;
        s->blk_crc[i] = wt_crc32(0, s->blob + off, n);
        whole = n == WT_CRC_BLOCK
                    ? (uint32_t)crc32_combine_op(whole, s->blk_crc[i], s->blk_op)
                    : (uint32_t)crc32_combine(whole, s->blk_crc[i], (z_off_t)n);
    }
    s->crc = whole;
    return COH_OK;
}

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
    s->base_version = -1;
    rc = snapshot_index(s, err);
    if (rc) {
        atomic_init(&s->refs, 1);
        wt_snapshot_destroy(s);
        return rc;
    }
    *out = s;
    return COH_OK;
}

wt_snapshot *wt_snapshot_retain(const wt_snapshot *s)
{
    wt_snapshot *m = (wt_snapshot *)s; /* the count is not part of the immutable contents */
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
    return m;
}

void wt_snapshot_destroy(wt_snapshot *s)
{
    if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    free(s->blk_crc);
    free(s->ranges);
    for (size_t i = 0; i < s->nnames; i++)
        free(s->names[i]);
    free(s->names);
    free(s->config);
    free(s->blob);
    free(s);
}

int64_t wt_snapshot_version(const wt_snapshot *s) { return s->version; }
size_t wt_snapshot_size(const wt_snapshot *s) { return s->size; }
uint32_t wt_snapshot_crc(const wt_snapshot *s) { return s->crc; }
const char *wt_snapshot_config(const wt_snapshot *s) { return s->config; }
const void *wt_snapshot_blob(const wt_snapshot *s) { return s->blob; }

wt_wire wt_snapshot_wire(const wt_snapshot *s) { return s->wire; }
size_t wt_snapshot_delta_ranges(const wt_snapshot *s, const wt_range **ranges)
{
    *ranges = s->ranges;
    return s->nranges;
}
size_t wt_snapshot_delta_names(const wt_snapshot *s, const char *const **names)
{
    *names = (const char *const *)s->names;
    return s->nnames;
}
int64_t wt_snapshot_delta_base(const wt_snapshot *s) { return s->base_version; }
size_t wt_snapshot_delta_result_size(const wt_snapshot *s) { return s->result_size; }
uint32_t wt_snapshot_delta_result_crc(const wt_snapshot *s) { return s->result_crc; }

/* ---- wire variants ---- */

uint16_t wt_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep sign, force quiet */
        return (uint16_t)(u >> 16 | 0x40);
    u += 0x7fffu + (u >> 16 & 1); /* round to nearest, ties to even (inf stays inf) */
    return (uint16_t)(u >> 16);
}

static uint64_t load_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* The parsed layout of a safetensors blob: header end and each tensor's absolute range. */
typedef struct st_layout {
    size_t data_start; /* 8 + header length */
    int n;
    char **name;
    wt_range *range;
    int all_f32;
    cJSON *root;
} st_layout;

static void layout_free(st_layout *l)
{
    for (int i = 0; i < l->n; i++)
        free(l->name[i]);
    free(l->name);
    free(l->range);
    cJSON_Delete(l->root);
    memset(l, 0, sizeof *l);
}

static int layout_parse(const unsigned char *blob, size_t size, st_layout *l, coh_err *err)
{
    memset(l, 0, sizeof *l);
    if (size < 8)
        return coh_fail(err, COH_EFORMAT, "weights blob of %zu bytes has no safetensors header",
                        size);
    uint64_t hl = load_le64(blob);
    if (hl > size - 8)
        return coh_fail(err, COH_EFORMAT, "safetensors header length %llu runs past the blob",
                        (unsigned long long)hl);
    l->data_start = 8 + (size_t)hl;
    l->root = cJSON_ParseWithLength((const char *)blob + 8, (size_t)hl);
    if (!cJSON_IsObject(l->root)) {
        layout_free(l);
        return coh_fail(err, COH_EFORMAT, "safetensors header is not a JSON object");
    }
    int cap = cJSON_GetArraySize(l->root);
    l->name = calloc((size_t)cap + 1, sizeof *l->name);
    l->range = calloc((size_t)cap + 1, sizeof *l->range);
    if (!l->name || !l->range) {
        layout_free(l);
        return coh_fail(err, COH_ENOMEM, "out of memory parsing a safetensors header");
    }
    l->all_f32 = 1;
    const cJSON *it;
    cJSON_ArrayForEach(it, l->root)
    {
        if (strcmp(it->string, "__metadata__") == 0)
            continue;
        const cJSON *dt = cJSON_GetObjectItemCaseSensitive(it, "dtype");
        const cJSON *off = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
        if (!cJSON_IsString(dt) || !cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 ||
            !cJSON_IsNumber(cJSON_GetArrayItem(off, 0)) ||
            !cJSON_IsNumber(cJSON_GetArrayItem(off, 1))) {
            layout_free(l);
            return coh_fail(err, COH_EFORMAT, "safetensors header: malformed tensor entry");
        }
        double b = cJSON_GetArrayItem(off, 0)->valuedouble,
               e = cJSON_GetArrayItem(off, 1)->valuedouble;
        if (b < 0 || e < b || e > (double)(size - l->data_start)) {
            layout_free(l);
            return coh_fail(err, COH_EFORMAT,
                            "safetensors header: tensor '%.64s' lies outside the blob",
                            it->string);
        }
        if (strcmp(dt->valuestring, "F32") != 0)
            l->all_f32 = 0;
        l->name[l->n] = strdup(it->string);
        if (!l->name[l->n]) {
            layout_free(l);
            return coh_fail(err, COH_ENOMEM, "out of memory parsing a safetensors header");
        }
        l->range[l->n].off = l->data_start + (size_t)b;
        l->range[l->n].len = (size_t)(e - b);
        l->n++;
    }
    return COH_OK;
}

/* A derived snapshot around blob (ownership passes in). */
static int snapshot_derive(const wt_snapshot *src, unsigned char *blob, size_t size,
                           wt_wire wire, wt_snapshot **out, coh_err *err)
{
    *out = NULL;
    wt_snapshot *d = calloc(1, sizeof *d);
    char *cfg = strdup(src->config);
    if (!d || !cfg) {
        free(d);
        free(cfg);
        free(blob);
        return coh_fail(err, COH_ENOMEM, "out of memory for a weight variant");
    }
    d->blob = blob;
    d->size = size;
    d->config = cfg;
    d->version = src->version;
    d->wire = wire;
    d->base_version = -1;
    int rc = snapshot_index(d, err);
    if (rc) {
        atomic_init(&d->refs, 1);
        wt_snapshot_destroy(d);
        return rc;
    }
    *out = d;
    return COH_OK;
}

int wt_snapshot_make_bf16(const wt_snapshot *f32, wt_snapshot **out, coh_err *err)
{
    *out = NULL;
    if (f32->wire != WT_WIRE_F32)
        return coh_fail(err, COH_EINVAL, "a BF16 variant is made from the F32 snapshot");
    st_layout l;
    int rc = layout_parse(f32->blob, f32->size, &l, err);
    if (rc)
        return rc;
    size_t ds = l.data_start, dlen = f32->size - ds;
    int ok = l.all_f32 && dlen % 4 == 0;
    layout_free(&l);
    if (!ok)
        return coh_fail(err, COH_EFORMAT,
                        "version %lld: BF16 wire needs an F32-only safetensors blob",
                        (long long)f32->version);
    size_t size = ds + dlen / 2;
    unsigned char *b = malloc(size ? size : 1);
    if (!b)
        return coh_fail(err, COH_ENOMEM, "out of memory for the BF16 variant of version %lld",
                        (long long)f32->version);
    memcpy(b, f32->blob, ds);
    /* convert, and CRC the widened data the receiver will rebuild */
    uint32_t wcrc = 0;
    unsigned char wide[4096];
    const unsigned char *src = f32->blob + ds;
    unsigned char *dst = b + ds;
    for (size_t i = 0; i < dlen; i += sizeof wide) {
        size_t n = dlen - i < sizeof wide ? dlen - i : sizeof wide;
        for (size_t k = 0; k < n; k += 4) {
            float f;
            memcpy(&f, src + i + k, 4);
            uint16_t h = wt_f32_to_bf16(f);
            dst[(i + k) / 2] = (unsigned char)h;
            dst[(i + k) / 2 + 1] = (unsigned char)(h >> 8);
            wide[k] = 0;
            wide[k + 1] = 0;
            wide[k + 2] = (unsigned char)h;
            wide[k + 3] = (unsigned char)(h >> 8);
        }
        wcrc = wt_crc32(wcrc, wide, n);
    }
    /* the header names the CRC of the data section: make it the widened data's */
    static const char key[] = "\"cohort_crc32\":\"";
    const char *h = (const char *)b + 8;
    size_t hl = ds - 8;
    for (size_t i = 0; i + sizeof key - 1 + 8 <= hl; i++)
        if (memcmp(h + i, key, sizeof key - 1) == 0) {
            char hex[9];
            snprintf(hex, sizeof hex, "%08x", (unsigned)wcrc);
            memcpy(b + 8 + i + sizeof key - 1, hex, 8);
            break;
        }
    return snapshot_derive(f32, b, size, WT_WIRE_BF16, out, err);
}

static int range_cmp(const void *a, const void *b)
{
    const wt_range *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off;
}

int wt_snapshot_make_delta(const wt_snapshot *base, const wt_snapshot *cur, wt_snapshot **out,
                           coh_err *err)
{
    *out = NULL;
    if (base->wire != WT_WIRE_F32 || cur->wire != WT_WIRE_F32)
        return coh_fail(err, COH_EINVAL, "a delta is made between F32 snapshots");
    if (base->size != cur->size)
        return coh_fail(err, COH_EUNSUPPORTED,
                        "versions %lld and %lld differ in size: no delta",
                        (long long)base->version, (long long)cur->version);
    st_layout lb, lc;
    int rc = layout_parse(base->blob, base->size, &lb, err);
    if (rc)
        return rc;
    rc = layout_parse(cur->blob, cur->size, &lc, err);
    if (rc) {
        layout_free(&lb);
        return rc;
    }
    int same = lb.data_start == lc.data_start && lb.n == lc.n;
    for (int i = 0; same && i < lc.n; i++)
        same = strcmp(lb.name[i], lc.name[i]) == 0 && lb.range[i].off == lc.range[i].off &&
               lb.range[i].len == lc.range[i].len;
    layout_free(&lb);
    if (!same) {
        layout_free(&lc);
        return coh_fail(err, COH_EUNSUPPORTED,
                        "versions %lld and %lld have different tensor layouts: no delta",
                        (long long)base->version, (long long)cur->version);
    }
    wt_range *rg = calloc((size_t)lc.n + 1, sizeof *rg);
    char **names = calloc((size_t)lc.n + 1, sizeof *names);
    size_t nr = 0, nn = 0, total = 0;
    if (!rg || !names)
        goto oom;
    rg[nr++] = (wt_range){0, lc.data_start}; /* the header (its metadata CRC changes) */
    for (int i = 0; i < lc.n; i++) {
        const wt_range *t = &lc.range[i];
        if (t->len && memcmp(base->blob + t->off, cur->blob + t->off, t->len) != 0) {
            rg[nr++] = *t;
            names[nn++] = lc.name[i];
            lc.name[i] = NULL;
        }
    }
    qsort(rg, nr, sizeof *rg, range_cmp);
    for (size_t i = 0; i < nr; i++)
        total += rg[i].len;
    unsigned char *b = malloc(total ? total : 1);
    if (!b)
        goto oom;
    size_t at = 0;
    for (size_t i = 0; i < nr; i++) {
        memcpy(b + at, cur->blob + rg[i].off, rg[i].len);
        at += rg[i].len;
    }
    layout_free(&lc);
    wt_snapshot *d = NULL;
    rc = snapshot_derive(cur, b, total, WT_WIRE_DELTA, &d, err);
    if (rc) {
        free(rg);
        for (size_t i = 0; i < nn; i++)
            free(names[i]);
        free(names);
        return rc;
    }
    d->ranges = rg;
    d->nranges = nr;
    d->names = names;
    d->nnames = nn;
    d->base_version = base->version;
    d->result_size = cur->size;
    d->result_crc = cur->crc;
    *out = d;
    return COH_OK;
oom:
    free(rg);
    for (size_t i = 0; i < nn; i++)
        free(names[i]);
    free(names);
    layout_free(&lc);
    return coh_fail(err, COH_ENOMEM, "out of memory for a delta of version %lld",
                    (long long)cur->version);
}

/* CRC-32 of blob[off, off + n) from the block table: a partial head block, whole blocks
 * combined, a partial tail block. */
static uint32_t snapshot_range_crc(const wt_snapshot *s, size_t off, size_t n)
{
    uint32_t crc = 0;
    size_t end = off + n;
    if (off % WT_CRC_BLOCK) {
        size_t head = WT_CRC_BLOCK - off % WT_CRC_BLOCK;
        if (head > n)
            head = n;
        crc = wt_crc32(0, s->blob + off, head);
        off += head;
    }
    while (end - off >= WT_CRC_BLOCK) {
        crc = (uint32_t)crc32_combine_op(crc, s->blk_crc[off / WT_CRC_BLOCK], s->blk_op);
        off += WT_CRC_BLOCK;
    }
    if (off < end) {
        if (end == s->size) /* the blob's short last block is in the table too */
            crc = (uint32_t)crc32_combine(crc, s->blk_crc[off / WT_CRC_BLOCK],
                                          (z_off_t)(end - off));
        else
            crc = wt_crc32(crc, s->blob + off, end - off);
    }
    return crc;
}

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
    *crc = snapshot_range_crc(s, offset, n);
    return COH_OK;
}

/* ---- receiver ----------------------------------------------------------------------------- */

/* A large download buffer: 2 MiB-aligned and marked for transparent huge pages, so that
 * writing it the first time costs one page fault per 2 MiB instead of per 4 KiB (on a VM a
 * page fault is expensive: it dominated a download's time). Freed with free(). */
static void *wt_big_alloc(size_t n)
{
    size_t huge = (size_t)2 << 20;
    if (n < 2 * huge)
        return malloc(n);
    void *p = NULL;
    if (posix_memalign(&p, huge, n))
        return NULL;
#ifdef MADV_HUGEPAGE
    madvise(p, n & ~(huge - 1), MADV_HUGEPAGE); /* advisory: failure is harmless */
#endif
    return p;
}

/* ---- reusable download buffers ------------------------------------------------------------ */

struct wt_pool {
    unsigned char *buf[WT_POOL_MAX];
    size_t cap[WT_POOL_MAX];
    size_t n;
    wt_pool_stats st;
};

int wt_pool_create(wt_pool **out, coh_err *err)
{
    *out = calloc(1, sizeof **out);
    if (!*out)
        return coh_fail(err, COH_ENOMEM, "out of memory for a download buffer pool");
    return COH_OK;
}

void wt_pool_destroy(wt_pool *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n; i++)
        free(p->buf[i]);
    free(p);
}

void *wt_pool_get(wt_pool *p, size_t n, size_t *cap)
{
    if (n == 0)
        n = 1;
    if (p) {
        /* the smallest buffer that holds n bytes without wasting more than a quarter of it */
        size_t best = p->n;
        for (size_t i = 0; i < p->n; i++)
            if (p->cap[i] >= n && n >= p->cap[i] - p->cap[i] / 4 &&
                (best == p->n || p->cap[i] < p->cap[best]))
                best = i;
        if (best < p->n) {
            void *b = p->buf[best];
            *cap = p->cap[best];
            p->n--;
            p->buf[best] = p->buf[p->n];
            p->cap[best] = p->cap[p->n];
            p->st.reused++;
            p->st.held_bytes -= *cap;
            return b;
        }
    }
    void *b = wt_big_alloc(n);
    *cap = b ? n : 0;
    if (b && p)
        p->st.fresh++;
    return b;
}

void wt_pool_put(wt_pool *p, void *buf, size_t cap)
{
    if (!buf)
        return;
    if (!p) {
        free(buf);
        return;
    }
    if (p->n == WT_POOL_MAX) { /* keep the largest: free the smallest of the pool and buf */
        size_t lo = 0;
        for (size_t i = 1; i < p->n; i++)
            if (p->cap[i] < p->cap[lo])
                lo = i;
        if (p->cap[lo] >= cap) {
            free(buf);
            return;
        }
        p->st.held_bytes -= p->cap[lo];
        free(p->buf[lo]);
        p->n--;
        p->buf[lo] = p->buf[p->n];
        p->cap[lo] = p->cap[p->n];
    }
    p->buf[p->n] = buf;
    p->cap[p->n] = cap;
    p->n++;
    p->st.held_bytes += cap;
}

int wt_malloc_keep_memory(void)
{
#ifdef __GLIBC__
    if (mallopt(M_MMAP_THRESHOLD, 64 << 20) == 1 && mallopt(M_TRIM_THRESHOLD, 512 << 20) == 1)
        return COH_OK;
#endif
    return COH_EUNSUPPORTED;
}

void wt_pool_get_stats(const wt_pool *p, wt_pool_stats *st)
{
    if (p) {
        *st = p->st;
        st->buffers = p->n;
    } else {
        memset(st, 0, sizeof *st);
    }
}

struct wt_recv {
    int64_t version;
    size_t total, have;
    uint32_t total_crc;
    uint32_t run_crc; /* CRC-32 of buf[0, have), combined from the verified chunks' CRCs */
    unsigned char *buf;
    size_t buf_cap;
    wt_pool *pool; /* where buffers come from and go back to (NULL: malloc / free) */
    char *config;
    wt_wire wire;
    /* delta */
    const unsigned char *base;
    wt_range *ranges;
    size_t nranges, result_size;
    uint32_t result_crc;
    /* the verified F32 blob after wt_recv_finish (may be buf itself) */
    unsigned char *f32;
    size_t f32_len, f32_cap;
};

int wt_recv_create(int64_t version, size_t total, uint32_t total_crc, const char *config,
                   wt_recv **out, coh_err *err)
{
    return wt_recv_create_pooled(version, total, total_crc, config, NULL, out, err);
}

int wt_recv_create_pooled(int64_t version, size_t total, uint32_t total_crc, const char *config,
                          wt_pool *pool, wt_recv **out, coh_err *err)
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
    r->pool = pool;
    r->buf = wt_pool_get(pool, total, &r->buf_cap);
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
    if (r->f32 != r->buf)
        wt_pool_put(r->pool, r->f32, r->f32_cap);
    wt_pool_put(r->pool, r->buf, r->buf_cap);
    free(r->ranges);
    free(r->config);
    free(r);
}

int64_t wt_recv_version(const wt_recv *r) { return r->version; }
size_t wt_recv_offset(const wt_recv *r) { return r->have; }
int wt_recv_complete(const wt_recv *r) { return r->have == r->total; }

int wt_recv_add(wt_recv *r, size_t offset, const void *data, size_t len, uint32_t crc,
                coh_err *err)
{
    wt_piece one = {data, len};
    return wt_recv_add_pieces(r, offset, &one, 1, crc, err);
}

int wt_recv_add_pieces(wt_recv *r, size_t offset, const wt_piece *pieces, size_t n,
                       uint32_t crc, coh_err *err)
{
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        if (pieces[i].len && !pieces[i].data)
            return coh_fail(err, COH_EINVAL, "chunk without data");
        len += pieces[i].len;
    }
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
    /* copy into the free space past r->have (not yet counted), check, then count it */
    unsigned char *dst = r->buf + r->have;
    uint32_t c = 0;
    for (size_t i = 0; i < n; i++) {
        if (!pieces[i].len)
            continue;
        memcpy(dst, pieces[i].data, pieces[i].len);
        c = wt_crc32(c, dst, pieces[i].len);
        dst += pieces[i].len;
    }
    if (c != crc)
        return coh_fail(err, COH_EFORMAT,
                        "chunk at offset %zu of version %lld fails its CRC-32 check (damaged "
                        "in transit); ask for it again",
                        offset, (long long)r->version);
    r->run_crc = (uint32_t)crc32_combine(r->run_crc, c, (z_off_t)len);
    r->have += len;
    return COH_OK;
}

void wt_recv_set_bf16(wt_recv *r) { r->wire = WT_WIRE_BF16; }

int wt_recv_set_delta(wt_recv *r, const void *base, size_t base_len, const wt_range *ranges,
                      size_t n, size_t result_size, uint32_t result_crc, coh_err *err)
{
    if (base_len != result_size)
        return coh_fail(err, COH_ERANGE,
                        "delta of version %lld makes %zu bytes but the base holds %zu: the "
                        "layouts differ; download the full version",
                        (long long)r->version, result_size, base_len);
    size_t sum = 0, end = 0;
    for (size_t i = 0; i < n; i++) {
        if (ranges[i].off < end || ranges[i].len > result_size ||
            ranges[i].off > result_size - ranges[i].len)
            return coh_fail(err, COH_EINVAL,
                            "delta of version %lld: range %zu (offset %zu, %zu bytes) overlaps "
                            "the previous one or runs past the %zu-byte result",
                            (long long)r->version, i, ranges[i].off, ranges[i].len,
                            result_size);
        end = ranges[i].off + ranges[i].len;
        sum += ranges[i].len;
    }
    if (sum != r->total)
        return coh_fail(err, COH_EINVAL,
                        "delta of version %lld: the ranges hold %zu bytes but the stream "
                        "announces %zu",
                        (long long)r->version, sum, r->total);
    wt_range *copy = malloc((n ? n : 1) * sizeof *copy);
    if (!copy)
        return coh_fail(err, COH_ENOMEM, "out of memory for a delta's ranges");
    if (n)
        memcpy(copy, ranges, n * sizeof *copy);
    free(r->ranges);
    r->ranges = copy;
    r->nranges = n;
    r->base = base;
    r->result_size = result_size;
    r->result_crc = result_crc;
    r->wire = WT_WIRE_DELTA;
    return COH_OK;
}

/* The F32 file the received blob stands for, verified; sets r->f32. */
static int recv_build_f32(wt_recv *r, coh_err *err)
{
    if (r->wire == WT_WIRE_F32) {
        r->f32 = r->buf;
        r->f32_len = r->total;
        r->f32_cap = r->buf_cap;
        return COH_OK;
    }
    if (r->wire == WT_WIRE_BF16) {
        /* only the header length: the header's offsets describe the widened file */
        uint64_t hl = load_le64(r->buf);
        if (hl > r->total - 8)
            return coh_fail(err, COH_EFORMAT,
                            "BF16 version %lld: header length %llu runs past the blob",
                            (long long)r->version, (unsigned long long)hl);
        size_t ds = 8 + (size_t)hl;
        size_t n = (r->total - ds) / 2;
        if ((r->total - ds) % 2)
            return coh_fail(err, COH_EFORMAT,
                            "BF16 version %lld: the data section has an odd length",
                            (long long)r->version);
        size_t fcap = 0;
        unsigned char *f = wt_pool_get(r->pool, ds + 4 * n, &fcap);
        if (!f)
            return coh_fail(err, COH_ENOMEM, "out of memory widening version %lld to F32",
                            (long long)r->version);
        memcpy(f, r->buf, ds);
        const unsigned char *src = r->buf + ds;
        unsigned char *dst = f + ds;
        for (size_t i = 0; i < n; i++) {
            dst[4 * i] = 0;
            dst[4 * i + 1] = 0;
            dst[4 * i + 2] = src[2 * i];
            dst[4 * i + 3] = src[2 * i + 1];
        }
        r->f32 = f;
        r->f32_len = ds + 4 * n;
        r->f32_cap = fcap;
        return COH_OK;
    }
    /* delta */
    size_t fcap = 0;
    unsigned char *f = wt_pool_get(r->pool, r->result_size, &fcap);
    if (!f)
        return coh_fail(err, COH_ENOMEM, "out of memory patching version %lld",
                        (long long)r->version);
    memcpy(f, r->base, r->result_size);
    size_t at = 0;
    for (size_t i = 0; i < r->nranges; i++) {
        memcpy(f + r->ranges[i].off, r->buf + at, r->ranges[i].len);
        at += r->ranges[i].len;
    }
    if (wt_crc32(0, f, r->result_size) != r->result_crc) {
        wt_pool_put(r->pool, f, fcap);
        return coh_fail(err, COH_EFORMAT,
                        "version %lld: the base patched with the delta fails the version's "
                        "CRC-32 (the base is not what the learner had); download it in full",
                        (long long)r->version);
    }
    r->f32 = f;
    r->f32_len = r->result_size;
    r->f32_cap = fcap;
    return COH_OK;
}

void *wt_recv_take_f32(wt_recv *r, size_t *len, size_t *cap)
{
    void *p = r->f32;
    *len = p ? r->f32_len : 0;
    if (cap)
        *cap = p ? r->f32_cap : 0;
    if (p == r->buf) {
        r->buf = NULL;
        r->buf_cap = 0;
    }
    r->f32 = NULL;
    r->f32_len = 0;
    r->f32_cap = 0;
    return p;
}

int wt_recv_finish(wt_recv *r, model **out, coh_err *err)
{
    *out = NULL;
    if (r->have != r->total)
        return coh_fail(err, COH_ESTATE, "version %lld is incomplete: %zu of %zu bytes",
                        (long long)r->version, r->have, r->total);
    if (r->run_crc != r->total_crc)
        return coh_fail(err, COH_EFORMAT,
                        "version %lld: the assembled %zu bytes fail the announced CRC-32; "
                        "download it again",
                        (long long)r->version, r->total);
    if (r->f32 != r->buf)
        wt_pool_put(r->pool, r->f32, r->f32_cap);
    r->f32 = NULL;
    int rc = recv_build_f32(r, err);
    if (rc)
        return rc;
    rc = ckpt_from_buffer(r->config, strlen(r->config), r->f32, r->f32_len, out, err);
    if (rc) {
        if (r->f32 != r->buf)
            wt_pool_put(r->pool, r->f32, r->f32_cap);
        r->f32 = NULL;
    }
    return rc;
}
