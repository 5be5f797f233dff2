/* cli.c - checked parsing of command-line values (see cli.h).
 *
 * strtol/strtod alone accept too much for a command line: leading blanks, trailing text
 * ("5x"), hexadecimal ("0x10"), "inf" and "nan", and strtoull wraps "-1" to 2^64 - 1. Each
 * parser here first checks the characters of the whole string, then converts with errno
 * checked, then compares with the range, so every value that reaches a setting is one the
 * user meant and that the program can use.
 */
#include "cli.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- private helpers ---------------------------------------------------------------------- */

/* The value as the user gave it, shortened for a message. */
static const char *shown(const char *s, char *buf, size_t cap)
{
    if (!s)
        return "";
    size_t n = strlen(s);
    if (n < cap) {
        memcpy(buf, s, n + 1);
        return buf;
    }
    snprintf(buf, cap, "%.*s...", (int)(cap - 4), s);
    return buf;
}

/* "an integer in [1, 1024]", "an integer >= 0" (when hi is the type's maximum). */
static void int_range_text(char *buf, size_t cap, long long lo, long long hi, long long type_max)
{
    if (hi == type_max)
        snprintf(buf, cap, "an integer >= %lld", lo);
    else
        snprintf(buf, cap, "an integer in [%lld, %lld]", lo, hi);
}

static void u64_range_text(char *buf, size_t cap, uint64_t lo, uint64_t hi)
{
    if (hi == UINT64_MAX)
        snprintf(buf, cap, "an integer >= %" PRIu64, lo);
    else
        snprintf(buf, cap, "an integer in [%" PRIu64 ", %" PRIu64 "]", lo, hi);
}

static void real_range_text(char *buf, size_t cap, double lo, double hi, int lo_open,
                            int hi_open)
{
    if (isinf(hi) && hi > 0)
        snprintf(buf, cap, "a real number %s %g", lo_open ? ">" : ">=", lo);
    else
        snprintf(buf, cap, "a real number in %c%g, %g%c", lo_open ? '(' : '[', lo, hi,
                 hi_open ? ')' : ']');
}

/* Optional sign, then one or more decimal digits, nothing else. */
static int is_decimal_integer(const char *s, int allow_minus)
{
    if (*s == '+' || (allow_minus && *s == '-'))
        s++;
    if (!*s)
        return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return 0;
    return 1;
}

/* A decimal real: [sign] digits [. digits] [e [sign] digits], at least one mantissa digit. */
static int is_decimal_real(const char *s)
{
    if (*s == '+' || *s == '-')
        s++;
    int digits = 0;
    while (*s >= '0' && *s <= '9') {
        s++;
        digits++;
    }
    if (*s == '.') {
        s++;
        while (*s >= '0' && *s <= '9') {
            s++;
            digits++;
        }
    }
    if (!digits)
        return 0;
    if (*s == 'e' || *s == 'E') {
        s++;
        if (*s == '+' || *s == '-')
            s++;
        if (*s < '0' || *s > '9')
            return 0;
        while (*s >= '0' && *s <= '9')
            s++;
    }
    return *s == '\0';
}

static int fail_empty(const char *flag, const char *expect, coh_err *err)
{
    return coh_fail(err, COH_EINVAL, "%s: no value given (expected %s)", flag, expect);
}

static int fail_not_integer(const char *flag, const char *s, const char *expect, coh_err *err)
{
    char b[72];
    return coh_fail(err, COH_EINVAL, "%s: '%s' is not an integer (expected %s)", flag,
                    shown(s, b, sizeof b), expect);
}

static int fail_range(const char *flag, const char *s, const char *expect, coh_err *err)
{
    char b[72];
    return coh_fail(err, COH_ERANGE, "%s: %s is out of range (expected %s)", flag,
                    shown(s, b, sizeof b), expect);
}

/* ---- integers ----------------------------------------------------------------------------- */

int cli_parse_long(const char *flag, const char *s, long lo, long hi, long *out, coh_err *err)
{
    char expect[96];
    int_range_text(expect, sizeof expect, lo, hi, LONG_MAX);
    if (!s || !*s)
        return fail_empty(flag, expect, err);
    if (!is_decimal_integer(s, 1))
        return fail_not_integer(flag, s, expect, err);
    errno = 0;
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (errno == ERANGE || v < lo || v > hi)
        return fail_range(flag, s, expect, err);
    if (errno || !end || *end)
        return fail_not_integer(flag, s, expect, err);
    *out = v;
    return COH_OK;
}

int cli_parse_int(const char *flag, const char *s, int lo, int hi, int *out, coh_err *err)
{
    char expect[96];
    int_range_text(expect, sizeof expect, lo, hi, INT_MAX);
    if (!s || !*s)
        return fail_empty(flag, expect, err);
    if (!is_decimal_integer(s, 1))
        return fail_not_integer(flag, s, expect, err);
    errno = 0;
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (errno == ERANGE || v < (long)lo || v > (long)hi)
        return fail_range(flag, s, expect, err);
    if (errno || !end || *end)
        return fail_not_integer(flag, s, expect, err);
    *out = (int)v;
    return COH_OK;
}

int cli_parse_u64(const char *flag, const char *s, uint64_t lo, uint64_t hi, uint64_t *out,
                  coh_err *err)
{
    char expect[96];
    u64_range_text(expect, sizeof expect, lo, hi);
    if (!s || !*s)
        return fail_empty(flag, expect, err);
    if (*s == '-' && is_decimal_integer(s, 1)) /* a negative integer: never wrapped */
        return fail_range(flag, s, expect, err);
    if (!is_decimal_integer(s, 0))
        return fail_not_integer(flag, s, expect, err);
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno == ERANGE || (uint64_t)v < lo || (uint64_t)v > hi)
        return fail_range(flag, s, expect, err);
    if (errno || !end || *end)
        return fail_not_integer(flag, s, expect, err);
    *out = (uint64_t)v;
    return COH_OK;
}

/* ---- reals -------------------------------------------------------------------------------- */

static int in_real_range(double v, double lo, double hi, int lo_open, int hi_open)
{
    if (lo_open ? !(v > lo) : !(v >= lo))
        return 0;
    if (hi_open ? !(v < hi) : !(v <= hi))
        return 0;
    return 1;
}

int cli_parse_double(const char *flag, const char *s, double lo, double hi, int lo_open,
                     int hi_open, double *out, coh_err *err)
{
    char expect[96], b[72];
    real_range_text(expect, sizeof expect, lo, hi, lo_open, hi_open);
    if (!s || !*s)
        return fail_empty(flag, expect, err);
    if (!is_decimal_real(s)) {
        /* "inf", "nan", "0x1p3": strtod reads them, a command line should not */
        char *end = NULL;
        double v = strtod(s, &end);
        if (end && end != s && !*end && !isfinite(v))
            return coh_fail(err, COH_EINVAL, "%s: '%s' is not a finite number (expected %s)",
                            flag, shown(s, b, sizeof b), expect);
        return coh_fail(err, COH_EINVAL, "%s: '%s' is not a number (expected %s)", flag,
                        shown(s, b, sizeof b), expect);
    }
    errno = 0;
    char *end = NULL;
    double v = strtod(s, &end);
    if (!end || *end)
        return coh_fail(err, COH_EINVAL, "%s: '%s' is not a number (expected %s)", flag,
                        shown(s, b, sizeof b), expect);
    /* overflow gives +-HUGE_VAL (out of any finite range); underflow gives 0 or a denormal,
     * which is the value the user wrote, to the precision a double has */
    if (!isfinite(v) || !in_real_range(v, lo, hi, lo_open, hi_open))
        return fail_range(flag, s, expect, err);
    *out = v;
    return COH_OK;
}

int cli_parse_float(const char *flag, const char *s, double lo, double hi, int lo_open,
                    int hi_open, float *out, coh_err *err)
{
    double v = 0.0;
    int rc = cli_parse_double(flag, s, lo, hi, lo_open, hi_open, &v, err);
    if (rc)
        return rc;
    float f = (float)v;
    /* the range holds for what is stored, too (1e-50 in (0, 1] would become 0.0f) */
    if (!isfinite(f) || !in_real_range((double)f, lo, hi, lo_open, hi_open)) {
        char expect[96];
        real_range_text(expect, sizeof expect, lo, hi, lo_open, hi_open);
        return coh_fail(err, COH_ERANGE,
                        "%s: %s is out of range once stored as a 32-bit float (expected %s)",
                        flag, s, expect);
    }
    *out = f;
    return COH_OK;
}

/* ---- choices ------------------------------------------------------------------------------ */

int cli_parse_choice(const char *flag, const char *s, const char *const *names, int *out,
                     coh_err *err)
{
    char list[256] = "";
    size_t used = 0;
    for (int i = 0; names[i]; i++) {
        if (s && strcmp(s, names[i]) == 0) {
            *out = i;
            return COH_OK;
        }
        int n = snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", names[i]);
        if (n > 0 && (size_t)n < sizeof list - used)
            used += (size_t)n;
    }
    char b[72];
    if (!s || !*s)
        return coh_fail(err, COH_EINVAL, "%s: no value given (expected one of %s)", flag, list);
    return coh_fail(err, COH_EINVAL, "%s: '%s' is not one of %s", flag, shown(s, b, sizeof b),
                    list);
}

/* ---- addresses ------------------------------------------------------------------------------ */

int cli_check_address(const char *flag, const char *s, int min_port, coh_err *err)
{
    char b[96];
    if (!s || !*s)
        return coh_fail(err, COH_EINVAL, "%s: an empty address (expected HOST:PORT)", flag);
    if (strncmp(s, "unix:", 5) == 0) {
        if (!s[5])
            return coh_fail(err, COH_EINVAL, "%s: 'unix:' names no socket path", flag);
        return COH_OK;
    }
    const char *a = s;
    static const char *const schemes[] = {"dns:///", "dns:", "ipv4:", "ipv6:"};
    for (size_t i = 0; i < sizeof schemes / sizeof *schemes; i++)
        if (strncmp(a, schemes[i], strlen(schemes[i])) == 0) {
            a += strlen(schemes[i]);
            break;
        }
    const char *colon = strrchr(a, ':');
    if (!colon)
        return coh_fail(err, COH_EINVAL, "%s: '%s' has no port (expected HOST:PORT)", flag,
                        shown(s, b, sizeof b));
    if (a[0] == '[') {
        const char *close = strchr(a, ']');
        if (!close || close + 1 != colon)
            return coh_fail(err, COH_EINVAL,
                            "%s: '%s' is not an address (expected [IPv6]:PORT for IPv6)", flag,
                            shown(s, b, sizeof b));
    } else if (memchr(a, ':', (size_t)(colon - a))) {
        return coh_fail(err, COH_EINVAL,
                        "%s: '%s' is not an address (write an IPv6 host in brackets: [::1]:PORT)",
                        flag, shown(s, b, sizeof b));
    }
    const char *p = colon + 1;
    size_t n = strlen(p);
    int digits = n > 0 && n <= 5;
    for (size_t i = 0; digits && i < n; i++)
        digits = p[i] >= '0' && p[i] <= '9';
    if (!digits)
        return coh_fail(err, COH_EINVAL,
                        "%s: '%s': the port '%s' is not a number (expected HOST:PORT with a port "
                        "in [%d, 65535])",
                        flag, shown(s, b, sizeof b), p, min_port);
    long port = strtol(p, NULL, 10);
    if (port < min_port || port > 65535)
        return coh_fail(err, COH_EINVAL,
                        "%s: '%s': port %ld is out of range (expected HOST:PORT with a port in "
                        "[%d, 65535])",
                        flag, shown(s, b, sizeof b), port, min_port);
    return COH_OK;
}
