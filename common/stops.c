/* stops.c - stop strings: checking them and cutting completions at them (see stops.h). */
#include "stops.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- private prototypes ---- */
static size_t stops__utf8_bad(const unsigned char *s, size_t n);
static void stops__show(const char *s, char *buf, size_t cap);
static int stops__find(const char *text, size_t len, const stops_list *l);
static int stops__decode(const tokenizer *tok, const int *ids, int k, char **buf, size_t *cap,
                         size_t *len, coh_err *err);

/* ---- building a list ---------------------------------------------------------------- */

/* Offset of the first byte that is not part of valid UTF-8 (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF), or n when s[0..n) is valid. */
static size_t stops__utf8_bad(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t k;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            k = 2, cp = c & 0x1F, min = 0x80;
        } else if (c >= 0xE0 && c <= 0xEF) {
            k = 3, cp = c & 0x0F, min = 0x800;
        } else if (c >= 0xF0 && c <= 0xF4) {
            k = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return i;
        }
        if (i + k > n)
            return i;
        for (size_t j = 1; j < k; j++) {
            if ((s[i + j] & 0xC0) != 0x80)
                return i;
            cp = (cp << 6) | (s[i + j] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return i;
        i += k;
    }
    return n;
}

/* s for a message: at most 24 bytes, quoted, non-printable bytes as \xNN. */
static void stops__show(const char *s, char *buf, size_t cap)
{
    size_t w = 0, n = strlen(s);
    if (cap < 8) {
        if (cap)
            buf[0] = '\0';
        return;
    }
    buf[w++] = '\'';
    for (size_t i = 0; i < n && i < 24 && w + 8 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7F && c != '\\')
            buf[w++] = (char)c;
        else
            w += (size_t)snprintf(buf + w, cap - w, "\\x%02X", c);
    }
    if (n > 24 && w + 5 < cap) {
        memcpy(buf + w, "...", 3);
        w += 3;
    }
    buf[w++] = '\'';
    buf[w] = '\0';
}

int stops_check(const char *s, coh_err *err)
{
    if (!s || !*s)
        return coh_fail(err, COH_EINVAL,
                        "a stop string is empty (each has 1 to %d bytes of UTF-8)", STOPS_MAX_LEN);
    char shown[128];
    stops__show(s, shown, sizeof shown);
    size_t n = strlen(s);
    if (n > STOPS_MAX_LEN)
        return coh_fail(err, COH_ERANGE,
                        "stop string %s is %zu bytes long (each has 1 to %d bytes of UTF-8)",
                        shown, n, STOPS_MAX_LEN);
    size_t bad = stops__utf8_bad((const unsigned char *)s, n);
    if (bad < n)
        return coh_fail(err, COH_EINVAL, "stop string %s is not valid UTF-8 (at byte %zu)",
                        shown, bad);
    return COH_OK;
}

int stops_add(stops_list *l, const char *s, coh_err *err)
{
    if (!l)
        return coh_fail(err, COH_EINVAL, "stops_add: no list");
    int rc = stops_check(s, err);
    if (rc)
        return rc;
    if (l->n < 0 || l->n >= STOPS_MAX)
        return coh_fail(err, COH_ERANGE, "more than %d stop strings", STOPS_MAX);
    memcpy(l->text[l->n], s, strlen(s) + 1);
    l->n++;
    return COH_OK;
}

int stops_equal(const stops_list *a, const stops_list *b)
{
    if (a->n != b->n)
        return 0;
    for (int i = 0; i < a->n; i++)
        if (strcmp(a->text[i], b->text[i]) != 0)
            return 0;
    return 1;
}

/* ---- the cut ------------------------------------------------------------------------ */

/* Index of the first string of l (in l's order) that occurs in text[0..len), or -1. The text
 * may hold NUL bytes (a byte token 0x00), so this is memchr + memcmp, not strstr. */
static int stops__find(const char *text, size_t len, const stops_list *l)
{
    for (int i = 0; i < l->n; i++) {
        const char *p = l->text[i];
        size_t pn = strlen(p);
        if (pn == 0 || pn > len)
            continue;
        const char *end = text + len - pn;
        for (const char *q = text; q <= end; q++) {
            q = memchr(q, p[0], (size_t)(end - q) + 1);
            if (!q)
                break;
            if (memcmp(q, p, pn) == 0)
                return i;
        }
    }
    return -1;
}

/* tok_decode(ids[0..k)) into *buf, grown until nothing is cut off (tok_decode truncates at
 * cap - 1 bytes, at a character boundary for the Hugging Face kind: a result within 4 bytes
 * of the end may be cut). */
static int stops__decode(const tokenizer *tok, const int *ids, int k, char **buf, size_t *cap,
                         size_t *len, coh_err *err)
{
    for (;;) {
        if (!*buf) {
            if (*cap < 256)
                *cap = 256;
            *buf = malloc(*cap);
            if (!*buf)
                return coh_fail(err, COH_ENOMEM, "out of memory decoding a completion");
        }
        size_t w = tok_decode(tok, ids, k, *buf, *cap);
        if (w + 5 <= *cap) {
            *len = w;
            return COH_OK;
        }
        if (*cap > SIZE_MAX / 4)
            return coh_fail(err, COH_ENOMEM, "a decoded completion is too long");
        char *bigger = realloc(*buf, *cap * 2);
        if (!bigger)
            return coh_fail(err, COH_ENOMEM, "out of memory decoding a completion");
        *buf = bigger;
        *cap *= 2;
    }
}

int stops_cut(const tokenizer *tok, const int *ids, int n, const stops_list *l, int *which,
              coh_err *err)
{
    if (which)
        *which = -1;
    if (!tok || !l || n < 0 || (n > 0 && !ids))
        return coh_fail(err, COH_EINVAL,
                        "stops_cut: needs a tokenizer, a stop list and n >= 0 ids");
    if (n == 0 || l->n <= 0)
        return n;
    char *buf = NULL;
    size_t cap = (size_t)n * 8 + 256, len = 0;
    int rc = COH_OK, cut = n, hit = -1;
    if (strcmp(tok_kind(tok), "cohort-char") == 0) {
        /* text only grows with k: binary search for the first prefix that holds a string */
        if ((rc = stops__decode(tok, ids, n, &buf, &cap, &len, err)))
            goto out;
        if ((hit = stops__find(buf, len, l)) >= 0) {
            int lo = 1, hi = n; /* prefix hi holds one; find the smallest such */
            while (lo < hi) {
                int mid = lo + (hi - lo) / 2;
                if ((rc = stops__decode(tok, ids, mid, &buf, &cap, &len, err)))
                    goto out;
                if (stops__find(buf, len, l) >= 0)
                    hi = mid;
                else
                    lo = mid + 1;
            }
            if ((rc = stops__decode(tok, ids, lo, &buf, &cap, &len, err)))
                goto out;
            hit = stops__find(buf, len, l);
            cut = lo;
        }
    } else {
        /* prefix by prefix: the first one that holds a string (see stops.h) */
        for (int k = 1; k <= n && hit < 0; k++) {
            if ((rc = stops__decode(tok, ids, k, &buf, &cap, &len, err)))
                goto out;
            if ((hit = stops__find(buf, len, l)) >= 0)
                cut = k;
        }
    }
out:
    free(buf);
    if (rc)
        return rc;
    if (which)
        *which = hit;
    return cut;
}
