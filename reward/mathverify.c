/* mathverify.c - the `math` verifier (see mathverify.h for the rules).
 *
 * Everything here is a linear scan over the completion. The one place that could go
 * quadratic, finding the last balanced \boxed{...}, walks the \boxed{ occurrences from the
 * end: an occurrence that is still open when it reaches the next (later, unbalanced) one
 * can never close, because that later one's content never brings the depth back down; so
 * each candidate is scanned only up to the next one, and the whole search reads each byte
 * at most twice.
 */
#include "mathverify.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* ---- Characters --------------------------------------------------------------------------- */

static int is_digit(char c) { return c >= '0' && c <= '9'; }
static int is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static int starts(const char *s, size_t len, const char *lit)
{
    size_t n = strlen(lit);
    return len >= n && memcmp(s, lit, n) == 0;
}

/* A sign: '-', '+' or U+2212 (minus sign). Returns its length (0 if none), *neg set. */
static size_t sign_len(const char *s, size_t len, int *neg)
{
    if (len >= 1 && (s[0] == '-' || s[0] == '+')) {
        *neg = s[0] == '-';
        return 1;
    }
    if (starts(s, len, "\xE2\x88\x92")) {
        *neg = 1;
        return 3;
    }
    return 0;
}

/* A currency symbol: '$', '\$', euro sign, pound sign. */
static size_t currency_len(const char *s, size_t len)
{
    if (len >= 1 && s[0] == '$')
        return 1;
    if (starts(s, len, "\\$") || starts(s, len, "\xC2\xA3"))
        return 2;
    if (starts(s, len, "\xE2\x82\xAC"))
        return 3;
    return 0;
}

/* ---- Exact values ------------------------------------------------------------------------- */

static uint64_t gcd_u64(uint64_t a, uint64_t b)
{
    while (b) {
        uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* A decimal as written: exact reduced n/d when it fits, and its canonical digit string. */
typedef struct dec {
    uint64_t n, d;
    int exact;
    int digits_ok;
    char digits[MATHV_DIGITS_MAX];
} dec;

/* Thousands separator at s: ',' or '{,}' followed by exactly three digits (and no fourth).
 * Returns the separator's length, or 0. */
static size_t thousands_sep(const char *s, size_t len)
{
    size_t k = len >= 1 && s[0] == ',' ? 1 : starts(s, len, "{,}") ? 3 : 0;
    if (!k || len < k + 3 || !is_digit(s[k]) || !is_digit(s[k + 1]) || !is_digit(s[k + 2]))
        return 0;
    if (len > k + 3 && is_digit(s[k + 3]))
        return 0;
    return k;
}

static void dec_put(dec *v, size_t *pos, char c)
{
    if (!v->digits_ok)
        return;
    if (*pos + 1 >= sizeof v->digits) {
        v->digits_ok = 0;
        v->digits[0] = '\0';
        return;
    }
    v->digits[(*pos)++] = c;
    v->digits[*pos] = '\0';
}

static void dec_acc(dec *v, char c)
{
    if (v->exact && (__builtin_mul_overflow(v->n, 10, &v->n) ||
                     __builtin_add_overflow(v->n, (uint64_t)(c - '0'), &v->n)))
        v->exact = 0;
}

/* Unsigned decimal at s: digits with thousands separators, optional fraction; or ".5".
 * Returns the bytes consumed, 0 if none. */
static size_t parse_decimal(const char *s, size_t len, dec *v)
{
    memset(v, 0, sizeof *v);
    size_t i = 0;
    while (i < len && is_digit(s[i]))
        i++;
    size_t int_end = i;
    if (i >= 1 && i <= 3) { /* a leading group may be followed by separated groups of three */
        size_t k;
        while ((k = thousands_sep(s + int_end, len - int_end)) != 0)
            int_end += k + 3;
    }
    i = int_end;
    size_t frac_start = i, frac_end = i;
    if (i + 1 < len && s[i] == '.' && is_digit(s[i + 1])) {
        frac_start = i + 1;
        frac_end = frac_start;
        while (frac_end < len && is_digit(s[frac_end]))
            frac_end++;
    }
    if (int_end == 0 && frac_end == frac_start)
        return 0;
    size_t sig_frac = frac_end; /* drop trailing zeros of the fraction */
    while (sig_frac > frac_start && s[sig_frac - 1] == '0')
        sig_frac--;
    v->exact = 1;
    v->digits_ok = 1;
    size_t pos = 0;
    int leading = 1;
    for (size_t j = 0; j < int_end; j++) {
        if (!is_digit(s[j]))
            continue; /* a separator */
        dec_acc(v, s[j]);
        if (leading && s[j] == '0')
            continue;
        leading = 0;
        dec_put(v, &pos, s[j]);
    }
    if (leading)
        dec_put(v, &pos, '0');
    v->d = 1;
    if (sig_frac > frac_start) {
        dec_put(v, &pos, '.');
        for (size_t j = frac_start; j < sig_frac; j++) {
            dec_acc(v, s[j]);
            dec_put(v, &pos, s[j]);
            if (v->exact && __builtin_mul_overflow(v->d, 10, &v->d))
                v->exact = 0;
        }
    }
    if (v->exact) {
        uint64_t g = gcd_u64(v->n, v->d);
        v->n /= g;
        v->d /= g;
    }
    return frac_end > frac_start ? frac_end : int_end;
}

static int dec_is_zero(const dec *v) { return v->exact && v->n == 0; }

/* out = a / b (b nonzero) as a reduced rational; exact 0 when it does not fit 64 bits. */
static void quotient(const dec *a, const dec *b, mathv_number *out)
{
    out->exact = 0;
    if (!a->exact || !b->exact)
        return;
    if (a->n == 0) {
        out->exact = 1;
        out->n = 0;
        out->d = 1;
        return;
    }
    uint64_t g1 = gcd_u64(a->n, b->n), g2 = gcd_u64(a->d, b->d);
    uint64_t n, d;
    if (__builtin_mul_overflow(a->n / g1, b->d / g2, &n) ||
        __builtin_mul_overflow(a->d / g2, b->n / g1, &d))
        return;
    out->exact = 1;
    out->n = n;
    out->d = d;
}

/* One argument of \frac: {[sign] decimal} (spaces allowed inside the braces) or one digit. */
static size_t frac_arg(const char *s, size_t len, dec *v, int *neg)
{
    size_t i = 0;
    while (i < len && s[i] == ' ')
        i++;
    if (i < len && is_digit(s[i])) {
        memset(v, 0, sizeof *v);
        v->exact = v->digits_ok = 1;
        v->n = (uint64_t)(s[i] - '0');
        v->d = 1;
        return i + 1;
    }
    if (i >= len || s[i] != '{')
        return 0;
    i++;
    while (i < len && s[i] == ' ')
        i++;
    int ng = 0;
    i += sign_len(s + i, len - i, &ng);
    size_t k = parse_decimal(s + i, len - i, v);
    if (!k)
        return 0;
    i += k;
    while (i < len && s[i] == ' ')
        i++;
    if (i >= len || s[i] != '}')
        return 0;
    *neg ^= ng;
    return i + 1;
}

static size_t parse_frac(const char *s, size_t len, mathv_number *out, int *neg)
{
    size_t i;
    if (starts(s, len, "\\frac"))
        i = 5;
    else if (starts(s, len, "\\dfrac") || starts(s, len, "\\tfrac"))
        i = 6;
    else
        return 0;
    dec a, b;
    size_t k = frac_arg(s + i, len - i, &a, neg);
    if (!k)
        return 0;
    i += k;
    k = frac_arg(s + i, len - i, &b, neg);
    if (!k || dec_is_zero(&b))
        return 0;
    quotient(&a, &b, out);
    return i + k;
}

size_t mathv_parse_number(const char *s, size_t len, mathv_number *out)
{
    memset(out, 0, sizeof *out);
    if (!s)
        return 0;
    size_t i = 0;
    int neg = 0;
    size_t k = sign_len(s, len, &neg);
    i += k;
    size_t c = currency_len(s + i, len - i);
    i += c;
    if (c && !k)
        i += sign_len(s + i, len - i, &neg); /* "$-5" as well as "-$5" */
    size_t f = parse_frac(s + i, len - i, out, &neg);
    if (f) {
        i += f;
    } else {
        dec a;
        size_t m = parse_decimal(s + i, len - i, &a);
        if (!m) {
            memset(out, 0, sizeof *out);
            return 0;
        }
        i += m;
        dec b;
        size_t m2 = 0;
        if (i + 1 < len && s[i] == '/' && is_digit(s[i + 1]))
            m2 = parse_decimal(s + i + 1, len - i - 1, &b);
        if (m2 && !dec_is_zero(&b)) {
            quotient(&a, &b, out);
            i += 1 + m2;
        } else {
            out->exact = a.exact;
            out->n = a.n;
            out->d = a.d;
            out->is_decimal = 1;
            if (a.digits_ok)
                memcpy(out->digits, a.digits, sizeof out->digits);
        }
    }
    size_t j = i + (i < len && s[i] == ' ');
    if (j < len && s[j] == '%') {
        out->percent = 1;
        i = j + 1;
    } else if (starts(s + j, len - j, "\\%")) {
        out->percent = 1;
        i = j + 2;
    }
    out->neg = neg && !(out->exact && out->n == 0) &&
               !(out->is_decimal && strcmp(out->digits, "0") == 0);
    return i;
}

/* The canonical decimal digits of an exact |x| = n/d into buf (cap >= 90), when its
 * expansion terminates (d = 2^i 5^j); 0 when it does not. At most 20 integer digits and,
 * since d < 2^64 forces i, j < 64, at most 63 fraction digits. */
static int exact_digits(const mathv_number *x, char *buf, size_t cap)
{
    uint64_t d = x->d;
    while (d % 2 == 0)
        d /= 2;
    while (d % 5 == 0)
        d /= 5;
    if (d != 1)
        return 0;
    int n = snprintf(buf, cap, "%llu", (unsigned long long)(x->n / x->d));
    unsigned __int128 r = x->n % x->d;
    if (r)
        buf[n++] = '.';
    while (r && (size_t)n + 1 < cap) {
        r *= 10;
        buf[n++] = (char)('0' + (int)(r / x->d));
        r %= x->d;
    }
    buf[n] = '\0';
    return 1;
}

int mathv_equal(const mathv_number *a, const mathv_number *b)
{
    if (a->neg != b->neg)
        return 0; /* zero is never negative, so the signs of equal values agree */
    if (a->is_decimal && b->is_decimal && a->digits[0] && b->digits[0])
        return strcmp(a->digits, b->digits) == 0;
    if (a->exact && b->exact)
        return a->n == b->n && a->d == b->d;
    for (int pass = 0; pass < 2; pass++) {
        const mathv_number *x = pass ? b : a, *y = pass ? a : b;
        if (!x->is_decimal || !y->exact)
            continue;
        /* x is a decimal beyond 64 bits. With MATHV_DIGITS_MAX or more significant digits
         * its reduced form is far beyond 64 bits too, so it cannot equal y. */
        if (!x->digits[0])
            return 0;
        char buf[96];
        return exact_digits(y, buf, sizeof buf) && strcmp(x->digits, buf) == 0;
    }
    return -1;
}

/* ---- Extraction --------------------------------------------------------------------------- */

const char *mathv_source_name(mathv_source s)
{
    switch (s) {
    case MATHV_HASH: return "after ####";
    case MATHV_BOXED: return "in \\boxed{}";
    case MATHV_LAST: return "last number";
    default: return "none";
    }
}

/* First occurrence of lit in s[0..len) at or after from, or len. */
static size_t find_first(const char *s, size_t len, size_t from, const char *lit)
{
    size_t n = strlen(lit);
    for (size_t i = from; i + n <= len; i++)
        if (s[i] == lit[0] && memcmp(s + i, lit, n) == 0)
            return i;
    return len;
}

/* Last occurrence of lit that ends at or before end, or (size_t)-1. */
static size_t find_last(const char *s, size_t end, const char *lit)
{
    size_t n = strlen(lit);
    for (size_t i = end; i >= n; i--)
        if (memcmp(s + i - n, lit, n) == 0)
            return i - n;
    return (size_t)-1;
}

static void trim(const char *s, size_t *start, size_t *end)
{
    while (*start < *end && is_space(s[*start]))
        (*start)++;
    while (*end > *start && is_space(s[*end - 1]))
        (*end)--;
}

/* 1 when s[i..end) can follow a number as a unit or words: no digits, no '^' or '_'
 * (other than the degree sign ^\circ), and no LaTeX command but the text and spacing ones
 * ("3\pi" is not the number 3). */
static int unit_text(const char *s, size_t i, size_t end)
{
    static const char *const ok_cmds[] = {"text", "textbf", "textrm", "textit", "mathrm",
                                          "mbox", "quad", "qquad", "circ", "degree"};
    while (i < end) {
        if (starts(s + i, end - i, "^\\circ") || starts(s + i, end - i, "^{\\circ}")) {
            i += s[i + 1] == '{' ? 8 : 6;
            continue;
        }
        char c = s[i];
        if (is_digit(c) || c == '^' || c == '_')
            return 0;
        if (c == '\\' && i + 1 < end && is_alpha(s[i + 1])) {
            size_t j = i + 1;
            while (j < end && is_alpha(s[j]))
                j++;
            size_t n = j - i - 1;
            int known = 0;
            for (size_t k = 0; k < sizeof ok_cmds / sizeof ok_cmds[0] && !known; k++)
                known = n == strlen(ok_cmds[k]) && !memcmp(s + i + 1, ok_cmds[k], n);
            if (!known)
                return 0;
            i = j;
            continue;
        }
        i += c == '\\' ? 2 : 1; /* \% \$ \, \! and other escapes */
    }
    return 1;
}

/* s[start..end) is one number followed by unit text: fill ans's number. */
static void single_number(const char *s, size_t start, size_t end, mathv_answer *ans)
{
    size_t k = mathv_parse_number(s + start, end - start, &ans->num);
    if (!k)
        return;
    if (!unit_text(s, start + k, end)) {
        memset(&ans->num, 0, sizeof ans->num);
        return;
    }
    ans->has_number = 1;
    ans->num_start = start;
    ans->num_len = k;
}

/* The last "####" (or longer run of '#') followed by an answer: with need_number, one
 * followed by a number past white space and markdown '*'; else one followed by any text on
 * its line past spaces, tabs and '*'. Only the winner's line is scanned to its end, so
 * the search stays linear however many markers there are. */
static int extract_hash(const char *s, size_t len, int need_number, mathv_answer *ans)
{
    size_t best = len, best_k = 0;
    mathv_number num, best_num;
    for (size_t p = find_first(s, len, 0, "####"); p < len; p = find_first(s, len, p, "####")) {
        p += 4;
        while (p < len && s[p] == '#')
            p++;
        size_t start = p;
        while (start < len && (s[start] == '*' || s[start] == ' ' || s[start] == '\t' ||
                               (need_number && is_space(s[start]))))
            start++;
        if (need_number) {
            size_t k = mathv_parse_number(s + start, len - start, &num);
            if (!k)
                continue;
            best_k = k;
            best_num = num;
        } else if (start >= len || s[start] == '\n' || s[start] == '\r') {
            continue;
        }
        best = start;
    }
    if (best == len)
        return 0;
    size_t end = best;
    while (end < len && s[end] != '\n')
        end++;
    trim(s, &best, &end);
    ans->source = MATHV_HASH;
    ans->start = best;
    ans->len = end - best;
    if (best_k) {
        ans->has_number = 1;
        ans->num = best_num;
        ans->num_start = best;
        ans->num_len = best_k;
    }
    return 1;
}

static int extract_boxed(const char *s, size_t len, mathv_answer *ans)
{
    static const char pat[] = "\\boxed{";
    const size_t plen = sizeof pat - 1;
    size_t limit = len; /* a candidate that is still open here never closes */
    size_t p = find_last(s, len, pat);
    while (p != (size_t)-1) {
        int depth = 1;
        size_t i = p + plen;
        for (; i < limit; i++) {
            if (s[i] == '\\' && i + 1 < limit && (s[i + 1] == '{' || s[i + 1] == '}')) {
                i++;
                continue;
            }
            if (s[i] == '{')
                depth++;
            else if (s[i] == '}' && --depth == 0)
                break;
        }
        if (i < limit) {
            size_t start = p + plen, end = i;
            trim(s, &start, &end);
            ans->source = MATHV_BOXED;
            ans->start = start;
            ans->len = end - start;
            /* "x = 5": a variable name and '=' before the number */
            size_t v = start;
            while (v < end && is_alpha(s[v]))
                v++;
            size_t eq = v;
            while (eq < end && s[eq] == ' ')
                eq++;
            if (v > start && eq < end && s[eq] == '=') {
                for (eq++; eq < end && is_space(s[eq]);)
                    eq++;
                single_number(s, eq, end, ans);
            } else {
                single_number(s, start, end, ans);
            }
            return 1;
        }
        limit = p;
        p = p > 0 ? find_last(s, p + plen - 1, pat) : (size_t)-1;
    }
    return 0;
}

/* A sign may open a number only after a non-word character ("5-3" is 5 and 3). */
static int sign_allowed_after(char prev)
{
    return !(is_digit(prev) || is_alpha(prev) || prev == '_' || prev == ')' || prev == ']' ||
             prev == '}');
}

static void extract_last(const char *s, size_t len, mathv_answer *ans)
{
    size_t i = 0;
    mathv_number num;
    while (i < len) {
        char c = s[i];
        int neg = 0;
        int maybe = is_digit(c) || c == '.' || c == '\\' || currency_len(s + i, len - i) ||
                    sign_len(s + i, len - i, &neg);
        if (maybe && sign_len(s + i, len - i, &neg) && i > 0 && !sign_allowed_after(s[i - 1]))
            maybe = 0;
        if (maybe && c == '.' && i > 0 && is_digit(s[i - 1]))
            maybe = 0;
        size_t k = maybe ? mathv_parse_number(s + i, len - i, &num) : 0;
        if (k) {
            ans->source = MATHV_LAST;
            ans->has_number = 1;
            ans->num = num;
            ans->start = ans->num_start = i;
            ans->len = ans->num_len = k;
            i += k;
        } else {
            i++;
        }
    }
}

void mathv_extract(const char *text, size_t len, mathv_answer *out)
{
    memset(out, 0, sizeof *out);
    if (!text)
        return;
    if (extract_hash(text, len, 1, out) || extract_boxed(text, len, out))
        return;
    extract_last(text, len, out);
}

/* ---- Verification ------------------------------------------------------------------------- */

/* Up to 40 bytes of s[0..len) for a message: non-printable bytes become '?', a cut "...". */
static const char *show(const char *s, size_t len, char *buf, size_t cap)
{
    size_t keep = len < 40 ? len : 40;
    if (keep + 4 > cap)
        keep = cap > 4 ? cap - 4 : 0;
    size_t i = 0;
    for (; i < keep; i++) {
        unsigned char c = (unsigned char)s[i];
        buf[i] = (c >= 32 && c <= 126) ? (char)c : '?';
    }
    if (keep < len) {
        memcpy(buf + i, "...", 3);
        i += 3;
    }
    buf[i] = '\0';
    return buf;
}

static void score_set(mathv_score *out, double correct, double format, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void score_set(mathv_score *out, double correct, double format, const char *fmt, ...)
{
    va_list ap;
    out->correct = correct;
    out->format = format;
    va_start(ap, fmt);
    vsnprintf(out->detail, sizeof out->detail, fmt, ap);
    va_end(ap);
}

/* Text form of an answer for non-numeric references (see the header). Returns the length
 * written to dst (NUL-terminated), or (size_t)-1 when it does not fit cap. */
static size_t normalize(const char *s, size_t len, char *dst, size_t cap)
{
    static const char *const drop[] = {"\\left", "\\right"};
    static const char *const spacing[] = {"\\!", "\\,", "\\;", "\\:", "\\ "};
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        if (is_space(s[i]) || s[i] == '$') {
            i++;
            continue;
        }
        int skipped = 0;
        for (size_t k = 0; k < sizeof drop / sizeof drop[0] && !skipped; k++) {
            size_t m = strlen(drop[k]);
            if (starts(s + i, len - i, drop[k]) && (i + m >= len || !is_alpha(s[i + m]))) {
                i += m;
                skipped = 1;
            }
        }
        for (size_t k = 0; k < sizeof spacing / sizeof spacing[0] && !skipped; k++)
            if (starts(s + i, len - i, spacing[k])) {
                i += 2;
                skipped = 1;
            }
        if (skipped)
            continue;
        if (starts(s + i, len - i, "\\dfrac") || starts(s + i, len - i, "\\tfrac")) {
            if (n + 5 >= cap)
                return (size_t)-1;
            memcpy(dst + n, "\\frac", 5);
            n += 5;
            i += 6;
            continue;
        }
        if (n + 1 >= cap)
            return (size_t)-1;
        dst[n++] = s[i++];
    }
    if (n > 0 && dst[n - 1] == '.')
        n--;
    dst[n] = '\0';
    return n;
}

static size_t bounded_len(const char *s, size_t cap)
{
    size_t n = 0;
    while (n < cap && s[n])
        n++;
    return n;
}

/* Text comparison for a reference that is not a number. */
static void verify_text(const char *c, size_t len, const char *ref, size_t rs, size_t re,
                        mathv_score *out)
{
    char sr[48], sa[48];
    show(ref + rs, re - rs, sr, sizeof sr);
    mathv_answer t;
    const mathv_answer *a = &t;
    memset(&t, 0, sizeof t);
    if (!extract_boxed(c, len, &t) && !extract_hash(c, len, 0, &t)) {
        score_set(out, 0, 0,
                  "reference %s is not a number, and the completion has no \\boxed{} or #### "
                  "answer to compare as text", sr);
        return;
    }
    char na[2 * MATHV_REFERENCE_MAX], nr[2 * MATHV_REFERENCE_MAX];
    size_t la = normalize(c + a->start, a->len, na, sizeof na);
    size_t lr = normalize(ref + rs, re - rs, nr, sizeof nr);
    show(c + a->start, a->len, sa, sizeof sa);
    double fmt = a->len > 0;
    if (la != (size_t)-1 && lr != (size_t)-1 && lr > 0 && la == lr && memcmp(na, nr, la) == 0)
        score_set(out, 1, fmt, "answer %s (%s) matches reference %s as text", sa,
                  mathv_source_name(a->source), sr);
    else
        score_set(out, 0, fmt, "answer \"%s\" (%s) != reference %s (compared as text: the "
                  "reference is not a number)", sa, mathv_source_name(a->source), sr);
}

int mathv_verify(const char *completion, const char *reference, mathv_score *out,
                 coh_err *err)
{
    if (!out)
        return coh_fail(err, COH_EINVAL, "mathv_verify: out is NULL");
    memset(out, 0, sizeof *out);
    if (!reference)
        return coh_fail(err, COH_EINVAL, "math item has no reference answer");
    size_t rl = bounded_len(reference, MATHV_REFERENCE_MAX + 1);
    if (rl > MATHV_REFERENCE_MAX)
        return coh_fail(err, COH_EINVAL, "math item: reference answer longer than %d bytes",
                        MATHV_REFERENCE_MAX);
    size_t rs = 0, re = rl;
    trim(reference, &rs, &re);
    if (rs == re)
        return coh_fail(err, COH_EINVAL,
                        "math item has no reference answer (give \"answer\" in the prompt file)");
    if (starts(reference + rs, re - rs, "\\boxed{") && reference[re - 1] == '}') {
        rs += 7; /* a reference written as \boxed{...}: its content */
        re--;
        trim(reference, &rs, &re);
    }
    mathv_answer refn;
    memset(&refn, 0, sizeof refn);
    single_number(reference, rs, re, &refn);

    if (!completion) {
        score_set(out, 0, 0, "no completion");
        return COH_OK;
    }
    size_t len = bounded_len(completion, (size_t)MATHV_COMPLETION_MAX + 1);
    if (len > MATHV_COMPLETION_MAX) {
        score_set(out, 0, 0, "completion longer than %d bytes", MATHV_COMPLETION_MAX);
        return COH_OK;
    }
    if (!refn.has_number) {
        verify_text(completion, len, reference, rs, re, out);
        return COH_OK;
    }
    mathv_answer a;
    mathv_extract(completion, len, &a);
    char sr[48], sa[48];
    show(reference + refn.num_start, refn.num_len, sr, sizeof sr);
    switch (a.source) {
    case MATHV_NONE:
        score_set(out, 0, 0, "no number found; reference %s", sr);
        return COH_OK;
    case MATHV_BOXED:
        if (!a.has_number) {
            score_set(out, 0, 0, "\\boxed{%s} is not a single number; reference %s",
                      show(completion + a.start, a.len, sa, sizeof sa), sr);
            return COH_OK;
        }
        break;
    default:
        break;
    }
    show(completion + a.num_start, a.num_len, sa, sizeof sa);
    double fmt = a.source == MATHV_LAST ? 0 : 1;
    const char *src = mathv_source_name(a.source);
    switch (mathv_equal(&a.num, &refn.num)) {
    case 1:
        score_set(out, 1, fmt, "answer %s (%s) equals reference %s", sa, src, sr);
        break;
    case 0:
        score_set(out, 0, fmt, "answer %s (%s) != reference %s", sa, src, sr);
        break;
    default:
        score_set(out, 0, fmt,
                  "answer %s (%s) cannot be compared exactly with reference %s (a fraction "
                  "beyond 64 bits)", sa, src, sr);
        break;
    }
    return COH_OK;
}
