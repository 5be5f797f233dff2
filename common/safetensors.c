/* safetensors.c - safetensors reader (F32/F16/BF16) and F32 writer (see safetensors.h).
 *
 * Reading loads the whole file, parses the JSON header with cJSON and validates every entry
 * before anything else may look at the data:
 *   - the 8-byte header length fits in the file and is not absurd;
 *   - the header is one JSON object, followed only by whitespace padding;
 *   - each tensor has a known dtype, a shape of at most ST_MAX_DIMS non-negative integers and
 *     data_offsets [begin, end] inside the data section with end - begin == numel * size;
 *   - no two tensors share a name or overlap in the data section;
 *   - "__metadata__", when present, maps strings to strings; a "cohort_crc32" entry is
 *     checked against the CRC-32 of the whole data section.
 * Only then are st_info / st_read_f32 usable, so they never index outside the buffer.
 * Multi-byte values are decoded byte by byte, so the reader works on any host byte order.
 */
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "fsutil.h"

/* Largest header accepted (the reference implementation uses the same 100 MB cap). */
#define ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)
/* Integers in the header are JSON numbers (doubles): only 2^53 is exactly representable. */
#define ST_MAX_JSON_INT ((uint64_t)1 << 53)
/* Names are clipped to this many bytes in error messages. */
#define NAME_CLIP 120

struct st_file {
    char *buf;                 /* the whole file */
    size_t len;                /* its size */
    const unsigned char *data; /* start of the data section, inside buf */
    size_t data_len;
    int n;                     /* tensors */
    st_tensor_info *info;      /* [n], header order */
    size_t *begin;             /* [n] byte offset of each tensor inside the data section */
    char **names;              /* [n] owned copies; info[i].name points here */
    int nmeta;
    char **meta_key;           /* [nmeta] */
    char **meta_val;           /* [nmeta] */
};

/* ---- number conversion ------------------------------------------------------------- */

static float bits_to_float(uint32_t bits)
{
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

float st_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign; /* signed zero */
        } else {
            /* Subnormal: mant * 2^-24. Shift until the implicit bit (bit 10) appears; each
             * shift lowers the exponent by one from the smallest normal exponent -14. */
            int s = 0;
            while (!(mant & 0x400u)) {
                mant <<= 1;
                s++;
            }
            bits = sign | ((uint32_t)(127 - 14 - s) << 23) | ((mant & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13); /* inf, or nan keeping its payload */
    } else {
        bits = sign | ((exp - 15 + 127) << 23) | (mant << 13);
    }
    return bits_to_float(bits);
}

float st_bf16_to_f32(uint16_t h) { return bits_to_float((uint32_t)h << 16); }

static uint64_t load_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static void store_le64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static size_t dtype_size(st_dtype t) { return t == ST_F32 ? 4 : 2; }

static const char *dtype_name(st_dtype t)
{
    switch (t) {
    case ST_F32: return "F32";
    case ST_F16: return "F16";
    case ST_BF16: return "BF16";
    }
    return "?";
}

static int host_is_little_endian(void)
{
    const uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

/* zlib's crc32 takes a uInt length: feed big buffers in pieces. */
static uint32_t crc32_update(uint32_t crc, const void *p, size_t n)
{
    const unsigned char *b = p;
    uLong c = crc;
    while (n > 0) {
        uInt chunk = n > (size_t)1 << 30 ? (uInt)1 << 30 : (uInt)n;
        c = crc32(c, b, chunk);
        b += chunk;
        n -= chunk;
    }
    return (uint32_t)c;
}

/* ---- header parsing ----------------------------------------------------------------- */

/* A JSON number that is an exact non-negative integer <= max. */
static int json_uint(const cJSON *item, uint64_t max, uint64_t *out)
{
    if (!cJSON_IsNumber(item))
        return 0;
    double d = item->valuedouble;
    if (!(d >= 0.0) || d > (double)max || d != (double)(uint64_t)d)
        return 0;
    *out = (uint64_t)d;
    return 1;
}

static int parse_dtype(const char *s, st_dtype *out)
{
    if (strcmp(s, "F32") == 0)
        *out = ST_F32;
    else if (strcmp(s, "F16") == 0)
        *out = ST_F16;
    else if (strcmp(s, "BF16") == 0)
        *out = ST_BF16;
    else
        return 0;
    return 1;
}

/* Validate one tensor entry and fill f->info[i], f->begin[i]. */
static int parse_tensor(st_file *f, int i, const char *name, const cJSON *obj, coh_err *err)
{
    if (!cJSON_IsObject(obj))
        return coh_fail(err, COH_EFORMAT, "header entry for tensor '%.*s' is not an object",
                        NAME_CLIP, name);
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(obj, "dtype");
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(obj, "shape");
    const cJSON *jo = cJSON_GetObjectItemCaseSensitive(obj, "data_offsets");
    if (!cJSON_IsString(jd))
        return coh_fail(err, COH_EFORMAT, "tensor '%.*s' has no \"dtype\" string", NAME_CLIP,
                        name);
    if (!cJSON_IsArray(js))
        return coh_fail(err, COH_EFORMAT, "tensor '%.*s' has no \"shape\" array", NAME_CLIP,
                        name);
    if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2)
        return coh_fail(err, COH_EFORMAT,
                        "tensor '%.*s' has no \"data_offsets\" array of two integers",
                        NAME_CLIP, name);

    st_tensor_info *ti = &f->info[i];
    ti->name = f->names[i];
    if (!parse_dtype(jd->valuestring, &ti->dtype))
        return coh_fail(err, COH_EUNSUPPORTED,
                        "tensor '%.*s' has dtype '%.16s', which is not supported (Cohort reads "
                        "F32, F16 and BF16; convert the file)",
                        NAME_CLIP, name, jd->valuestring);

    int ndim = cJSON_GetArraySize(js);
    if (ndim > ST_MAX_DIMS)
        return coh_fail(err, COH_EUNSUPPORTED, "tensor '%.*s' has %d dimensions (at most %d "
                        "supported)", NAME_CLIP, name, ndim, ST_MAX_DIMS);
    ti->ndim = ndim;
    size_t numel = 1;
    int d = 0;
    const cJSON *dim;
    cJSON_ArrayForEach(dim, js)
    {
        uint64_t v;
        if (!json_uint(dim, ST_MAX_JSON_INT, &v))
            return coh_fail(err, COH_EFORMAT,
                            "tensor '%.*s': shape entry %d is not a non-negative integer",
                            NAME_CLIP, name, d);
        if (v != 0 && numel > SIZE_MAX / v)
            return coh_fail(err, COH_EFORMAT, "tensor '%.*s': shape is too large", NAME_CLIP,
                            name);
        numel *= (size_t)v;
        ti->shape[d++] = (long long)v;
    }
    for (; d < ST_MAX_DIMS; d++)
        ti->shape[d] = 0;
    ti->numel = numel;
    size_t esz = dtype_size(ti->dtype);
    if (numel > SIZE_MAX / esz)
        return coh_fail(err, COH_EFORMAT, "tensor '%.*s': shape is too large", NAME_CLIP,
                        name);
    size_t nbytes = numel * esz;

    uint64_t b, e;
    if (!json_uint(cJSON_GetArrayItem(jo, 0), ST_MAX_JSON_INT, &b) ||
        !json_uint(cJSON_GetArrayItem(jo, 1), ST_MAX_JSON_INT, &e))
        return coh_fail(err, COH_EFORMAT,
                        "tensor '%.*s': data_offsets are not non-negative integers", NAME_CLIP,
                        name);
    if (b > e)
        return coh_fail(err, COH_EFORMAT,
                        "tensor '%.*s': data_offsets [%llu, %llu] end before they begin",
                        NAME_CLIP, name, (unsigned long long)b, (unsigned long long)e);
    if (e > f->data_len)
        return coh_fail(err, COH_EFORMAT,
                        "tensor '%.*s': data_offsets [%llu, %llu] lie outside the data section "
                        "of %zu bytes (file truncated?)",
                        NAME_CLIP, name, (unsigned long long)b, (unsigned long long)e,
                        f->data_len);
    if (e - b != nbytes)
        return coh_fail(err, COH_EFORMAT,
                        "tensor '%.*s': data_offsets span %llu bytes but %s shape needs %zu",
                        NAME_CLIP, name, (unsigned long long)(e - b), dtype_name(ti->dtype),
                        nbytes);
    f->begin[i] = (size_t)b;
    return COH_OK;
}

static int parse_metadata(st_file *f, const cJSON *obj, coh_err *err)
{
    if (!cJSON_IsObject(obj))
        return coh_fail(err, COH_EFORMAT, "\"__metadata__\" is not an object");
    int n = cJSON_GetArraySize(obj);
    f->meta_key = calloc((size_t)n + 1, sizeof *f->meta_key);
    f->meta_val = calloc((size_t)n + 1, sizeof *f->meta_val);
    if (!f->meta_key || !f->meta_val)
        return coh_fail(err, COH_ENOMEM, "out of memory reading the metadata");
    const cJSON *it;
    cJSON_ArrayForEach(it, obj)
    {
        if (!cJSON_IsString(it))
            return coh_fail(err, COH_EFORMAT, "metadata value of '%.*s' is not a string",
                            NAME_CLIP, it->string);
        for (int j = 0; j < f->nmeta; j++)
            if (strcmp(f->meta_key[j], it->string) == 0)
                return coh_fail(err, COH_EFORMAT, "metadata key '%.*s' appears twice",
                                NAME_CLIP, it->string);
        f->meta_key[f->nmeta] = strdup(it->string);
        f->meta_val[f->nmeta] = strdup(it->valuestring);
        if (!f->meta_key[f->nmeta] || !f->meta_val[f->nmeta]) {
            free(f->meta_key[f->nmeta]);
            free(f->meta_val[f->nmeta]);
            f->meta_key[f->nmeta] = f->meta_val[f->nmeta] = NULL;
            return coh_fail(err, COH_ENOMEM, "out of memory reading the metadata");
        }
        f->nmeta++;
    }
    return COH_OK;
}

/* qsort helpers: order tensors by name / by data offset. */
typedef struct idx_key {
    const char *name;
    size_t begin, end;
} idx_key;

static int cmp_by_name(const void *a, const void *b)
{
    return strcmp(((const idx_key *)a)->name, ((const idx_key *)b)->name);
}

static int cmp_by_begin(const void *a, const void *b)
{
    size_t x = ((const idx_key *)a)->begin, y = ((const idx_key *)b)->begin;
    return x < y ? -1 : x > y;
}

/* No duplicate names; no two non-empty byte ranges overlap. */
static int check_names_and_overlaps(const st_file *f, coh_err *err)
{
    if (f->n < 2)
        return COH_OK;
    idx_key *k = malloc((size_t)f->n * sizeof *k);
    if (!k)
        return coh_fail(err, COH_ENOMEM, "out of memory checking the header");
    for (int i = 0; i < f->n; i++) {
        k[i].name = f->info[i].name;
        k[i].begin = f->begin[i];
        k[i].end = f->begin[i] + f->info[i].numel * dtype_size(f->info[i].dtype);
    }
    int rc = COH_OK;
    qsort(k, (size_t)f->n, sizeof *k, cmp_by_name);
    for (int i = 1; i < f->n && rc == COH_OK; i++)
        if (strcmp(k[i - 1].name, k[i].name) == 0)
            rc = coh_fail(err, COH_EFORMAT, "tensor name '%.*s' appears twice in the header",
                          NAME_CLIP, k[i].name);
    if (rc == COH_OK) {
        qsort(k, (size_t)f->n, sizeof *k, cmp_by_begin);
        size_t prev_end = 0;
        const char *prev = NULL;
        for (int i = 0; i < f->n; i++) {
            if (k[i].end == k[i].begin)
                continue; /* empty tensors occupy no bytes */
            if (prev && k[i].begin < prev_end) {
                rc = coh_fail(err, COH_EFORMAT,
                              "tensors '%.*s' and '%.*s' overlap in the data section",
                              NAME_CLIP, prev, NAME_CLIP, k[i].name);
                break;
            }
            prev_end = k[i].end;
            prev = k[i].name;
        }
    }
    free(k);
    return rc;
}

static int parse_hex32(const char *s, uint32_t *out)
{
    if (strlen(s) != 8)
        return 0;
    uint32_t v = 0;
    for (int i = 0; i < 8; i++) {
        char c = s[i];
        uint32_t d;
        if (c >= '0' && c <= '9')
            d = (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            d = (uint32_t)(c - 'A' + 10);
        else
            return 0;
        v = (v << 4) | d;
    }
    *out = v;
    return 1;
}

static int verify_crc(const st_file *f, coh_err *err)
{
    const char *want_s = st_metadata(f, "cohort_crc32");
    if (!want_s)
        return COH_OK; /* a file from elsewhere: nothing to check */
    uint32_t want;
    if (!parse_hex32(want_s, &want))
        return coh_fail(err, COH_EFORMAT,
                        "metadata cohort_crc32 '%.16s' is not an 8-digit hex number; the file "
                        "is corrupt",
                        want_s);
    uint32_t got = crc32_update((uint32_t)crc32(0L, Z_NULL, 0), f->data, f->data_len);
    if (got != want)
        return coh_fail(err, COH_EFORMAT,
                        "CRC-32 of the data section is %08x but the header says %08x: the file "
                        "is corrupt (damaged copy or disk error); restore it from another copy",
                        (unsigned)got, (unsigned)want);
    return COH_OK;
}

/* Parse and validate everything; f->buf and f->len are set. */
static int parse_file(st_file *f, coh_err *err)
{
    if (f->len < 8)
        return coh_fail(err, COH_EFORMAT,
                        "file is %zu bytes, too short to hold the 8-byte header length "
                        "(truncated?)",
                        f->len);
    uint64_t hlen = load_le64((const unsigned char *)f->buf);
    if (hlen > (uint64_t)(f->len - 8))
        return coh_fail(err, COH_EFORMAT,
                        "header length %llu is larger than the %zu bytes that follow it "
                        "(truncated or not a safetensors file)",
                        (unsigned long long)hlen, f->len - 8);
    if (hlen < 2 || hlen > ST_MAX_HEADER)
        return coh_fail(err, COH_EFORMAT,
                        "header length %llu is not plausible (not a safetensors file?)",
                        (unsigned long long)hlen);
    const char *htext = f->buf + 8;
    f->data = (const unsigned char *)f->buf + 8 + hlen;
    f->data_len = f->len - 8 - (size_t)hlen;

    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(htext, (size_t)hlen, &end, 0);
    if (!root) {
        size_t at = end && end >= htext && end <= htext + hlen ? (size_t)(end - htext) : 0;
        return coh_fail(err, COH_EFORMAT, "header is not valid JSON (error near byte %zu of %llu)",
                        at, (unsigned long long)hlen);
    }
    int rc = COH_OK;
    for (const char *p = end; p < htext + hlen; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            rc = coh_fail(err, COH_EFORMAT, "header has unexpected bytes after the JSON object");
            goto out;
        }
    if (!cJSON_IsObject(root)) {
        rc = coh_fail(err, COH_EFORMAT, "header is JSON but not an object");
        goto out;
    }

    int total = cJSON_GetArraySize(root);
    f->info = calloc((size_t)total + 1, sizeof *f->info);
    f->begin = calloc((size_t)total + 1, sizeof *f->begin);
    f->names = calloc((size_t)total + 1, sizeof *f->names);
    if (!f->info || !f->begin || !f->names) {
        rc = coh_fail(err, COH_ENOMEM, "out of memory reading the header");
        goto out;
    }
    int seen_meta = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, root)
    {
        if (strcmp(it->string, "__metadata__") == 0) {
            if (seen_meta++) {
                rc = coh_fail(err, COH_EFORMAT, "\"__metadata__\" appears twice");
                goto out;
            }
            if ((rc = parse_metadata(f, it, err)) != COH_OK)
                goto out;
            continue;
        }
        if (it->string[0] == '\0') {
            rc = coh_fail(err, COH_EFORMAT, "a tensor has an empty name");
            goto out;
        }
        int i = f->n;
        f->names[i] = strdup(it->string);
        if (!f->names[i]) {
            rc = coh_fail(err, COH_ENOMEM, "out of memory reading the header");
            goto out;
        }
        f->n++;
        if ((rc = parse_tensor(f, i, it->string, it, err)) != COH_OK)
            goto out;
    }
    if ((rc = check_names_and_overlaps(f, err)) != COH_OK)
        goto out;
    rc = verify_crc(f, err);
out:
    cJSON_Delete(root);
    return rc;
}

/* ---- reading API -------------------------------------------------------------------- */

int st_open(const char *path, st_file **out, coh_err *err)
{
    if (out)
        *out = NULL;
    if (!path || !out)
        return coh_fail(err, COH_EINVAL, "st_open: NULL argument");
    st_file *f = calloc(1, sizeof *f);
    if (!f)
        return coh_fail(err, COH_ENOMEM, "out of memory opening '%s'", path);
    int rc = fs_read_all(path, &f->buf, &f->len, err);
    if (rc != COH_OK) {
        free(f);
        return rc;
    }
    rc = parse_file(f, err);
    if (rc != COH_OK) {
        st_close(f);
        return coh_wrap(err, rc, "safetensors file '%s'", path);
    }
    *out = f;
    return COH_OK;
}

int st_open_buffer(const void *data, size_t len, const char *label, st_file **out, coh_err *err)
{
    if (out)
        *out = NULL;
    if ((!data && len) || !out)
        return coh_fail(err, COH_EINVAL, "st_open_buffer: NULL argument");
    if (!label)
        label = "in-memory safetensors";
    st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->buf = malloc(len + 1))) {
        free(f);
        return coh_fail(err, COH_ENOMEM, "out of memory reading %s (%zu bytes)", label, len);
    }
    if (len)
        memcpy(f->buf, data, len);
    f->buf[len] = '\0';
    f->len = len;
    int rc = parse_file(f, err);
    if (rc != COH_OK) {
        st_close(f);
        return coh_wrap(err, rc, "%s", label);
    }
    *out = f;
    return COH_OK;
}

void st_close(st_file *f)
{
    if (!f)
        return;
    if (f->names)
        for (int i = 0; i < f->n; i++)
            free(f->names[i]);
    for (int i = 0; i < f->nmeta; i++) {
        free(f->meta_key[i]);
        free(f->meta_val[i]);
    }
    free(f->names);
    free(f->info);
    free(f->begin);
    free(f->meta_key);
    free(f->meta_val);
    free(f->buf);
    free(f);
}

int st_count(const st_file *f) { return f ? f->n : 0; }

const st_tensor_info *st_info(const st_file *f, int i)
{
    if (!f || i < 0 || i >= f->n)
        return NULL;
    return &f->info[i];
}

static int find_index(const st_file *f, const char *name)
{
    if (!f || !name)
        return -1;
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->info[i].name, name) == 0)
            return i;
    return -1;
}

const st_tensor_info *st_find(const st_file *f, const char *name)
{
    int i = find_index(f, name);
    return i < 0 ? NULL : &f->info[i];
}

const char *st_metadata(const st_file *f, const char *key)
{
    if (!f || !key)
        return NULL;
    for (int i = 0; i < f->nmeta; i++)
        if (strcmp(f->meta_key[i], key) == 0)
            return f->meta_val[i];
    return NULL;
}

int st_read_f32(const st_file *f, const char *name, float *dst, size_t n, coh_err *err)
{
    if (!f || !name || (n > 0 && !dst))
        return coh_fail(err, COH_EINVAL, "st_read_f32: NULL argument");
    int i = find_index(f, name);
    if (i < 0)
        return coh_fail(err, COH_ENOTFOUND, "tensor '%.*s' is not in the file", NAME_CLIP,
                        name);
    const st_tensor_info *ti = &f->info[i];
    if (n != ti->numel)
        return coh_fail(err, COH_ESHAPE, "tensor '%.*s' has %zu elements, caller expects %zu",
                        NAME_CLIP, name, ti->numel, n);
    if (n == 0)
        return COH_OK;
    const unsigned char *p = f->data + f->begin[i];
    switch (ti->dtype) {
    case ST_F32:
        if (host_is_little_endian()) {
            memcpy(dst, p, n * sizeof(float));
        } else {
            for (size_t k = 0; k < n; k++, p += 4)
                dst[k] = bits_to_float((uint32_t)p[0] | (uint32_t)p[1] << 8 |
                                       (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
        }
        break;
    case ST_F16:
        for (size_t k = 0; k < n; k++, p += 2)
            dst[k] = st_f16_to_f32((uint16_t)(p[0] | p[1] << 8));
        break;
    case ST_BF16:
        for (size_t k = 0; k < n; k++, p += 2)
            dst[k] = st_bf16_to_f32((uint16_t)(p[0] | p[1] << 8));
        break;
    }
    return COH_OK;
}

/* ---- writing ------------------------------------------------------------------------ */

/* A growable string; oom latches so callers check once at the end. */
typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_append(sbuf *s, const char *t, size_t n)
{
    if (s->oom)
        return;
    if (s->len + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 256;
        while (cap < s->len + n + 1)
            cap *= 2;
        char *q = realloc(s->p, cap);
        if (!q) {
            s->oom = 1;
            return;
        }
        s->p = q;
        s->cap = cap;
    }
    memcpy(s->p + s->len, t, n);
    s->len += n;
    s->p[s->len] = '\0';
}

static void sb_puts(sbuf *s, const char *t) { sb_append(s, t, strlen(t)); }

static void sb_printf_u64(sbuf *s, unsigned long long v)
{
    char tmp[32];
    int k = snprintf(tmp, sizeof tmp, "%llu", v);
    sb_append(s, tmp, (size_t)k);
}

/* Append t as a JSON string literal. */
static void sb_json_string(sbuf *s, const char *t)
{
    sb_append(s, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)t; *c; c++) {
        if (*c == '"' || *c == '\\') {
            char esc[2] = {'\\', (char)*c};
            sb_append(s, esc, 2);
        } else if (*c < 0x20) {
            char esc[8];
            int k = snprintf(esc, sizeof esc, "\\u%04x", (unsigned)*c);
            sb_append(s, esc, (size_t)k);
        } else {
            sb_append(s, (const char *)c, 1);
        }
    }
    sb_append(s, "\"", 1);
}

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Check names, shapes and metadata; fill nbytes[i]. */
static int validate_entries(const st_entry *entries, int n, const char *const *extra_meta,
                            size_t *nbytes, coh_err *err)
{
    for (int i = 0; i < n; i++) {
        const st_entry *e = &entries[i];
        if (!e->name || !e->name[0] || strcmp(e->name, "__metadata__") == 0)
            return coh_fail(err, COH_EINVAL, "tensor %d has an empty or reserved name", i);
        if (e->ndim < 0 || e->ndim > ST_MAX_DIMS)
            return coh_fail(err, COH_EINVAL, "tensor '%.*s' has %d dimensions (0..%d allowed)",
                            NAME_CLIP, e->name, e->ndim, ST_MAX_DIMS);
        size_t numel = 1;
        for (int d = 0; d < e->ndim; d++) {
            long long v = e->shape[d];
            if (v < 0 || (uint64_t)v > ST_MAX_JSON_INT)
                return coh_fail(err, COH_EINVAL, "tensor '%.*s' has a bad dimension %lld",
                                NAME_CLIP, e->name, v);
            if (v != 0 && numel > SIZE_MAX / 4 / (size_t)v)
                return coh_fail(err, COH_EINVAL, "tensor '%.*s' is too large", NAME_CLIP,
                                e->name);
            numel *= (size_t)v;
        }
        if (numel > 0 && !e->data)
            return coh_fail(err, COH_EINVAL, "tensor '%.*s' has no data", NAME_CLIP, e->name);
        nbytes[i] = numel * 4;
    }
    if (n > 1) {
        const char **names = malloc((size_t)n * sizeof *names);
        if (!names)
            return coh_fail(err, COH_ENOMEM, "out of memory checking tensor names");
        for (int i = 0; i < n; i++)
            names[i] = entries[i].name;
        qsort(names, (size_t)n, sizeof *names, cmp_str_ptr);
        for (int i = 1; i < n; i++)
            if (strcmp(names[i - 1], names[i]) == 0) {
                int rc = coh_fail(err, COH_EINVAL, "tensor name '%.*s' is given twice",
                                  NAME_CLIP, names[i]);
                free(names);
                return rc;
            }
        free(names);
    }
    for (int k = 0; extra_meta && extra_meta[k]; k += 2) {
        if (!extra_meta[k + 1])
            return coh_fail(err, COH_EINVAL, "metadata key '%.*s' has no value", NAME_CLIP,
                            extra_meta[k]);
        if (strcmp(extra_meta[k], "format") == 0 || strcmp(extra_meta[k], "cohort_crc32") == 0)
            return coh_fail(err, COH_EINVAL, "metadata key '%s' is reserved", extra_meta[k]);
        for (int j = 0; j < k; j += 2)
            if (strcmp(extra_meta[j], extra_meta[k]) == 0)
                return coh_fail(err, COH_EINVAL, "metadata key '%.*s' is given twice",
                                NAME_CLIP, extra_meta[k]);
    }
    return COH_OK;
}

/* Build the file; write it atomically to path, or (blob != NULL) return it in memory. */
static int write_impl(const char *path, const st_entry *entries, int n,
                      const char *const *extra_meta, void **blob, size_t *blob_len, coh_err *err)
{
    if (!path || n < 0 || (n > 0 && !entries))
        return coh_fail(err, COH_EINVAL, "st_write: bad arguments");

    int rc = COH_OK;
    int nparts = n + 2;
    size_t *nbytes = calloc((size_t)n + 1, sizeof *nbytes);
    const void **parts = calloc((size_t)nparts, sizeof *parts);
    size_t *lens = calloc((size_t)nparts, sizeof *lens);
    float **swapped = calloc((size_t)n + 1, sizeof *swapped); /* big-endian hosts only */
    sbuf h = {0};
    if (!nbytes || !parts || !lens || !swapped) {
        rc = coh_fail(err, COH_ENOMEM, "out of memory writing '%s'", path);
        goto out;
    }
    if ((rc = validate_entries(entries, n, extra_meta, nbytes, err)) != COH_OK)
        goto out;

    /* Data pieces, little-endian, and their CRC. */
    int le = host_is_little_endian();
    uint32_t crc = (uint32_t)crc32(0L, Z_NULL, 0);
    for (int i = 0; i < n; i++) {
        const void *src = entries[i].data;
        if (!le && nbytes[i] > 0) {
            unsigned char *b = malloc(nbytes[i]);
            if (!b) {
                rc = coh_fail(err, COH_ENOMEM, "out of memory writing '%s'", path);
                goto out;
            }
            for (size_t k = 0; k < nbytes[i] / 4; k++) {
                uint32_t v;
                memcpy(&v, &entries[i].data[k], 4);
                for (int j = 0; j < 4; j++)
                    b[4 * k + (size_t)j] = (unsigned char)(v >> (8 * j));
            }
            swapped[i] = (float *)(void *)b;
            src = b;
        }
        parts[2 + i] = src;
        lens[2 + i] = nbytes[i];
        crc = crc32_update(crc, src, nbytes[i]);
    }

    /* Header JSON. */
    char crc_hex[16];
    snprintf(crc_hex, sizeof crc_hex, "%08x", (unsigned)crc);
    sb_puts(&h, "{\"__metadata__\":{\"format\":\"pt\",\"cohort_crc32\":");
    sb_json_string(&h, crc_hex);
    for (int k = 0; extra_meta && extra_meta[k]; k += 2) {
        sb_puts(&h, ",");
        sb_json_string(&h, extra_meta[k]);
        sb_puts(&h, ":");
        sb_json_string(&h, extra_meta[k + 1]);
    }
    sb_puts(&h, "}");
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        const st_entry *e = &entries[i];
        sb_puts(&h, ",");
        sb_json_string(&h, e->name);
        sb_puts(&h, ":{\"dtype\":\"F32\",\"shape\":[");
        for (int d = 0; d < e->ndim; d++) {
            if (d)
                sb_puts(&h, ",");
            sb_printf_u64(&h, (unsigned long long)e->shape[d]);
        }
        sb_puts(&h, "],\"data_offsets\":[");
        sb_printf_u64(&h, (unsigned long long)off);
        sb_puts(&h, ",");
        off += nbytes[i];
        sb_printf_u64(&h, (unsigned long long)off);
        sb_puts(&h, "]}");
    }
    sb_puts(&h, "}");
    /* Pad with spaces so the data section starts 8-byte aligned (8 + len % 8 == 0). */
    while (!h.oom && h.len % 8 != 0)
        sb_puts(&h, " ");
    if (h.oom) {
        rc = coh_fail(err, COH_ENOMEM, "out of memory building the header of '%s'", path);
        goto out;
    }

    unsigned char lenbuf[8];
    store_le64(lenbuf, (uint64_t)h.len);
    parts[0] = lenbuf;
    lens[0] = 8;
    parts[1] = h.p;
    lens[1] = h.len;
    if (!blob) {
        rc = fs_write_atomic_iov(path, parts, lens, nparts, err);
    } else {
        size_t total = 0;
        for (int i = 0; i < nparts; i++)
            total += lens[i];
        unsigned char *b = malloc(total ? total : 1);
        if (!b) {
            rc = coh_fail(err, COH_ENOMEM, "out of memory building %zu bytes of %s", total, path);
            goto out;
        }
        size_t at = 0;
        for (int i = 0; i < nparts; i++) {
            if (lens[i])
                memcpy(b + at, parts[i], lens[i]);
            at += lens[i];
        }
        *blob = b;
        *blob_len = total;
    }

out:
    if (swapped)
        for (int i = 0; i < n; i++)
            free(swapped[i]);
    free(swapped);
    free(h.p);
    free(nbytes);
    free(parts);
    free(lens);
    return rc;
}

int st_write(const char *path, const st_entry *entries, int n, const char *const *extra_meta,
             coh_err *err)
{
    return write_impl(path, entries, n, extra_meta, NULL, NULL, err);
}

int st_write_buffer(const st_entry *entries, int n, const char *const *extra_meta, void **out,
                    size_t *out_len, coh_err *err)
{
    if (!out || !out_len)
        return coh_fail(err, COH_EINVAL, "st_write_buffer: NULL output");
    *out = NULL;
    *out_len = 0;
    return write_impl("in-memory safetensors", entries, n, extra_meta, out, out_len, err);
}
