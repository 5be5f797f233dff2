/* test_safetensors.c - safetensors reader/writer and fsutil: round trips, F16/BF16 decoding,
 * and refusal of truncated, corrupt and malformed files with useful messages. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fsutil.h"
#include "safetensors.h"

/* ---- fixtures and helpers ----------------------------------------------------------- */

typedef struct fixture {
    char dir[64];
} fixture;

static int setup_dir(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    strcpy(fx->dir, "/tmp/cohort-st-XXXXXX");
    if (!mkdtemp(fx->dir)) {
        free(fx);
        return -1;
    }
    *state = fx;
    return 0;
}

/* Remove dir recursively (only what the tests create: files and subdirectories). */
static void remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        if (unlink(p) != 0)
            remove_tree(p);
    }
    closedir(d);
    rmdir(dir);
}

static int teardown_dir(void **state)
{
    fixture *fx = *state;
    remove_tree(fx->dir);
    free(fx);
    return 0;
}

static void path_in(const fixture *fx, const char *name, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%s", fx->dir, name);
}

/* Write [8-byte hlen][header][data] with an explicit header length field. */
static void write_st_raw(const char *path, uint64_t hlen_field, const char *header,
                         const void *data, size_t data_len)
{
    size_t hl = strlen(header);
    size_t total = 8 + hl + data_len;
    unsigned char *b = malloc(total);
    assert_non_null(b);
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(hlen_field >> (8 * i));
    memcpy(b + 8, header, hl);
    if (data_len)
        memcpy(b + 8 + hl, data, data_len);
    coh_err err;
    assert_int_equal(fs_write_atomic(path, b, total, &err), COH_OK);
    free(b);
}

static void write_st(const char *path, const char *header, const void *data, size_t data_len)
{
    write_st_raw(path, strlen(header), header, data, data_len);
}

/* st_open must fail with `code` and a message containing `word`. */
static void expect_open_fails(const char *path, int code, const char *word)
{
    st_file *f = (st_file *)(uintptr_t)1;
    coh_err err;
    coh_err_clear(&err);
    int rc = st_open(path, &f, &err);
    if (rc != code || !strstr(err.msg, word))
        print_error("st_open rc=%d (%s) msg='%s', expected %d with '%s'\n", rc,
                    coh_err_name(rc), err.msg, code, word);
    assert_int_equal(rc, code);
    assert_null(f);
    assert_int_equal(err.code, code);
    assert_non_null(strstr(err.msg, word));
}

static uint32_t float_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* ---- round trip --------------------------------------------------------------------- */

static void test_roundtrip_exact(void **state)
{
    fixture *fx = *state;
    char path[256];
    path_in(fx, "rt.safetensors", path, sizeof path);

    float a[6] = {1.0f, -2.5f, 3.14159274f, -0.0f, 1e-42f /* subnormal */, 6.5e37f};
    float b[5] = {INFINITY, -INFINITY, 0.1f, 7.0f, -1e-20f};
    float s[1] = {42.0f};
    float big[3 * 5 * 2 * 2];
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++)
        big[i] = (float)i * 0.37f - 5.0f;
    st_entry e[5] = {
        {.name = "model.a", .ndim = 2, .shape = {2, 3}, .data = a},
        {.name = "b \"quoted\" \\ name", .ndim = 1, .shape = {5}, .data = b},
        {.name = "scalar", .ndim = 0, .data = s},
        {.name = "empty", .ndim = 2, .shape = {0, 4}, .data = NULL},
        {.name = "big", .ndim = 4, .shape = {3, 5, 2, 2}, .data = big},
    };
    const char *meta[] = {"step", "12", "note", "hello \"world\"", NULL};
    coh_err err;
    assert_int_equal(st_write(path, e, 5, meta, &err), COH_OK);

    /* header length is a multiple of 8 and padding is spaces */
    char *raw;
    size_t rawlen;
    assert_int_equal(fs_read_all(path, &raw, &rawlen, &err), COH_OK);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = (hl << 8) | (unsigned char)raw[i];
    assert_int_equal(hl % 8, 0);
    assert_true(8 + hl + (6 + 5 + 1 + 0 + 60) * 4 == rawlen);
    free(raw);

    st_file *f = NULL;
    assert_int_equal(st_open(path, &f, &err), COH_OK);
    assert_int_equal(st_count(f), 5);
    for (int i = 0; i < 5; i++) {
        const st_tensor_info *ti = st_info(f, i);
        assert_non_null(ti);
        assert_string_equal(ti->name, e[i].name);
        assert_int_equal(ti->dtype, ST_F32);
        assert_int_equal(ti->ndim, e[i].ndim);
        size_t numel = 1;
        for (int d = 0; d < ti->ndim; d++) {
            assert_int_equal(ti->shape[d], e[i].shape[d]);
            numel *= (size_t)e[i].shape[d];
        }
        assert_int_equal(ti->numel, numel);
        assert_ptr_equal(st_find(f, e[i].name), ti);
    }
    assert_null(st_info(f, 5));
    assert_null(st_info(f, -1));
    assert_null(st_find(f, "nope"));

    float ra[6], rb[5], rs[1], rbig[60];
    assert_int_equal(st_read_f32(f, "model.a", ra, 6, &err), COH_OK);
    assert_int_equal(st_read_f32(f, e[1].name, rb, 5, &err), COH_OK);
    assert_int_equal(st_read_f32(f, "scalar", rs, 1, &err), COH_OK);
    assert_int_equal(st_read_f32(f, "empty", NULL, 0, &err), COH_OK);
    assert_int_equal(st_read_f32(f, "big", rbig, 60, &err), COH_OK);
    assert_memory_equal(ra, a, sizeof a);
    assert_memory_equal(rb, b, sizeof b);
    assert_memory_equal(rs, s, sizeof s);
    assert_memory_equal(rbig, big, sizeof big);

    assert_string_equal(st_metadata(f, "format"), "pt");
    assert_string_equal(st_metadata(f, "step"), "12");
    assert_string_equal(st_metadata(f, "note"), "hello \"world\"");
    const char *crc = st_metadata(f, "cohort_crc32");
    assert_non_null(crc);
    assert_int_equal(strlen(crc), 8);
    assert_null(st_metadata(f, "missing"));

    /* wrong count and unknown name */
    assert_int_equal(st_read_f32(f, "model.a", ra, 5, &err), COH_ESHAPE);
    assert_non_null(strstr(err.msg, "model.a"));
    assert_int_equal(st_read_f32(f, "zzz", ra, 6, &err), COH_ENOTFOUND);
    assert_non_null(strstr(err.msg, "zzz"));
    st_close(f);
    st_close(NULL);

    /* writing again replaces the file atomically and leaves no temp files */
    assert_int_equal(st_write(path, e, 1, NULL, &err), COH_OK);
    assert_int_equal(st_open(path, &f, &err), COH_OK);
    assert_int_equal(st_count(f), 1);
    st_close(f);
    DIR *d = opendir(fx->dir);
    assert_non_null(d);
    struct dirent *de;
    int files = 0;
    while ((de = readdir(d)) != NULL)
        if (de->d_name[0] != '.') {
            assert_null(strstr(de->d_name, ".tmp."));
            files++;
        }
    closedir(d);
    assert_int_equal(files, 1);
}

static void test_write_rejects_bad_entries(void **state)
{
    fixture *fx = *state;
    char path[256];
    path_in(fx, "bad.safetensors", path, sizeof path);
    float x[2] = {1, 2};
    coh_err err;
    st_entry dup[2] = {{.name = "w", .ndim = 1, .shape = {2}, .data = x},
                       {.name = "w", .ndim = 1, .shape = {2}, .data = x}};
    assert_int_equal(st_write(path, dup, 2, NULL, &err), COH_EINVAL);
    assert_non_null(strstr(err.msg, "twice"));
    st_entry neg = {.name = "n", .ndim = 1, .shape = {-3}, .data = x};
    assert_int_equal(st_write(path, &neg, 1, NULL, &err), COH_EINVAL);
    assert_non_null(strstr(err.msg, "dimension"));
    st_entry nodata = {.name = "n", .ndim = 1, .shape = {2}, .data = NULL};
    assert_int_equal(st_write(path, &nodata, 1, NULL, &err), COH_EINVAL);
    assert_non_null(strstr(err.msg, "no data"));
    const char *meta[] = {"cohort_crc32", "00000000", NULL};
    assert_int_equal(st_write(path, dup, 1, meta, &err), COH_EINVAL);
    assert_non_null(strstr(err.msg, "reserved"));
    assert_false(fs_exists(path));
}

/* ---- F16 / BF16 --------------------------------------------------------------------- */

static void test_read_f16(void **state)
{
    fixture *fx = *state;
    char path[256];
    path_in(fx, "f16.safetensors", path, sizeof path);
    static const uint16_t h[] = {
        0x3c00, /* 1.0 */
        0xbc00, /* -1.0 */
        0x7bff, /* 65504, largest finite */
        0x0001, /* smallest subnormal 2^-24 */
        0x03ff, /* largest subnormal 1023 * 2^-24 */
        0x8001, /* -2^-24 */
        0x0400, /* smallest normal 2^-14 */
        0x3555, /* 0.333251953125 */
        0xc500, /* -5.0 */
        0x8000, /* -0.0 */
        0x7c00, /* +inf */
        0xfc00, /* -inf */
        0x7e00, /* nan */
        0x0200, /* subnormal 2^-15 */
    };
    const float want[] = {1.0f,
                          -1.0f,
                          65504.0f,
                          ldexpf(1.0f, -24),
                          ldexpf(1023.0f, -24),
                          -ldexpf(1.0f, -24),
                          ldexpf(1.0f, -14),
                          0.333251953125f,
                          -5.0f,
                          -0.0f,
                          INFINITY,
                          -INFINITY,
                          NAN,
                          ldexpf(1.0f, -15)};
    const size_t n = sizeof h / sizeof h[0];
    unsigned char data[2 * 14];
    for (size_t i = 0; i < n; i++) {
        data[2 * i] = (unsigned char)(h[i] & 0xff);
        data[2 * i + 1] = (unsigned char)(h[i] >> 8);
    }
    write_st(path, "{\"h\":{\"dtype\":\"F16\",\"shape\":[2,7],\"data_offsets\":[0,28]}}", data,
             sizeof data);
    st_file *f = NULL;
    coh_err err;
    assert_int_equal(st_open(path, &f, &err), COH_OK);
    const st_tensor_info *ti = st_find(f, "h");
    assert_non_null(ti);
    assert_int_equal(ti->dtype, ST_F16);
    assert_int_equal(ti->numel, 14);
    float got[14];
    assert_int_equal(st_read_f32(f, "h", got, n, &err), COH_OK);
    for (size_t i = 0; i < n; i++) {
        if (isnan(want[i])) {
            assert_true(isnan(got[i]));
        } else {
            if (float_bits(got[i]) != float_bits(want[i]))
                print_error("f16 %04x: got %.9g want %.9g\n", h[i], (double)got[i],
                            (double)want[i]);
            assert_int_equal(float_bits(got[i]), float_bits(want[i]));
        }
    }
    st_close(f);
    /* the exported converter agrees on every non-NaN pattern with an independent formula */
    for (uint32_t u = 0; u < 0x10000; u++) {
        uint16_t v = (uint16_t)u;
        int e = (v >> 10) & 31, m = v & 1023;
        float sign = (v & 0x8000) ? -1.0f : 1.0f;
        float ref;
        if (e == 31)
            ref = m ? NAN : sign * INFINITY;
        else if (e == 0)
            ref = sign * ldexpf((float)m, -24);
        else
            ref = sign * ldexpf((float)(1024 + m), e - 25);
        float gotv = st_f16_to_f32(v);
        if (isnan(ref))
            assert_true(isnan(gotv));
        else
            assert_int_equal(float_bits(gotv), float_bits(ref));
    }
}

static void test_read_bf16_and_mixed(void **state)
{
    fixture *fx = *state;
    char path[256];
    path_in(fx, "bf16.safetensors", path, sizeof path);
    static const uint16_t h[] = {0x3f80, 0xbf80, 0x4049, 0xc2f7, 0x0001, 0x7f80, 0x7f7f};
    float want[7];
    want[0] = 1.0f;
    want[1] = -1.0f;
    want[2] = 3.140625f;
    want[3] = -123.5f;
    want[4] = ldexpf(1.0f, -133); /* smallest bf16 subnormal */
    want[5] = INFINITY;
    want[6] = ldexpf(255.0f, 127 - 7); /* largest finite bf16 */
    /* layout: 7 BF16 (bytes 0..14), 3 F16 (14..20), 2 F32 (20..28); the 203-byte
     * header (with its trailing spaces) makes the data section start at an odd offset */
    unsigned char data[14 + 6 + 8];
    for (int i = 0; i < 7; i++) {
        data[2 * i] = (unsigned char)(h[i] & 0xff);
        data[2 * i + 1] = (unsigned char)(h[i] >> 8);
    }
    const uint16_t f16[3] = {0x3c00, 0x4000, 0x0001};
    for (int i = 0; i < 3; i++) {
        data[14 + 2 * i] = (unsigned char)(f16[i] & 0xff);
        data[14 + 2 * i + 1] = (unsigned char)(f16[i] >> 8);
    }
    const float f32[2] = {-7.25f, 1e30f};
    for (int i = 0; i < 2; i++) {
        uint32_t u = float_bits(f32[i]);
        for (int k = 0; k < 4; k++)
            data[20 + 4 * i + k] = (unsigned char)(u >> (8 * k));
    }
    const char *hdr = "{\"__metadata__\":{\"format\":\"pt\"},"
                      "\"b\":{\"dtype\":\"BF16\",\"shape\":[7],\"data_offsets\":[0,14]},"
                      "\"h\":{\"dtype\":\"F16\",\"shape\":[3,1],\"data_offsets\":[14,20]},"
                      "\"f\":{\"dtype\":\"F32\",\"shape\":[1,2],\"data_offsets\":[20,28]}}  ";
    write_st(path, hdr, data, sizeof data);
    st_file *f = NULL;
    coh_err err;
    assert_int_equal(st_open(path, &f, &err), COH_OK);
    assert_int_equal(st_count(f), 3);
    assert_string_equal(st_info(f, 0)->name, "b");
    assert_int_equal(st_info(f, 0)->dtype, ST_BF16);
    assert_string_equal(st_info(f, 1)->name, "h");
    assert_string_equal(st_info(f, 2)->name, "f");
    assert_null(st_metadata(f, "cohort_crc32")); /* a file from elsewhere: no CRC, loads */
    float got[7];
    assert_int_equal(st_read_f32(f, "b", got, 7, &err), COH_OK);
    for (int i = 0; i < 7; i++)
        assert_int_equal(float_bits(got[i]), float_bits(want[i]));
    float gh[3];
    assert_int_equal(st_read_f32(f, "h", gh, 3, &err), COH_OK);
    assert_true(gh[0] == 1.0f && gh[1] == 2.0f && gh[2] == ldexpf(1.0f, -24));
    float gf[2];
    assert_int_equal(st_read_f32(f, "f", gf, 2, &err), COH_OK);
    assert_memory_equal(gf, f32, sizeof f32);
    st_close(f);
    assert_true(st_bf16_to_f32(0xffc0) != st_bf16_to_f32(0xffc0)); /* NaN */
}

/* ---- refusal of broken files -------------------------------------------------------- */

static void test_every_truncation_fails(void **state)
{
    fixture *fx = *state;
    char path[256], cut[256];
    path_in(fx, "full.safetensors", path, sizeof path);
    path_in(fx, "cut.safetensors", cut, sizeof cut);
    float a[3] = {1, 2, 3}, b[4] = {4, 5, 6, 7};
    st_entry e[2] = {{.name = "a", .ndim = 1, .shape = {3}, .data = a},
                     {.name = "b", .ndim = 2, .shape = {2, 2}, .data = b}};
    coh_err err;
    assert_int_equal(st_write(path, e, 2, NULL, &err), COH_OK);
    char *raw;
    size_t len;
    assert_int_equal(fs_read_all(path, &raw, &len, &err), COH_OK);
    for (size_t cutlen = 0; cutlen < len; cutlen++) {
        assert_int_equal(fs_write_atomic(cut, raw, cutlen, &err), COH_OK);
        st_file *f = (st_file *)(uintptr_t)1;
        coh_err_clear(&err);
        int rc = st_open(cut, &f, &err);
        assert_int_not_equal(rc, COH_OK);
        assert_int_equal(rc, COH_EFORMAT);
        assert_null(f);
        assert_true(strlen(err.msg) > 0);
        assert_non_null(strstr(err.msg, cut));
    }
    /* the three regimes name what is wrong */
    assert_int_equal(fs_write_atomic(cut, raw, 5, &err), COH_OK);
    expect_open_fails(cut, COH_EFORMAT, "too short");
    assert_int_equal(fs_write_atomic(cut, raw, 20, &err), COH_OK);
    expect_open_fails(cut, COH_EFORMAT, "header length");
    assert_int_equal(fs_write_atomic(cut, raw, len - 1, &err), COH_OK);
    expect_open_fails(cut, COH_EFORMAT, "truncated");
    expect_open_fails(cut, COH_EFORMAT, "'b'");
    free(raw);
}

static void test_crc_detects_corruption(void **state)
{
    fixture *fx = *state;
    char path[256];
    path_in(fx, "crc.safetensors", path, sizeof path);
    float a[64];
    for (int i = 0; i < 64; i++)
        a[i] = (float)i;
    st_entry e = {.name = "a", .ndim = 2, .shape = {8, 8}, .data = a};
    coh_err err;
    assert_int_equal(st_write(path, &e, 1, NULL, &err), COH_OK);
    char *raw;
    size_t len;
    assert_int_equal(fs_read_all(path, &raw, &len, &err), COH_OK);
    size_t data_start = len - sizeof a;
    size_t positions[] = {data_start, data_start + 1, data_start + 100, len - 1};
    for (size_t k = 0; k < sizeof positions / sizeof positions[0]; k++) {
        raw[positions[k]] ^= 0x01;
        assert_int_equal(fs_write_atomic(path, raw, len, &err), COH_OK);
        expect_open_fails(path, COH_EFORMAT, "corrupt");
        expect_open_fails(path, COH_EFORMAT, "CRC");
        raw[positions[k]] ^= 0x01;
    }
    /* restored file loads again */
    assert_int_equal(fs_write_atomic(path, raw, len, &err), COH_OK);
    st_file *f = NULL;
    assert_int_equal(st_open(path, &f, &err), COH_OK);
    st_close(f);
    free(raw);

    /* malformed checksum text */
    float d[1] = {1};
    write_st(path,
             "{\"__metadata__\":{\"cohort_crc32\":\"zz\"},"
             "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
             d, 4);
    expect_open_fails(path, COH_EFORMAT, "cohort_crc32");
}

static void test_garbage_header(void **state)
{
    fixture *fx = *state;
    char path[256];
    path_in(fx, "g.safetensors", path, sizeof path);
    unsigned char data[4] = {0};
    write_st(path, "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]", data,
             4);
    expect_open_fails(path, COH_EFORMAT, "JSON");
    write_st(path, "this is not json at all!", data, 4);
    expect_open_fails(path, COH_EFORMAT, "JSON");
    write_st(path, "[1, 2, 3]", data, 4);
    expect_open_fails(path, COH_EFORMAT, "not an object");
    write_st(path, "{} trailing", data, 4);
    expect_open_fails(path, COH_EFORMAT, "unexpected bytes");
    write_st(path, "{\"a\": 5}", data, 4);
    expect_open_fails(path, COH_EFORMAT, "'a'");
    write_st(path, "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", data, 4);
    expect_open_fails(path, COH_EFORMAT, "dtype");
    write_st(path, "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", data, 4);
    expect_open_fails(path, COH_EFORMAT, "shape");
    write_st(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", data, 4);
    expect_open_fails(path, COH_EFORMAT, "shape");
    write_st(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", data, 4);
    expect_open_fails(path, COH_EFORMAT, "shape");
    write_st(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]}}",
             data, 4);
    expect_open_fails(path, COH_EUNSUPPORTED, "dimensions");
    write_st(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", data, 4);
    expect_open_fails(path, COH_EFORMAT, "data_offsets");
    write_st(path, "{\"__metadata__\":{\"k\":3}}", data, 4);
    expect_open_fails(path, COH_EFORMAT, "metadata");
    write_st(path, "{\"__metadata__\":[]}", data, 4);
    expect_open_fails(path, COH_EFORMAT, "__metadata__");
    write_st(path,
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
             "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
             data, 4);
    expect_open_fails(path, COH_EFORMAT, "twice");
    write_st(path, "{\"\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", data, 4);
    expect_open_fails(path, COH_EFORMAT, "empty name");
    write_st_raw(path, 1, "{", data, 4);
    expect_open_fails(path, COH_EFORMAT, "plausible");

    /* an empty header object is a valid (empty) file */
    write_st(path, "{}      ", NULL, 0);
    st_file *f = NULL;
    coh_err err;
    assert_int_equal(st_open(path, &f, &err), COH_OK);
    assert_int_equal(st_count(f), 0);
    st_close(f);
}

static void test_offsets_out_of_range(void **state)
{
    fixture *fx = *state;
    char path[256];
    path_in(fx, "o.safetensors", path, sizeof path);
    unsigned char data[16] = {0};
    write_st(path, "{\"w\":{\"dtype\":\"F32\",\"shape\":[100],\"data_offsets\":[0,400]}}", data,
             16);
    expect_open_fails(path, COH_EFORMAT, "outside the data section");
    expect_open_fails(path, COH_EFORMAT, "'w'");
    write_st(path, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", data, 16);
    expect_open_fails(path, COH_EFORMAT, "end before");
    write_st(path, "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", data, 16);
    expect_open_fails(path, COH_EFORMAT, "needs 12");
    write_st(path,
             "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[18446744073709551615,"
             "18446744073709551615]}}",
             data, 16);
    expect_open_fails(path, COH_EFORMAT, "data_offsets");
    write_st(path,
             "{\"u\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
             "\"v\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
             data, 16);
    expect_open_fails(path, COH_EFORMAT, "overlap");
    write_st(path,
             "{\"u\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
             "\"data_offsets\":[0,16]}}",
             data, 16);
    expect_open_fails(path, COH_EFORMAT, "too large");

    /* not covering the whole data section is allowed */
    write_st(path, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", data, 16);
    st_file *f = NULL;
    coh_err err;
    assert_int_equal(st_open(path, &f, &err), COH_OK);
    st_close(f);
}

static void test_wrong_dtype(void **state)
{
    fixture *fx = *state;
    char path[256];
    path_in(fx, "d.safetensors", path, sizeof path);
    unsigned char data[16] = {0};
    write_st(path, "{\"emb\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,16]}}", data,
             16);
    expect_open_fails(path, COH_EUNSUPPORTED, "I64");
    expect_open_fails(path, COH_EUNSUPPORTED, "emb");
    write_st(path, "{\"emb\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[0,2]}}",
             data, 16);
    expect_open_fails(path, COH_EUNSUPPORTED, "F8_E4M3");
    write_st(path, "{\"emb\":{\"dtype\":7,\"shape\":[2],\"data_offsets\":[0,8]}}", data, 16);
    expect_open_fails(path, COH_EFORMAT, "dtype");
}

static void test_header_length_larger_than_file(void **state)
{
    fixture *fx = *state;
    char path[256];
    path_in(fx, "h.safetensors", path, sizeof path);
    const char *hdr = "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
    unsigned char data[4] = {0};
    write_st_raw(path, 1000, hdr, data, 4);
    expect_open_fails(path, COH_EFORMAT, "larger than");
    write_st_raw(path, UINT64_MAX, hdr, data, 4);
    expect_open_fails(path, COH_EFORMAT, "larger than");
    write_st_raw(path, (uint64_t)1 << 62, hdr, data, 4);
    expect_open_fails(path, COH_EFORMAT, "header length");
    /* header length one byte short: JSON is cut */
    write_st_raw(path, strlen(hdr) - 1, hdr, data, 4);
    expect_open_fails(path, COH_EFORMAT, "JSON");
    /* too short for the length field */
    assert_int_equal(fs_write_atomic(path, "abc", 3, NULL), COH_OK);
    expect_open_fails(path, COH_EFORMAT, "too short");
    /* missing file */
    char missing[256];
    path_in(fx, "does-not-exist.safetensors", missing, sizeof missing);
    expect_open_fails(missing, COH_ENOTFOUND, "does-not-exist.safetensors");
}

/* ---- fsutil ------------------------------------------------------------------------- */

static void test_fsutil(void **state)
{
    fixture *fx = *state;
    char deep[256], file[256];
    snprintf(deep, sizeof deep, "%s/a/b//c/", fx->dir);
    coh_err err;
    assert_int_equal(fs_mkdirs(deep, &err), COH_OK);
    assert_int_equal(fs_mkdirs(deep, &err), COH_OK); /* idempotent */
    assert_true(fs_exists(deep));
    snprintf(file, sizeof file, "%s/a/b/c/x.txt", fx->dir);
    assert_false(fs_exists(file));
    const void *parts[3] = {"hello", ", ", "world"};
    size_t lens[3] = {5, 2, 5};
    assert_int_equal(fs_write_atomic_iov(file, parts, lens, 3, &err), COH_OK);
    char *buf;
    size_t len;
    assert_int_equal(fs_read_all(file, &buf, &len, &err), COH_OK);
    assert_int_equal(len, 12);
    assert_string_equal(buf, "hello, world");
    free(buf);
    assert_int_equal(fs_write_atomic(file, "", 0, &err), COH_OK);
    assert_int_equal(fs_read_all(file, &buf, &len, &err), COH_OK);
    assert_int_equal(len, 0);
    assert_string_equal(buf, "");
    free(buf);

    /* a file in the way of a directory */
    char blocked[300];
    snprintf(blocked, sizeof blocked, "%s/sub", file);
    assert_int_not_equal(fs_mkdirs(blocked, &err), COH_OK);
    assert_non_null(strstr(err.msg, "x.txt"));
    /* writing into a missing directory names the path */
    char nodir[256];
    snprintf(nodir, sizeof nodir, "%s/nope/f.bin", fx->dir);
    assert_int_equal(fs_write_atomic(nodir, "x", 1, &err), COH_EIO);
    assert_non_null(strstr(err.msg, "nope/f.bin"));
    assert_int_equal(fs_read_all(nodir, &buf, &len, &err), COH_ENOTFOUND);
    assert_null(buf);
    assert_non_null(strstr(err.msg, "nope/f.bin"));
    assert_non_null(strstr(err.msg, "No such file"));
    /* a directory is not a file */
    assert_int_not_equal(fs_read_all(fx->dir, &buf, &len, &err), COH_OK);
    assert_non_null(strstr(err.msg, "directory"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_roundtrip_exact, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_write_rejects_bad_entries, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_read_f16, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_read_bf16_and_mixed, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_every_truncation_fails, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_crc_detects_corruption, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_garbage_header, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_offsets_out_of_range, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_wrong_dtype, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_header_length_larger_than_file, setup_dir,
                                        teardown_dir),
        cmocka_unit_test_setup_teardown(test_fsutil, setup_dir, teardown_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
