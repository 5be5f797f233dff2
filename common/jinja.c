/* jinja.c - a Jinja template engine for chat templates (see jinja.h for the contract).
 *
 * Pipeline: lex (whitespace control applied to the text between tags) -> parse (an AST per
 * template, kept in the template's own arena) -> render (a tree walk; every value of one
 * render lives in a per-render arena that is freed in one go at the end).
 *
 * Errors at any depth of the compiler or the renderer go through jx_fail(), which records
 * the message and longjmps back to jinja_compile / jinja_render. That is safe because
 * nothing in between owns memory outside the arena of the call.
 */
#include "jinja.h"

#include <ctype.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- arena and string builder ---------------------------------------------------------- */

typedef struct ablock {
    struct ablock *next;
    size_t used, cap;
    max_align_t data[];
} ablock;

typedef struct jx {
    ablock *head;
    jmp_buf jb;
    coh_err *err;
    int code;
} jx; /* the failure/allocation context of one compile or one render */

static void jx_fail(jx *x, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4), noreturn));
static void jx_fail(jx *x, int code, const char *fmt, ...)
{
    if (x->err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(x->err->msg, sizeof x->err->msg, fmt, ap);
        va_end(ap);
        x->err->code = code;
    }
    x->code = code;
    longjmp(x->jb, 1);
}

static void *ar_alloc(jx *x, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    ablock *b = x->head;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > 16384 ? n : 16384;
        b = malloc(sizeof *b + cap);
        if (!b)
            jx_fail(x, COH_ENOMEM, "out of memory (%zu bytes) in the template engine", n);
        b->used = 0;
        b->cap = cap;
        b->next = x->head;
        x->head = b;
    }
    void *p = (char *)b->data + b->used;
    b->used += n;
    return p;
}

static void ar_free_all(ablock *b)
{
    while (b) {
        ablock *n = b->next;
        free(b);
        b = n;
    }
}

static char *ar_strndup(jx *x, const char *s, size_t n)
{
    char *p = ar_alloc(x, n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf;

static void sb_reserve(jx *x, sbuf *b, size_t extra)
{
    if (b->n + extra + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap * 2 : 64;
    while (cap < b->n + extra + 1)
        cap *= 2;
    char *p = ar_alloc(x, cap);
    if (b->n)
        memcpy(p, b->p, b->n);
    b->p = p;
    b->cap = cap;
}

static void sb_add(jx *x, sbuf *b, const char *s, size_t n)
{
    sb_reserve(x, b, n);
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_puts(jx *x, sbuf *b, const char *s) { sb_add(x, b, s, strlen(s)); }
static void sb_putc(jx *x, sbuf *b, char c) { sb_add(x, b, &c, 1); }

static void sb_printf(jx *x, sbuf *b, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void sb_printf(jx *x, sbuf *b, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        sb_add(x, b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* ---- UTF-8 ----------------------------------------------------------------------------- */

/* Decode one code point at s[*i] (n bytes total); invalid bytes decode as U+FFFD, one byte. */
static uint32_t u8_next(const char *s, size_t n, size_t *i)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t k = *i;
    uint32_t c = u[k];
    int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || k + (size_t)len > n) {
        *i = k + 1;
        return c < 0x80 ? c : 0xFFFD;
    }
    if (len == 1) {
        *i = k + 1;
        return c;
    }
    c &= 0x3F >> (len - 1);
    for (int j = 1; j < len; j++) {
        if ((u[k + j] & 0xC0) != 0x80) {
            *i = k + 1;
            return 0xFFFD;
        }
        c = (c << 6) | (u[k + j] & 0x3F);
    }
    *i = k + (size_t)len;
    return c;
}

static size_t u8_count(const char *s, size_t n)
{
    size_t i = 0, c = 0;
    while (i < n) {
        u8_next(s, n, &i);
        c++;
    }
    return c;
}

/* Byte offsets of every code point of s, plus n at the end; *count = number of code points. */
static size_t *u8_offsets(jx *x, const char *s, size_t n, size_t *count)
{
    size_t cnt = u8_count(s, n);
    size_t *o = ar_alloc(x, (cnt + 1) * sizeof *o);
    size_t i = 0, k = 0;
    while (i < n) {
        o[k++] = i;
        u8_next(s, n, &i);
    }
    o[k] = n;
    *count = cnt;
    return o;
}

/* first occurrence of needle in hay (memmem is not in POSIX) */
static const char *mem_find(const char *hay, size_t hn, const char *needle, size_t nn)
{
    if (nn == 0)
        return hay;
    for (size_t i = 0; i + nn <= hn; i++) {
        const char *p = memchr(hay + i, needle[0], hn - nn - i + 1);
        if (!p)
            return NULL;
        i = (size_t)(p - hay);
        if (memcmp(p, needle, nn) == 0)
            return p;
    }
    return NULL;
}

/* Python's str.isspace() */
static int py_isspace(uint32_t c)
{
    return (c >= 9 && c <= 13) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

/* ---- values ---------------------------------------------------------------------------- */

typedef enum {
    JV_UNDEF, JV_NONE, JV_BOOL, JV_INT, JV_FLOAT, JV_STR, JV_LIST, JV_DICT, JV_NS, JV_MACRO,
    JV_FUNC, JV_METHOD
} jkind;

typedef struct jv jv;
typedef struct node node;
typedef struct scope scope;

struct jv {
    jkind k;
    int tuple;  /* JV_LIST: prints as a Python tuple */
    int gen;    /* JV_LIST: stands for a Python generator (map, select, ...): no len(), no
                 * subscripts, no JSON, always truthy, as in jinja2 */
    int markup; /* JV_STR: a markupsafe.Markup (from `safe`/`escape`): `+` with a plain str
                 * HTML-escapes the plain side, as in jinja2 without autoescape */
    union {
        int b;
        long long i;
        double f;
        struct { const char *p; size_t n; } s;
        struct { jv **v; size_t n, cap; } l;
        struct { jv **key; jv **val; size_t n, cap; } d; /* JV_DICT and JV_NS */
        struct { const node *def; scope *closure; } m;
        int fn;
        struct { jv *self; const char *name; } me;
        const char *hint; /* JV_UNDEF: the error to raise when it is misused */
    } u;
};

static jv V_NONE = {.k = JV_NONE};
static jv V_TRUE = {.k = JV_BOOL, .u.b = 1};
static jv V_FALSE = {.k = JV_BOOL, .u.b = 0};

static jv *jv_new(jx *x, jkind k)
{
    jv *v = ar_alloc(x, sizeof *v);
    memset(v, 0, sizeof *v);
    v->k = k;
    return v;
}

static jv *jv_bool(int b) { return b ? &V_TRUE : &V_FALSE; }

static jv *jv_int(jx *x, long long i)
{
    jv *v = jv_new(x, JV_INT);
    v->u.i = i;
    return v;
}

static jv *jv_float(jx *x, double f)
{
    jv *v = jv_new(x, JV_FLOAT);
    v->u.f = f;
    return v;
}

static jv *jv_strn(jx *x, const char *s, size_t n)
{
    jv *v = jv_new(x, JV_STR);
    v->u.s.p = ar_strndup(x, s, n);
    v->u.s.n = n;
    return v;
}

static jv *jv_str(jx *x, const char *s) { return jv_strn(x, s, strlen(s)); }

/* a string that already lives in the arena (or in the template) */
static jv *jv_str_ref(jx *x, const char *s, size_t n)
{
    jv *v = jv_new(x, JV_STR);
    v->u.s.p = s;
    v->u.s.n = n;
    return v;
}

static jv *jv_undef(jx *x, const char *hint)
{
    jv *v = jv_new(x, JV_UNDEF);
    v->u.hint = hint;
    return v;
}

static jv *jv_list(jx *x) { return jv_new(x, JV_LIST); }

static void list_push(jx *x, jv *l, jv *item)
{
    if (l->u.l.n == l->u.l.cap) {
        size_t cap = l->u.l.cap ? l->u.l.cap * 2 : 4;
        jv **v = ar_alloc(x, cap * sizeof *v);
        if (l->u.l.n)
            memcpy(v, l->u.l.v, l->u.l.n * sizeof *v);
        l->u.l.v = v;
        l->u.l.cap = cap;
    }
    l->u.l.v[l->u.l.n++] = item;
}

static int py_eq(const jv *a, const jv *b);

static jv **dict_find(const jv *d, const jv *key)
{
    for (size_t i = 0; i < d->u.d.n; i++)
        if (py_eq(d->u.d.key[i], key))
            return &d->u.d.val[i];
    return NULL;
}

static jv *dict_get_s(const jv *d, const char *key)
{
    size_t n = strlen(key);
    for (size_t i = 0; i < d->u.d.n; i++) {
        const jv *k = d->u.d.key[i];
        if (k->k == JV_STR && k->u.s.n == n && memcmp(k->u.s.p, key, n) == 0)
            return d->u.d.val[i];
    }
    return NULL;
}

static void dict_set(jx *x, jv *d, jv *key, jv *val)
{
    jv **slot = dict_find(d, key);
    if (slot) {
        *slot = val;
        return;
    }
    if (d->u.d.n == d->u.d.cap) {
        size_t cap = d->u.d.cap ? d->u.d.cap * 2 : 8;
        jv **k = ar_alloc(x, cap * sizeof *k), **v = ar_alloc(x, cap * sizeof *v);
        if (d->u.d.n) {
            memcpy(k, d->u.d.key, d->u.d.n * sizeof *k);
            memcpy(v, d->u.d.val, d->u.d.n * sizeof *v);
        }
        d->u.d.key = k;
        d->u.d.val = v;
        d->u.d.cap = cap;
    }
    d->u.d.key[d->u.d.n] = key;
    d->u.d.val[d->u.d.n++] = val;
}

static void dict_set_s(jx *x, jv *d, const char *key, jv *val) { dict_set(x, d, jv_str(x, key), val); }

static int jv_isnum(const jv *v) { return v->k == JV_INT || v->k == JV_FLOAT || v->k == JV_BOOL; }

static double jv_num(const jv *v)
{
    return v->k == JV_FLOAT ? v->u.f : v->k == JV_INT ? (double)v->u.i : (double)v->u.b;
}

static long long jv_intval(const jv *v) { return v->k == JV_INT ? v->u.i : (long long)v->u.b; }

static const char *py_type(const jv *v)
{
    switch (v->k) {
    case JV_UNDEF: return "Undefined";
    case JV_NONE: return "NoneType";
    case JV_BOOL: return "bool";
    case JV_INT: return "int";
    case JV_FLOAT: return "float";
    case JV_STR: return "str";
    case JV_LIST: return v->gen ? "generator" : v->tuple ? "tuple" : "list";
    case JV_DICT: return "dict";
    case JV_NS: return "Namespace";
    case JV_MACRO: return "Macro";
    case JV_FUNC: return "function";
    case JV_METHOD: return "builtin_function_or_method";
    }
    return "object";
}

static int py_truthy(const jv *v)
{
    switch (v->k) {
    case JV_UNDEF:
    case JV_NONE: return 0;
    case JV_BOOL: return v->u.b;
    case JV_INT: return v->u.i != 0;
    case JV_FLOAT: return v->u.f != 0.0;
    case JV_STR: return v->u.s.n > 0;
    case JV_LIST: return v->gen || v->u.l.n > 0;
    case JV_DICT: return v->u.d.n > 0;
    default: return 1;
    }
}

static int py_eq(const jv *a, const jv *b)
{
    if (jv_isnum(a) && jv_isnum(b)) {
        if (a->k != JV_FLOAT && b->k != JV_FLOAT)
            return jv_intval(a) == jv_intval(b);
        return jv_num(a) == jv_num(b);
    }
    if (a->k != b->k)
        return 0;
    switch (a->k) {
    case JV_UNDEF:
    case JV_NONE: return 1;
    case JV_STR: return a->u.s.n == b->u.s.n && memcmp(a->u.s.p, b->u.s.p, a->u.s.n) == 0;
    case JV_LIST:
        if (a->u.l.n != b->u.l.n || a->tuple != b->tuple)
            return 0;
        for (size_t i = 0; i < a->u.l.n; i++)
            if (!py_eq(a->u.l.v[i], b->u.l.v[i]))
                return 0;
        return 1;
    case JV_DICT:
        if (a->u.d.n != b->u.d.n)
            return 0;
        for (size_t i = 0; i < a->u.d.n; i++) {
            jv **o = dict_find(b, a->u.d.key[i]);
            if (!o || !py_eq(a->u.d.val[i], *o))
                return 0;
        }
        return 1;
    default: return a == b;
    }
}

/* Python float repr: the shortest digits that read back to the same double. */
static void fmt_float(double d, char *out, size_t cap)
{
    if (isnan(d)) {
        snprintf(out, cap, "nan");
        return;
    }
    if (isinf(d)) {
        snprintf(out, cap, d < 0 ? "-inf" : "inf");
        return;
    }
    char buf[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*e", prec - 1, d);
        if (strtod(buf, NULL) == d)
            break;
    }
    /* buf: [-]d[.ddd]e[+-]XX */
    char digits[24];
    int nd = 0, neg = buf[0] == '-';
    const char *p = buf + neg;
    for (; *p && *p != 'e'; p++)
        if (isdigit((unsigned char)*p))
            digits[nd++] = *p;
    int exp = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    digits[nd] = 0;
    char res[64];
    size_t r = 0;
    if (neg)
        res[r++] = '-';
    if (exp >= -5 + 1 && exp < 16) {
        if (exp >= 0) {
            for (int i = 0; i <= exp; i++)
                res[r++] = i < nd ? digits[i] : '0';
            res[r++] = '.';
            if (nd > exp + 1)
                for (int i = exp + 1; i < nd; i++)
                    res[r++] = digits[i];
            else
                res[r++] = '0';
        } else {
            res[r++] = '0';
            res[r++] = '.';
            for (int i = 0; i < -exp - 1; i++)
                res[r++] = '0';
            for (int i = 0; i < nd; i++)
                res[r++] = digits[i];
        }
        res[r] = 0;
    } else {
        res[r++] = digits[0];
        if (nd > 1) {
            res[r++] = '.';
            for (int i = 1; i < nd; i++)
                res[r++] = digits[i];
        }
        res[r] = 0;
        snprintf(res + r, sizeof res - r, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    }
    snprintf(out, cap, "%s", res);
}

static void py_repr(jx *x, sbuf *b, const jv *v);

/* str(v) as Python (and Jinja's Undefined) prints it */
static void py_str(jx *x, sbuf *b, const jv *v)
{
    char tmp[64];
    switch (v->k) {
    case JV_UNDEF: return;
    case JV_NONE: sb_puts(x, b, "None"); return;
    case JV_BOOL: sb_puts(x, b, v->u.b ? "True" : "False"); return;
    case JV_INT: sb_printf(x, b, "%lld", v->u.i); return;
    case JV_FLOAT: fmt_float(v->u.f, tmp, sizeof tmp); sb_puts(x, b, tmp); return;
    case JV_STR: sb_add(x, b, v->u.s.p, v->u.s.n); return;
    default: py_repr(x, b, v); return;
    }
}

static void py_repr_str(jx *x, sbuf *b, const char *s, size_t n)
{
    char q = memchr(s, '\'', n) && !memchr(s, '"', n) ? '"' : '\'';
    sb_putc(x, b, q);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\\' || c == (unsigned char)q) {
            sb_putc(x, b, '\\');
            sb_putc(x, b, (char)c);
        } else if (c == '\n') sb_puts(x, b, "\\n");
        else if (c == '\r') sb_puts(x, b, "\\r");
        else if (c == '\t') sb_puts(x, b, "\\t");
        else if (c < 0x20 || c == 0x7f) sb_printf(x, b, "\\x%02x", c);
        else sb_putc(x, b, (char)c);
    }
    sb_putc(x, b, q);
}

static void py_repr(jx *x, sbuf *b, const jv *v)
{
    switch (v->k) {
    case JV_UNDEF: sb_puts(x, b, "Undefined"); return;
    case JV_STR: py_repr_str(x, b, v->u.s.p, v->u.s.n); return;
    case JV_LIST:
        if (v->gen) {
            sb_puts(x, b, "<generator object>");
            return;
        }
        sb_putc(x, b, v->tuple ? '(' : '[');
        for (size_t i = 0; i < v->u.l.n; i++) {
            if (i)
                sb_puts(x, b, ", ");
            py_repr(x, b, v->u.l.v[i]);
        }
        if (v->tuple && v->u.l.n == 1)
            sb_putc(x, b, ',');
        sb_putc(x, b, v->tuple ? ')' : ']');
        return;
    case JV_DICT:
    case JV_NS:
        sb_puts(x, b, v->k == JV_NS ? "<Namespace {" : "{");
        for (size_t i = 0; i < v->u.d.n; i++) {
            if (i)
                sb_puts(x, b, ", ");
            py_repr(x, b, v->u.d.key[i]);
            sb_puts(x, b, ": ");
            py_repr(x, b, v->u.d.val[i]);
        }
        sb_puts(x, b, v->k == JV_NS ? "}>" : "}");
        return;
    case JV_MACRO: sb_puts(x, b, "<Macro>"); return;
    case JV_FUNC: sb_puts(x, b, "<function>"); return;
    case JV_METHOD: sb_printf(x, b, "<built-in method %s>", v->u.me.name); return;
    default: py_str(x, b, v); return;
    }
}

static jv *to_str(jx *x, const jv *v)
{
    if (v->k == JV_STR)
        return (jv *)v;
    sbuf b = {0};
    py_str(x, &b, v);
    return jv_str_ref(x, b.p ? b.p : "", b.n);
}

/* ---- lexer ----------------------------------------------------------------------------- */

typedef enum { TK_TEXT, TK_VBEGIN, TK_VEND, TK_BBEGIN, TK_BEND, TK_NAME, TK_STR, TK_INT,
               TK_FLOAT, TK_OP, TK_EOF } tkind;

typedef struct token {
    tkind t;
    int line;
    const char *s; /* text, name, decoded string, operator */
    size_t n;
    long long i;
    double f;
} token;

typedef struct lexer {
    jx *x;
    const char *src;
    size_t n, pos;
    int line;
    token *toks;
    size_t ntok, cap;
} lexer;


static token *lx_push(lexer *L, tkind t, int line, const char *s, size_t n)
{
    if (L->ntok == L->cap) {
        size_t cap = L->cap ? L->cap * 2 : 256;
        token *nt = ar_alloc(L->x, cap * sizeof *nt);
        if (L->ntok)
            memcpy(nt, L->toks, L->ntok * sizeof *nt);
        L->toks = nt;
        L->cap = cap;
    }
    token *tk = &L->toks[L->ntok++];
    memset(tk, 0, sizeof *tk);
    tk->t = t;
    tk->line = line;
    tk->s = s;
    tk->n = n;
    return tk;
}

static int is_ascii_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

static void u8_put(jx *x, sbuf *b, uint32_t c)
{
    char t[4];
    size_t n;
    if (c < 0x80) { t[0] = (char)c; n = 1; }
    else if (c < 0x800) { t[0] = (char)(0xC0 | (c >> 6)); t[1] = (char)(0x80 | (c & 0x3F)); n = 2; }
    else if (c < 0x10000) {
        t[0] = (char)(0xE0 | (c >> 12)); t[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        t[2] = (char)(0x80 | (c & 0x3F)); n = 3;
    } else {
        t[0] = (char)(0xF0 | (c >> 18)); t[1] = (char)(0x80 | ((c >> 12) & 0x3F));
        t[2] = (char)(0x80 | ((c >> 6) & 0x3F)); t[3] = (char)(0x80 | (c & 0x3F)); n = 4;
    }
    sb_add(x, b, t, n);
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Lex a string literal starting at the quote s[*pp]; Python escape rules. */
static void lx_string(lexer *L, size_t *pp, int *line)
{
    const char *s = L->src;
    size_t p = *pp;
    char q = s[p++];
    int start_line = *line;
    sbuf b = {0};
    sb_reserve(L->x, &b, 0);
    for (;;) {
        if (p >= L->n)
            jx_fail(L->x, COH_EFORMAT, "line %d: unterminated string literal", start_line);
        char c = s[p];
        if (c == q) {
            p++;
            break;
        }
        if (c == '\n')
            (*line)++;
        if (c != '\\' || p + 1 >= L->n) {
            sb_putc(L->x, &b, c);
            p++;
            continue;
        }
        char e = s[p + 1];
        p += 2;
        switch (e) {
        case 'n': sb_putc(L->x, &b, '\n'); break;
        case 't': sb_putc(L->x, &b, '\t'); break;
        case 'r': sb_putc(L->x, &b, '\r'); break;
        case 'b': sb_putc(L->x, &b, '\b'); break;
        case 'f': sb_putc(L->x, &b, '\f'); break;
        case 'v': sb_putc(L->x, &b, '\v'); break;
        case 'a': sb_putc(L->x, &b, '\a'); break;
        case '\\': sb_putc(L->x, &b, '\\'); break;
        case '\'': sb_putc(L->x, &b, '\''); break;
        case '"': sb_putc(L->x, &b, '"'); break;
        case '\n': (*line)++; break;
        case 'x': case 'u': case 'U': {
            int nd = e == 'x' ? 2 : e == 'u' ? 4 : 8;
            uint32_t cp = 0;
            for (int i = 0; i < nd; i++) {
                int h = p + (size_t)i < L->n ? hexval(s[p + (size_t)i]) : -1;
                if (h < 0)
                    jx_fail(L->x, COH_EFORMAT, "line %d: bad \\%c escape in a string literal", *line, e);
                cp = cp * 16 + (uint32_t)h;
            }
            p += (size_t)nd;
            u8_put(L->x, &b, cp);
            break;
        }
        default:
            if (e >= '0' && e <= '7') {
                uint32_t cp = (uint32_t)(e - '0');
                for (int i = 0; i < 2 && p < L->n && s[p] >= '0' && s[p] <= '7'; i++)
                    cp = cp * 8 + (uint32_t)(s[p++] - '0');
                u8_put(L->x, &b, cp);
            } else {
                sb_putc(L->x, &b, '\\');
                sb_putc(L->x, &b, e);
            }
        }
    }
    lx_push(L, TK_STR, start_line, b.p, b.n);
    *pp = p;
}

static const char *const OPS2[] = {"//", "**", "==", "!=", "<=", ">=", NULL};

/* Tokens of one {{ }} or {% %} tag, from p (after the opening delimiter); returns the
 * position after the closing delimiter and sets *minus / *plus for its modifier. */
static size_t lx_tag(lexer *L, size_t p, int *line, char kind, int tag_line, int *minus, int *plus)
{
    const char *s = L->src;
    size_t n = L->n;
    int depth = 0;
    *minus = *plus = 0;
    for (;;) {
        while (p < n && is_ascii_ws(s[p])) {
            if (s[p] == '\n')
                (*line)++;
            p++;
        }
        if (p >= n)
            jx_fail(L->x, COH_EFORMAT, "line %d: unclosed '%s' tag (no '%s' before the end of the template)",
                    tag_line, kind == '%' ? "{%" : "{{", kind == '%' ? "%}" : "}}");
        if (depth == 0) {
            const char *end = kind == '%' ? "%}" : "}}";
            if ((s[p] == '-' || s[p] == '+') && p + 2 < n + 0 && p + 2 <= n - 0 &&
                strncmp(s + p + 1, end, 2) == 0) {
                *minus = s[p] == '-';
                *plus = s[p] == '+';
                lx_push(L, kind == '%' ? TK_BEND : TK_VEND, *line, NULL, 0);
                return p + 3;
            }
            if (p + 1 < n && strncmp(s + p, end, 2) == 0) {
                lx_push(L, kind == '%' ? TK_BEND : TK_VEND, *line, NULL, 0);
                return p + 2;
            }
        }
        char c = s[p];
        if (isalpha((unsigned char)c) || c == '_') {
            size_t q = p;
            while (q < n && (isalnum((unsigned char)s[q]) || s[q] == '_'))
                q++;
            lx_push(L, TK_NAME, *line, ar_strndup(L->x, s + p, q - p), q - p);
            p = q;
        } else if (isdigit((unsigned char)c)) {
            size_t q = p;
            int isf = 0;
            while (q < n && (isdigit((unsigned char)s[q]) || s[q] == '_'))
                q++;
            if (q + 1 < n && s[q] == '.' && isdigit((unsigned char)s[q + 1])) {
                isf = 1;
                q++;
                while (q < n && (isdigit((unsigned char)s[q]) || s[q] == '_'))
                    q++;
            }
            if (q < n && (s[q] == 'e' || s[q] == 'E')) {
                size_t r = q + 1;
                if (r < n && (s[r] == '+' || s[r] == '-'))
                    r++;
                if (r < n && isdigit((unsigned char)s[r])) {
                    isf = 1;
                    q = r;
                    while (q < n && isdigit((unsigned char)s[q]))
                        q++;
                }
            }
            char num[64];
            size_t k = 0;
            for (size_t i = p; i < q && k < sizeof num - 1; i++)
                if (s[i] != '_')
                    num[k++] = s[i];
            num[k] = 0;
            token *t = lx_push(L, isf ? TK_FLOAT : TK_INT, *line, NULL, 0);
            if (isf)
                t->f = strtod(num, NULL);
            else
                t->i = strtoll(num, NULL, 10);
            p = q;
        } else if (c == '\'' || c == '"') {
            lx_string(L, &p, line);
        } else {
            const char *op = NULL;
            for (int i = 0; OPS2[i]; i++)
                if (p + 1 < n && strncmp(s + p, OPS2[i], 2) == 0)
                    op = OPS2[i];
            if (op) {
                lx_push(L, TK_OP, *line, op, 2);
                p += 2;
                continue;
            }
            static const char singles[] = "+-*/%~<>=()[]{},.:|";
            const char *f = strchr(singles, c);
            if (!f || !c)
                jx_fail(L->x, COH_EFORMAT, "line %d: unexpected character '%c' in a tag", *line, c);
            if (c == '(' || c == '[' || c == '{')
                depth++;
            else if ((c == ')' || c == ']' || c == '}') && depth > 0)
                depth--;
            lx_push(L, TK_OP, *line, ar_strndup(L->x, &c, 1), 1);
            p++;
        }
    }
}

/* Split the (newline-normalised) source into tokens, applying Jinja's whitespace control
 * with trim_blocks and lstrip_blocks. */
static void lex(lexer *L)
{
    const char *s = L->src;
    size_t n = L->n, pos = 0;
    int line = 1, line_starting = 1;
    while (pos < n) {
        size_t q = pos;
        char kind = 0;
        for (; q + 1 < n; q++)
            if (s[q] == '{' && (s[q + 1] == '{' || s[q + 1] == '%' || s[q + 1] == '#')) {
                kind = s[q + 1];
                break;
            }
        if (!kind)
            q = n;
        size_t tend = q;
        char mod = 0;
        if (kind && q + 2 < n && (s[q + 2] == '-' || s[q + 2] == '+'))
            mod = s[q + 2];
        if (mod == '-') {
            while (tend > pos && is_ascii_ws(s[tend - 1]))
                tend--;
        } else if (kind && mod != '+' && kind != '{') {
            size_t lp = tend;
            while (lp > pos && s[lp - 1] != '\n')
                lp--;
            if (lp > pos || line_starting) {
                size_t k = lp;
                while (k < tend && (s[k] == ' ' || s[k] == '\t'))
                    k++;
                if (k == tend)
                    tend = lp;
            }
        }
        if (tend > pos)
            lx_push(L, TK_TEXT, line, s + pos, tend - pos);
        for (size_t k = pos; k < q; k++)
            if (s[k] == '\n')
                line++;
        if (!kind)
            break;
        int tag_line = line;
        size_t p = q + 2 + (mod ? 1 : 0), after;
        int minus, plus;
        if (kind == '#') {
            const char *e = NULL;
            for (size_t k = p; k + 1 < n; k++)
                if (s[k] == '#' && s[k + 1] == '}') {
                    e = s + k;
                    break;
                }
            if (!e)
                jx_fail(L->x, COH_EFORMAT, "line %d: unclosed comment '{#' (no '#}' before the end of the template)", tag_line);
            size_t ei = (size_t)(e - s);
            minus = ei > p && s[ei - 1] == '-';
            plus = ei > p && s[ei - 1] == '+';
            for (size_t k = p; k < ei; k++)
                if (s[k] == '\n')
                    line++;
            after = ei + 2;
        } else {
            lx_push(L, kind == '%' ? TK_BBEGIN : TK_VBEGIN, tag_line, NULL, 0);
            after = lx_tag(L, p, &line, kind, tag_line, &minus, &plus);
        }
        if (minus) {
            while (after < n && is_ascii_ws(s[after])) {
                if (s[after] == '\n')
                    line++;
                after++;
            }
        } else if (!plus && kind != '{' && after < n && s[after] == '\n') {
            after++;
            line++;
        }
        line_starting = after > 0 && s[after - 1] == '\n';
        pos = after;
    }
    lx_push(L, TK_EOF, line, NULL, 0);
}

/* ---- AST ------------------------------------------------------------------------------- */

typedef enum {
    E_LIT, E_NAME, E_LIST, E_TUPLE, E_DICT, E_ATTR, E_ITEM, E_SLICE, E_CALL, E_FILTER, E_TEST,
    E_NOT, E_NEG, E_POS, E_BIN, E_AND, E_OR, E_COND, E_INPUT,
    S_TEXT, S_OUT, S_IF, S_FOR, S_SET, S_SETBLOCK, S_MACRO, S_FILTERBLK, S_BREAK, S_CONTINUE
} nkind;

typedef struct nvec {
    node **v;
    size_t n, cap;
} nvec;

struct node {
    nkind k;
    int line;
    int op;           /* E_BIN: operator id; E_TEST: negated */
    int fid;          /* E_FILTER / E_TEST: index in the table */
    const char *name; /* E_NAME, E_ATTR, filter/test name, set/macro target */
    const char *attr; /* S_SET on a namespace attribute */
    jv *lit;          /* E_LIT, S_TEXT */
    node *a, *b, *c, *d;
    nvec args;        /* items, positional args, keys, body */
    nvec kw;          /* keyword values, dict values, else body, macro defaults */
    const char **names; /* keyword names, for/set targets, macro params */
    size_t nnames;
};

enum { OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_FLOORDIV, OP_MOD, OP_POW, OP_CONCAT, OP_EQ, OP_NE,
       OP_LT, OP_LE, OP_GT, OP_GE, OP_IN, OP_NOTIN };

struct jinja_tpl {
    ablock *arena;
    nvec body;
};

/* filter and test tables (defined with the renderer) */
typedef struct rctx rctx;
typedef jv *(*filter_fn)(rctx *c, const node *n, jv *v, jv **args, size_t na, const char **kn,
                         jv **kv, size_t nk);
typedef int (*test_fn)(rctx *c, const node *n, jv *v, jv **args, size_t na);
typedef struct { const char *name; filter_fn fn; } filter_def;
typedef struct { const char *name; test_fn fn; } test_def;
static int find_filter(const char *name);
static int find_test(const char *name);

/* ---- parser ---------------------------------------------------------------------------- */

typedef struct parser {
    jx *x;
    token *t;
    size_t p, n;
    int loop_depth;
} parser;

static void nv_push(jx *x, nvec *v, node *item)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 4;
        node **nv = ar_alloc(x, cap * sizeof *nv);
        if (v->n)
            memcpy(nv, v->v, v->n * sizeof *nv);
        v->v = nv;
        v->cap = cap;
    }
    v->v[v->n++] = item;
}

static void names_push(jx *x, node *nd, const char *name)
{
    const char **nn = ar_alloc(x, (nd->nnames + 1) * sizeof *nn);
    if (nd->nnames)
        memcpy(nn, nd->names, nd->nnames * sizeof *nn);
    nn[nd->nnames++] = name;
    nd->names = nn;
}

static node *mk(parser *P, nkind k, int line)
{
    node *nd = ar_alloc(P->x, sizeof *nd);
    memset(nd, 0, sizeof *nd);
    nd->k = k;
    nd->line = line;
    return nd;
}

static token *cur(parser *P) { return &P->t[P->p]; }

static const char *tok_desc(parser *P, const token *t)
{
    switch (t->t) {
    case TK_TEXT: return "template text";
    case TK_VBEGIN: return "'{{'";
    case TK_VEND: return "'}}'";
    case TK_BBEGIN: return "'{%'";
    case TK_BEND: return "'%}'";
    case TK_EOF: return "end of template";
    case TK_INT: return "a number";
    case TK_FLOAT: return "a number";
    case TK_STR: return "a string";
    default: {
        size_t l = t->n + 3;
        char *s = ar_alloc(P->x, l);
        snprintf(s, l, "'%s'", t->s);
        return s;
    }
    }
}

static int is_op(parser *P, const char *op)
{
    token *t = cur(P);
    return t->t == TK_OP && strcmp(t->s, op) == 0;
}

static int is_name(parser *P, const char *name)
{
    token *t = cur(P);
    return t->t == TK_NAME && strcmp(t->s, name) == 0;
}

static void expect_op(parser *P, const char *op, const char *what)
{
    if (!is_op(P, op))
        jx_fail(P->x, COH_EFORMAT, "line %d: expected '%s' %s, got %s", cur(P)->line, op, what,
                tok_desc(P, cur(P)));
    P->p++;
}

static const char *expect_name(parser *P, const char *what)
{
    token *t = cur(P);
    if (t->t != TK_NAME)
        jx_fail(P->x, COH_EFORMAT, "line %d: expected %s, got %s", t->line, what, tok_desc(P, t));
    P->p++;
    return t->s;
}

static void expect_bend(parser *P, const char *stmt)
{
    token *t = cur(P);
    if (t->t != TK_BEND)
        jx_fail(P->x, COH_EFORMAT, "line %d: expected '%%}' to end '{%% %s %%}', got %s", t->line,
                stmt, tok_desc(P, t));
    P->p++;
}

static node *p_expr(parser *P);
static node *p_or(parser *P);
static node *p_unary(parser *P, int with_filter);
static node *p_primary(parser *P);
static node *p_postfix(parser *P, node *e);

static void p_call_args(parser *P, node *nd)
{
    expect_op(P, "(", "to start the arguments");
    while (!is_op(P, ")")) {
        if (cur(P)->t == TK_NAME && P->t[P->p + 1].t == TK_OP && strcmp(P->t[P->p + 1].s, "=") == 0) {
            names_push(P->x, nd, cur(P)->s);
            P->p += 2;
            nv_push(P->x, &nd->kw, p_expr(P));
        } else {
            if (nd->nnames)
                jx_fail(P->x, COH_EFORMAT, "line %d: positional argument after a keyword argument",
                        cur(P)->line);
            nv_push(P->x, &nd->args, p_expr(P));
        }
        if (!is_op(P, ","))
            break;
        P->p++;
    }
    expect_op(P, ")", "to end the arguments");
}

/* one filter application: NAME [ (args) ] applied to e (NULL for a filter block's input) */
static node *p_filter_one(parser *P, node *e)
{
    int line = cur(P)->line;
    const char *name = expect_name(P, "a filter name after '|'");
    node *f = mk(P, E_FILTER, line);
    f->name = name;
    f->fid = find_filter(name);
    if (f->fid < 0)
        jx_fail(P->x, COH_EFORMAT, "line %d: unknown filter '%s'", line, name);
    f->a = e;
    if (is_op(P, "("))
        p_call_args(P, f);
    return f;
}

static node *p_filters(parser *P, node *e)
{
    for (;;) {
        if (is_op(P, "|")) {
            P->p++;
            e = p_filter_one(P, e);
        } else if (is_name(P, "is")) {
            int line = cur(P)->line;
            P->p++;
            node *t = mk(P, E_TEST, line);
            if (is_name(P, "not")) {
                t->op = 1;
                P->p++;
            }
            const char *name = expect_name(P, "a test name after 'is'");
            t->name = name;
            t->fid = find_test(name);
            if (t->fid < 0)
                jx_fail(P->x, COH_EFORMAT, "line %d: unknown test '%s'", line, name);
            t->a = e;
            token *c = cur(P);
            if (is_op(P, "(")) {
                p_call_args(P, t);
            } else if ((c->t == TK_NAME || c->t == TK_STR || c->t == TK_INT || c->t == TK_FLOAT ||
                        is_op(P, "[") || is_op(P, "{")) &&
                       !is_name(P, "else") && !is_name(P, "or") && !is_name(P, "and") &&
                       !is_name(P, "if") && !is_name(P, "in") && !is_name(P, "is")) {
                nv_push(P->x, &t->args, p_postfix(P, p_primary(P)));
            }
            e = t;
        } else if (is_op(P, "(")) {
            node *call = mk(P, E_CALL, cur(P)->line);
            call->a = e;
            p_call_args(P, call);
            e = call;
        } else {
            return e;
        }
    }
}

static node *p_postfix(parser *P, node *e)
{
    for (;;) {
        int line = cur(P)->line;
        if (is_op(P, ".")) {
            P->p++;
            token *t = cur(P);
            node *a = mk(P, E_ATTR, line);
            a->a = e;
            if (t->t == TK_NAME) {
                a->name = t->s;
            } else if (t->t == TK_INT) {
                a->k = E_ITEM;
                a->b = mk(P, E_LIT, line);
                a->b->lit = jv_int(P->x, t->i);
            } else {
                jx_fail(P->x, COH_EFORMAT, "line %d: expected an attribute name after '.', got %s",
                        line, tok_desc(P, t));
            }
            P->p++;
            e = a;
        } else if (is_op(P, "[")) {
            P->p++;
            node *idx[3] = {NULL, NULL, NULL};
            int colons = 0;
            for (;;) {
                if (is_op(P, ":")) {
                    if (++colons > 2)
                        jx_fail(P->x, COH_EFORMAT, "line %d: too many ':' in a slice", line);
                    P->p++;
                    continue;
                }
                if (is_op(P, "]"))
                    break;
                if (idx[colons])
                    jx_fail(P->x, COH_EFORMAT, "line %d: expected ']' or ':' in a subscript, got %s",
                            line, tok_desc(P, cur(P)));
                idx[colons] = p_expr(P);
                if (!colons && is_op(P, ",")) { /* a[x, y]: a tuple key */
                    node *tup = mk(P, E_TUPLE, line);
                    nv_push(P->x, &tup->args, idx[0]);
                    while (is_op(P, ",")) {
                        P->p++;
                        if (is_op(P, "]"))
                            break;
                        nv_push(P->x, &tup->args, p_expr(P));
                    }
                    idx[0] = tup;
                }
            }
            expect_op(P, "]", "to end the subscript");
            node *s = mk(P, colons ? E_SLICE : E_ITEM, line);
            s->a = e;
            s->b = idx[0];
            s->c = idx[1];
            s->d = idx[2];
            if (!colons && !idx[0])
                jx_fail(P->x, COH_EFORMAT, "line %d: empty subscript '[]'", line);
            e = s;
        } else if (is_op(P, "(")) {
            node *call = mk(P, E_CALL, line);
            call->a = e;
            p_call_args(P, call);
            e = call;
        } else {
            return e;
        }
    }
}

static node *p_primary(parser *P)
{
    token *t = cur(P);
    int line = t->line;
    node *e;
    switch (t->t) {
    case TK_NAME:
        P->p++;
        if (!strcmp(t->s, "true") || !strcmp(t->s, "True") || !strcmp(t->s, "false") ||
            !strcmp(t->s, "False")) {
            e = mk(P, E_LIT, line);
            e->lit = jv_bool(t->s[0] == 't' || t->s[0] == 'T');
        } else if (!strcmp(t->s, "none") || !strcmp(t->s, "None")) {
            e = mk(P, E_LIT, line);
            e->lit = &V_NONE;
        } else {
            e = mk(P, E_NAME, line);
            e->name = t->s;
        }
        return e;
    case TK_STR: {
        sbuf b = {0};
        sb_add(P->x, &b, t->s, t->n);
        P->p++;
        while (cur(P)->t == TK_STR) { /* adjacent literals concatenate */
            sb_add(P->x, &b, cur(P)->s, cur(P)->n);
            P->p++;
        }
        e = mk(P, E_LIT, line);
        e->lit = jv_str_ref(P->x, b.p, b.n);
        return e;
    }
    case TK_INT:
        P->p++;
        e = mk(P, E_LIT, line);
        e->lit = jv_int(P->x, t->i);
        return e;
    case TK_FLOAT:
        P->p++;
        e = mk(P, E_LIT, line);
        e->lit = jv_float(P->x, t->f);
        return e;
    case TK_OP:
        if (is_op(P, "(")) {
            P->p++;
            if (is_op(P, ")")) {
                P->p++;
                return mk(P, E_TUPLE, line);
            }
            node *first = p_expr(P);
            if (!is_op(P, ",")) {
                expect_op(P, ")", "to close '('");
                return first;
            }
            e = mk(P, E_TUPLE, line);
            nv_push(P->x, &e->args, first);
            while (is_op(P, ",")) {
                P->p++;
                if (is_op(P, ")"))
                    break;
                nv_push(P->x, &e->args, p_expr(P));
            }
            expect_op(P, ")", "to close the tuple");
            return e;
        }
        if (is_op(P, "[")) {
            P->p++;
            e = mk(P, E_LIST, line);
            while (!is_op(P, "]")) {
                nv_push(P->x, &e->args, p_expr(P));
                if (!is_op(P, ","))
                    break;
                P->p++;
            }
            expect_op(P, "]", "to close the list");
            return e;
        }
        if (is_op(P, "{")) {
            P->p++;
            e = mk(P, E_DICT, line);
            while (!is_op(P, "}")) {
                nv_push(P->x, &e->args, p_expr(P));
                expect_op(P, ":", "after a dict key");
                nv_push(P->x, &e->kw, p_expr(P));
                if (!is_op(P, ","))
                    break;
                P->p++;
            }
            expect_op(P, "}", "to close the dict");
            return e;
        }
        break;
    default: break;
    }
    jx_fail(P->x, COH_EFORMAT, "line %d: expected an expression, got %s", line, tok_desc(P, t));
}

static node *p_unary(parser *P, int with_filter)
{
    int line = cur(P)->line;
    node *e;
    if (is_op(P, "-") || is_op(P, "+")) {
        int neg = is_op(P, "-");
        P->p++;
        e = mk(P, neg ? E_NEG : E_POS, line);
        e->a = p_unary(P, 0);
    } else {
        e = p_postfix(P, p_primary(P));
    }
    return with_filter ? p_filters(P, e) : e;
}

static node *bin(parser *P, int op, node *a, node *b, int line)
{
    node *e = mk(P, E_BIN, line);
    e->op = op;
    e->a = a;
    e->b = b;
    return e;
}

static node *p_pow(parser *P)
{
    node *e = p_unary(P, 1);
    while (is_op(P, "**")) {
        int line = cur(P)->line;
        P->p++;
        e = bin(P, OP_POW, e, p_unary(P, 1), line);
    }
    return e;
}

static node *p_math2(parser *P)
{
    node *e = p_pow(P);
    for (;;) {
        int line = cur(P)->line, op;
        if (is_op(P, "*")) op = OP_MUL;
        else if (is_op(P, "/")) op = OP_DIV;
        else if (is_op(P, "//")) op = OP_FLOORDIV;
        else if (is_op(P, "%")) op = OP_MOD;
        else return e;
        P->p++;
        e = bin(P, op, e, p_pow(P), line);
    }
}

static node *p_concat(parser *P)
{
    node *e = p_math2(P);
    while (is_op(P, "~")) {
        int line = cur(P)->line;
        P->p++;
        e = bin(P, OP_CONCAT, e, p_math2(P), line);
    }
    return e;
}

static node *p_math1(parser *P)
{
    node *e = p_concat(P);
    for (;;) {
        int line = cur(P)->line, op;
        if (is_op(P, "+")) op = OP_ADD;
        else if (is_op(P, "-")) op = OP_SUB;
        else return e;
        P->p++;
        e = bin(P, op, e, p_concat(P), line);
    }
}

static node *p_compare(parser *P)
{
    node *e = p_math1(P), *prev = e, *res = NULL;
    for (;;) {
        int line = cur(P)->line, op;
        if (is_op(P, "==")) op = OP_EQ;
        else if (is_op(P, "!=")) op = OP_NE;
        else if (is_op(P, "<")) op = OP_LT;
        else if (is_op(P, "<=")) op = OP_LE;
        else if (is_op(P, ">")) op = OP_GT;
        else if (is_op(P, ">=")) op = OP_GE;
        else if (is_name(P, "in")) op = OP_IN;
        else if (is_name(P, "not") && P->t[P->p + 1].t == TK_NAME && !strcmp(P->t[P->p + 1].s, "in")) {
            op = OP_NOTIN;
            P->p++;
        } else
            return res ? res : e;
        P->p++;
        node *rhs = p_math1(P);
        node *cmp = bin(P, op, prev, rhs, line);
        if (res) { /* a < b < c  ==  a < b and b < c */
            node *and = mk(P, E_AND, line);
            and->a = res;
            and->b = cmp;
            res = and;
        } else {
            res = cmp;
        }
        prev = rhs;
    }
}

static node *p_not(parser *P)
{
    if (is_name(P, "not")) {
        node *e = mk(P, E_NOT, cur(P)->line);
        P->p++;
        e->a = p_not(P);
        return e;
    }
    return p_compare(P);
}

static node *p_and(parser *P)
{
    node *e = p_not(P);
    while (is_name(P, "and")) {
        node *a = mk(P, E_AND, cur(P)->line);
        P->p++;
        a->a = e;
        a->b = p_not(P);
        e = a;
    }
    return e;
}

static node *p_or(parser *P)
{
    node *e = p_and(P);
    while (is_name(P, "or")) {
        node *o = mk(P, E_OR, cur(P)->line);
        P->p++;
        o->a = e;
        o->b = p_and(P);
        e = o;
    }
    return e;
}

static node *p_expr(parser *P)
{
    node *e = p_or(P);
    while (is_name(P, "if")) {
        node *c = mk(P, E_COND, cur(P)->line);
        P->p++;
        c->a = p_or(P);
        c->b = e;
        if (is_name(P, "else")) {
            P->p++;
            c->c = p_expr(P);
        }
        e = c;
    }
    return e;
}

/* an expression, or a bare tuple `a, b` (set values, for iterables) */
static node *p_tuple(parser *P, int with_cond)
{
    int line = cur(P)->line;
    node *e = with_cond ? p_expr(P) : p_or(P);
    if (!is_op(P, ","))
        return e;
    node *t = mk(P, E_TUPLE, line);
    nv_push(P->x, &t->args, e);
    while (is_op(P, ",")) {
        P->p++;
        if (cur(P)->t == TK_BEND || is_name(P, "if"))
            break;
        nv_push(P->x, &t->args, with_cond ? p_expr(P) : p_or(P));
    }
    return t;
}

/* body until one of the end names (NULL-terminated) is the next statement; returns the index
 * of the end name found (the caller consumes it), or -1 at end of input when ends is NULL */
static int p_body(parser *P, nvec *body, const char *const *ends, const char *opener, int open_line);

static void p_targets(parser *P, node *nd, const char *what)
{
    int paren = is_op(P, "(");
    if (paren)
        P->p++;
    names_push(P->x, nd, expect_name(P, what));
    while (is_op(P, ",")) {
        P->p++;
        names_push(P->x, nd, expect_name(P, what));
    }
    if (paren)
        expect_op(P, ")", "to close the target list");
}

static node *p_stmt(parser *P)
{
    token *bt = cur(P);
    int line = bt->line;
    if (bt->t != TK_NAME)
        jx_fail(P->x, COH_EFORMAT, "line %d: expected a statement name after '{%%', got %s", line,
                tok_desc(P, bt));
    const char *kw = bt->s;
    P->p++;
    if (!strcmp(kw, "if")) {
        node *nd = mk(P, S_IF, line);
        nd->a = p_expr(P);
        expect_bend(P, "if");
        node *tail = nd;
        for (;;) {
            static const char *const ends[] = {"elif", "else", "endif", NULL};
            int w = p_body(P, &tail->args, ends, "if", line);
            if (w == 0) {
                node *el = mk(P, S_IF, cur(P)->line);
                el->a = p_expr(P);
                expect_bend(P, "elif");
                nv_push(P->x, &tail->kw, el);
                tail = el;
            } else if (w == 1) {
                expect_bend(P, "else");
                static const char *const ends2[] = {"endif", NULL};
                p_body(P, &tail->kw, ends2, "if", line);
                expect_bend(P, "endif");
                return nd;
            } else {
                expect_bend(P, "endif");
                return nd;
            }
        }
    }
    if (!strcmp(kw, "for")) {
        node *nd = mk(P, S_FOR, line);
        p_targets(P, nd, "a loop variable name after 'for'");
        if (!is_name(P, "in"))
            jx_fail(P->x, COH_EFORMAT, "line %d: expected 'in' in '{%% for %%}', got %s", line,
                    tok_desc(P, cur(P)));
        P->p++;
        nd->a = p_tuple(P, 0);
        if (is_name(P, "if")) {
            P->p++;
            nd->b = p_expr(P);
        }
        if (is_name(P, "recursive"))
            jx_fail(P->x, COH_EFORMAT, "line %d: recursive for loops are not supported", line);
        expect_bend(P, "for");
        static const char *const ends[] = {"else", "endfor", NULL};
        P->loop_depth++;
        int w = p_body(P, &nd->args, ends, "for", line);
        P->loop_depth--;
        if (w == 0) {
            expect_bend(P, "else");
            static const char *const ends2[] = {"endfor", NULL};
            p_body(P, &nd->kw, ends2, "for", line);
        }
        expect_bend(P, "endfor");
        return nd;
    }
    if (!strcmp(kw, "set")) {
        node *nd = mk(P, S_SET, line);
        const char *first = expect_name(P, "a variable name after 'set'");
        if (is_op(P, ".")) {
            P->p++;
            nd->name = first;
            nd->attr = expect_name(P, "an attribute name after '.'");
        } else {
            names_push(P->x, nd, first);
            while (is_op(P, ",")) {
                P->p++;
                names_push(P->x, nd, expect_name(P, "a variable name in 'set'"));
            }
        }
        if (is_op(P, "=")) {
            P->p++;
            nd->a = p_tuple(P, 1);
            expect_bend(P, "set");
            return nd;
        }
        if (nd->attr || nd->nnames != 1)
            jx_fail(P->x, COH_EFORMAT, "line %d: expected '=' in '{%% set %%}', got %s", line,
                    tok_desc(P, cur(P)));
        nd->k = S_SETBLOCK;
        nd->name = first;
        while (is_op(P, "|")) {
            P->p++;
            nd->c = p_filter_one(P, nd->c);
        }
        expect_bend(P, "set");
        static const char *const ends[] = {"endset", NULL};
        p_body(P, &nd->args, ends, "set", line);
        expect_bend(P, "endset");
        return nd;
    }
    if (!strcmp(kw, "macro")) {
        node *nd = mk(P, S_MACRO, line);
        nd->name = expect_name(P, "a macro name");
        expect_op(P, "(", "after the macro name");
        while (!is_op(P, ")")) {
            names_push(P->x, nd, expect_name(P, "a parameter name"));
            node *def = NULL;
            if (is_op(P, "=")) {
                P->p++;
                def = p_expr(P);
            }
            nv_push(P->x, &nd->kw, def);
            if (!is_op(P, ","))
                break;
            P->p++;
        }
        expect_op(P, ")", "to end the macro parameters");
        expect_bend(P, "macro");
        int saved = P->loop_depth;
        P->loop_depth = 0;
        static const char *const ends[] = {"endmacro", NULL};
        p_body(P, &nd->args, ends, "macro", line);
        P->loop_depth = saved;
        if (cur(P)->t == TK_NAME)
            P->p++; /* {% endmacro name %} */
        expect_bend(P, "endmacro");
        return nd;
    }
    if (!strcmp(kw, "filter")) {
        node *nd = mk(P, S_FILTERBLK, line);
        nd->c = p_filter_one(P, NULL);
        while (is_op(P, "|")) {
            P->p++;
            nd->c = p_filter_one(P, nd->c);
        }
        expect_bend(P, "filter");
        static const char *const ends[] = {"endfilter", NULL};
        p_body(P, &nd->args, ends, "filter", line);
        expect_bend(P, "endfilter");
        return nd;
    }
    if (!strcmp(kw, "break") || !strcmp(kw, "continue")) {
        if (P->loop_depth == 0)
            jx_fail(P->x, COH_EFORMAT, "line %d: '{%% %s %%}' outside a for loop", line, kw);
        node *nd = mk(P, kw[0] == 'b' ? S_BREAK : S_CONTINUE, line);
        expect_bend(P, kw);
        return nd;
    }
    static const char *const ENDERS[] = {"endif", "endfor", "endset", "endmacro", "endfilter",
                                         "elif", "else", NULL};
    for (int i = 0; ENDERS[i]; i++)
        if (!strcmp(kw, ENDERS[i]))
            jx_fail(P->x, COH_EFORMAT, "line %d: unexpected '{%% %s %%}' (no open block it closes)", line, kw);
    jx_fail(P->x, COH_EFORMAT, "line %d: unknown or unsupported statement '{%% %s %%}'", line, kw);
}

static const char *last_of(const char *const *ends)
{
    size_t i = 0;
    while (ends[i + 1])
        i++;
    return ends[i];
}

static int p_body(parser *P, nvec *body, const char *const *ends, const char *opener, int open_line)
{
    for (;;) {
        token *t = cur(P);
        switch (t->t) {
        case TK_EOF:
            if (!ends)
                return -1;
            jx_fail(P->x, COH_EFORMAT, "line %d: unclosed '{%% %s %%}' (opened at line %d): expected '{%% %s %%}' before the end of the template",
                    t->line, opener, open_line, last_of(ends));
        case TK_TEXT: {
            node *nd = mk(P, S_TEXT, t->line);
            nd->lit = jv_str_ref(P->x, t->s, t->n);
            nv_push(P->x, body, nd);
            P->p++;
            break;
        }
        case TK_VBEGIN: {
            P->p++;
            node *nd = mk(P, S_OUT, t->line);
            if (cur(P)->t == TK_VEND)
                jx_fail(P->x, COH_EFORMAT, "line %d: empty expression '{{ }}'", t->line);
            nd->a = p_tuple(P, 1);
            if (cur(P)->t != TK_VEND)
                jx_fail(P->x, COH_EFORMAT, "line %d: expected '}}' to end the expression, got %s",
                        cur(P)->line, tok_desc(P, cur(P)));
            P->p++;
            nv_push(P->x, body, nd);
            break;
        }
        case TK_BBEGIN: {
            token *nt = &P->t[P->p + 1];
            if (ends && nt->t == TK_NAME)
                for (int i = 0; ends[i]; i++)
                    if (!strcmp(nt->s, ends[i])) {
                        P->p += 2;
                        return i;
                    }
            P->p++;
            nv_push(P->x, body, p_stmt(P));
            break;
        }
        default:
            jx_fail(P->x, COH_EFORMAT, "line %d: unexpected %s", t->line, tok_desc(P, t));
        }
    }
}

/* ---- renderer: context, scopes, errors -------------------------------------------------- */

struct scope {
    scope *parent;
    const char **k;
    jv **v;
    size_t n, cap;
};

struct rctx {
    jx x;
    sbuf *out;
    scope *root;
    const struct tm *now;
    long steps, max_steps;
    jv *input; /* the text a filter block or block set filters */
    int depth;
};

enum { ST_OK = 0, ST_BREAK = 1, ST_CONTINUE = 2 };
enum { F_RAISE, F_STRFTIME, F_NAMESPACE, F_RANGE, F_DICT };

static void rfail(rctx *c, const node *n, const char *fmt, ...) __attribute__((format(printf, 3, 4), noreturn));
static void rfail(rctx *c, const node *n, const char *fmt, ...)
{
    char msg[COH_ERR_MSG_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    jx_fail(&c->x, COH_EFORMAT, "line %d: %s", n ? n->line : 0, msg);
}

static const char *ar_printf(rctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static const char *ar_printf(rctx *c, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    return ar_strndup(&c->x, tmp, strlen(tmp));
}

static void fail_undef(rctx *c, const node *n, const jv *v) __attribute__((noreturn));
static void fail_undef(rctx *c, const node *n, const jv *v)
{
    rfail(c, n, "%s", v->u.hint ? v->u.hint : "undefined value");
}

static scope *scope_new(rctx *c, scope *parent)
{
    scope *s = ar_alloc(&c->x, sizeof *s);
    memset(s, 0, sizeof *s);
    s->parent = parent;
    return s;
}

static jv *scope_get(scope *s, const char *name)
{
    for (; s; s = s->parent)
        for (size_t i = 0; i < s->n; i++)
            if (!strcmp(s->k[i], name))
                return s->v[i];
    return NULL;
}

static void scope_set(rctx *c, scope *s, const char *name, jv *v)
{
    for (size_t i = 0; i < s->n; i++)
        if (!strcmp(s->k[i], name)) {
            s->v[i] = v;
            return;
        }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        const char **k = ar_alloc(&c->x, cap * sizeof *k);
        jv **v2 = ar_alloc(&c->x, cap * sizeof *v2);
        if (s->n) {
            memcpy(k, s->k, s->n * sizeof *k);
            memcpy(v2, s->v, s->n * sizeof *v2);
        }
        s->k = k;
        s->v = v2;
        s->cap = cap;
    }
    s->k[s->n] = name;
    s->v[s->n++] = v;
}

static void step(rctx *c, const node *n)
{
    if (++c->steps > c->max_steps)
        rfail(c, n, "the template ran more than %ld loop iterations and macro calls; stopped", c->max_steps);
}

static jv *eval(rctx *c, scope *sc, const node *n);
static int exec_body(rctx *c, scope *sc, const nvec *body);

/* ---- renderer: Python operations --------------------------------------------------------- */

static jv *str_of(rctx *c, const jv *v) { return to_str(&c->x, v); }

/* elements of an iterable, as Python's iter() gives them */
static jv **iter_items(rctx *c, const node *n, jv *v, size_t *count)
{
    switch (v->k) {
    case JV_UNDEF:
        *count = 0;
        return NULL;
    case JV_LIST:
        *count = v->u.l.n;
        return v->u.l.v;
    case JV_DICT:
        *count = v->u.d.n;
        return v->u.d.key;
    case JV_STR: {
        size_t cnt;
        size_t *o = u8_offsets(&c->x, v->u.s.p, v->u.s.n, &cnt);
        jv **items = ar_alloc(&c->x, (cnt + 1) * sizeof *items);
        for (size_t i = 0; i < cnt; i++)
            items[i] = jv_str_ref(&c->x, v->u.s.p + o[i], o[i + 1] - o[i]);
        *count = cnt;
        return items;
    }
    default: rfail(c, n, "'%s' object is not iterable", py_type(v));
    }
}

static jv *list_from(rctx *c, jv **items, size_t n)
{
    jv *l = jv_list(&c->x);
    for (size_t i = 0; i < n; i++)
        list_push(&c->x, l, items[i]);
    return l;
}

static int py_lt(rctx *c, const node *n, const jv *a, const jv *b)
{
    if (a->k == JV_UNDEF)
        fail_undef(c, n, a);
    if (b->k == JV_UNDEF)
        fail_undef(c, n, b);
    if (jv_isnum(a) && jv_isnum(b)) {
        if (a->k != JV_FLOAT && b->k != JV_FLOAT)
            return jv_intval(a) < jv_intval(b);
        return jv_num(a) < jv_num(b);
    }
    if (a->k == JV_STR && b->k == JV_STR) {
        size_t m = a->u.s.n < b->u.s.n ? a->u.s.n : b->u.s.n;
        int r = memcmp(a->u.s.p, b->u.s.p, m);
        return r < 0 || (r == 0 && a->u.s.n < b->u.s.n);
    }
    if (a->k == JV_LIST && b->k == JV_LIST) {
        size_t m = a->u.l.n < b->u.l.n ? a->u.l.n : b->u.l.n;
        for (size_t i = 0; i < m; i++)
            if (!py_eq(a->u.l.v[i], b->u.l.v[i]))
                return py_lt(c, n, a->u.l.v[i], b->u.l.v[i]);
        return a->u.l.n < b->u.l.n;
    }
    rfail(c, n, "'<' not supported between instances of '%s' and '%s'", py_type(a), py_type(b));
}

static int py_contains(rctx *c, const node *n, jv *container, jv *item)
{
    switch (container->k) {
    case JV_STR:
        if (item->k != JV_STR) {
            if (item->k == JV_UNDEF)
                fail_undef(c, n, item);
            rfail(c, n, "'in <string>' requires string as left operand, not %s", py_type(item));
        }
        if (item->u.s.n == 0)
            return 1;
        if (item->u.s.n > container->u.s.n)
            return 0;
        return mem_find(container->u.s.p, container->u.s.n, item->u.s.p, item->u.s.n) != NULL;
    case JV_LIST:
        for (size_t i = 0; i < container->u.l.n; i++)
            if (py_eq(container->u.l.v[i], item))
                return 1;
        return 0;
    case JV_DICT: return dict_find(container, item) != NULL;
    case JV_UNDEF: return 0;
    default: rfail(c, n, "argument of type '%s' is not iterable", py_type(container));
    }
}

static long long floordiv_ll(long long a, long long b)
{
    long long q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0)))
        q--;
    return q;
}

static jv *html_escape(rctx *c, jv *v);

static jv *binop(rctx *c, const node *n, int op, jv *a, jv *b)
{
    jx *x = &c->x;
    switch (op) {
    case OP_EQ: return jv_bool(py_eq(a, b));
    case OP_NE: return jv_bool(!py_eq(a, b));
    case OP_LT: return jv_bool(py_lt(c, n, a, b));
    case OP_GT: return jv_bool(py_lt(c, n, b, a));
    case OP_LE: return jv_bool(!py_lt(c, n, b, a));
    case OP_GE: return jv_bool(!py_lt(c, n, a, b));
    case OP_IN: return jv_bool(py_contains(c, n, b, a));
    case OP_NOTIN: return jv_bool(!py_contains(c, n, b, a));
    case OP_CONCAT: {
        sbuf s = {0};
        py_str(x, &s, a);
        py_str(x, &s, b);
        return jv_str_ref(x, s.p ? s.p : "", s.n);
    }
    default: break;
    }
    if (a->k == JV_UNDEF)
        fail_undef(c, n, a);
    if (b->k == JV_UNDEF)
        fail_undef(c, n, b);
    static const char *const SYM[] = {"+", "-", "*", "/", "//", "%", "**"};
    if (jv_isnum(a) && jv_isnum(b)) {
        int ints = a->k != JV_FLOAT && b->k != JV_FLOAT;
        double fa = jv_num(a), fb = jv_num(b);
        long long ia = ints ? jv_intval(a) : 0, ib = ints ? jv_intval(b) : 0;
        switch (op) {
        case OP_ADD: return ints ? jv_int(x, ia + ib) : jv_float(x, fa + fb);
        case OP_SUB: return ints ? jv_int(x, ia - ib) : jv_float(x, fa - fb);
        case OP_MUL: return ints ? jv_int(x, ia * ib) : jv_float(x, fa * fb);
        case OP_DIV:
            if (fb == 0)
                rfail(c, n, "division by zero");
            return jv_float(x, fa / fb);
        case OP_FLOORDIV:
            if (fb == 0)
                rfail(c, n, "integer division or modulo by zero");
            return ints ? jv_int(x, floordiv_ll(ia, ib)) : jv_float(x, floor(fa / fb));
        case OP_MOD:
            if (fb == 0)
                rfail(c, n, "integer division or modulo by zero");
            if (ints) {
                long long r = ia % ib;
                if (r != 0 && ((r < 0) != (ib < 0)))
                    r += ib;
                return jv_int(x, r);
            } else {
                double r = fmod(fa, fb);
                if (r != 0 && ((r < 0) != (fb < 0)))
                    r += fb;
                return jv_float(x, r);
            }
        case OP_POW:
            if (ints && ib >= 0) {
                long long r = 1;
                for (long long i = 0; i < ib && i < 64; i++)
                    r *= ia;
                return jv_int(x, r);
            }
            return jv_float(x, pow(fa, fb));
        }
    }
    if (op == OP_ADD && a->k == JV_STR && b->k == JV_STR) {
        if (a->markup != b->markup) { /* Markup + str escapes the str (markupsafe) */
            jv *ea = a->markup ? a : html_escape(c, a), *eb = b->markup ? b : html_escape(c, b);
            jv *r = binop(c, n, OP_ADD, ea, eb);
            r->markup = 1;
            return r;
        }
        char *p = ar_alloc(x, a->u.s.n + b->u.s.n + 1);
        memcpy(p, a->u.s.p, a->u.s.n);
        memcpy(p + a->u.s.n, b->u.s.p, b->u.s.n);
        p[a->u.s.n + b->u.s.n] = 0;
        jv *r = jv_str_ref(x, p, a->u.s.n + b->u.s.n);
        r->markup = a->markup;
        return r;
    }
    if (op == OP_ADD && a->k == JV_LIST && b->k == JV_LIST && a->tuple == b->tuple && !a->gen && !b->gen) {
        jv *l = list_from(c, a->u.l.v, a->u.l.n);
        for (size_t i = 0; i < b->u.l.n; i++)
            list_push(x, l, b->u.l.v[i]);
        l->tuple = a->tuple;
        return l;
    }
    if (op == OP_MUL && ((a->k == JV_STR || (a->k == JV_LIST && !a->gen)) ||
                         (b->k == JV_STR || (b->k == JV_LIST && !b->gen)))) {
        jv *seq = (a->k == JV_STR || a->k == JV_LIST) ? a : b, *cnt = seq == a ? b : a;
        if (cnt->k == JV_INT || cnt->k == JV_BOOL) {
            long long k = jv_intval(cnt);
            if (seq->k == JV_STR) {
                sbuf s = {0};
                sb_reserve(x, &s, 0);
                for (long long i = 0; i < k; i++)
                    sb_add(x, &s, seq->u.s.p, seq->u.s.n);
                return jv_str_ref(x, s.p, s.n);
            }
            jv *l = jv_list(x);
            for (long long i = 0; i < k; i++)
                for (size_t j = 0; j < seq->u.l.n; j++)
                    list_push(x, l, seq->u.l.v[j]);
            l->tuple = seq->tuple;
            return l;
        }
    }
    if (op == OP_ADD && a->k == JV_STR)
        rfail(c, n, "can only concatenate str (not \"%s\") to str", py_type(b));
    if (op == OP_ADD && a->k == JV_LIST)
        rfail(c, n, "can only concatenate list (not \"%s\") to list", py_type(b));
    rfail(c, n, "unsupported operand type(s) for %s: '%s' and '%s'", SYM[op], py_type(a), py_type(b));
}

/* ---- renderer: attribute and item access ----------------------------------------------- */

static int is_method(const jv *o, const char *name)
{
    static const char *const STR_M[] = {"strip", "lstrip", "rstrip", "startswith", "endswith",
        "split", "rsplit", "splitlines", "title", "upper", "lower", "capitalize", "replace",
        "find", "rfind", "count", "join", "isdigit", "isalpha", "isalnum", "isspace", "islower",
        "isupper", NULL};
    static const char *const DICT_M[] = {"get", "items", "keys", "values", NULL};
    static const char *const LIST_M[] = {"index", "count", NULL};
    const char *const *m = o->k == JV_STR ? STR_M : o->k == JV_DICT ? DICT_M
                         : o->k == JV_LIST ? LIST_M : NULL;
    for (; m && *m; m++)
        if (!strcmp(*m, name))
            return 1;
    return 0;
}

static jv *method_of(rctx *c, jv *o, const char *name)
{
    jv *m = jv_new(&c->x, JV_METHOD);
    m->u.me.self = o;
    m->u.me.name = name;
    return m;
}

static const char *obj_desc(rctx *c, const jv *o)
{
    if (o->k == JV_NONE)
        return "'None'";
    return ar_printf(c, "'%s object'", py_type(o));
}

static jv *get_attr(rctx *c, const node *n, jv *o, const char *name)
{
    if (o->k == JV_UNDEF)
        fail_undef(c, n, o);
    if (is_method(o, name))
        return method_of(c, o, name);
    if (o->k == JV_DICT || o->k == JV_NS) {
        jv *v = dict_get_s(o, name);
        if (v)
            return v;
    }
    return jv_undef(&c->x, ar_printf(c, "%s has no attribute '%s'", obj_desc(c, o), name));
}

static jv *get_item(rctx *c, const node *n, jv *o, jv *key)
{
    jx *x = &c->x;
    if (o->k == JV_UNDEF)
        fail_undef(c, n, o);
    if (o->k == JV_DICT) {
        jv **v = dict_find(o, key);
        if (v)
            return *v;
    } else if (o->k == JV_NS && key->k == JV_STR) {
        jv *v = dict_get_s(o, key->u.s.p);
        if (v)
            return v;
    } else if (((o->k == JV_LIST && !o->gen) || o->k == JV_STR) && (key->k == JV_INT || key->k == JV_BOOL)) {
        long long i = jv_intval(key);
        if (o->k == JV_LIST) {
            long long len = (long long)o->u.l.n;
            if (i < 0)
                i += len;
            if (i >= 0 && i < len)
                return o->u.l.v[i];
            return jv_undef(x, ar_printf(c, "%s object has no element %lld", py_type(o), jv_intval(key)));
        }
        size_t cnt;
        size_t *off = u8_offsets(x, o->u.s.p, o->u.s.n, &cnt);
        if (i < 0)
            i += (long long)cnt;
        if (i >= 0 && i < (long long)cnt)
            return jv_str_ref(x, o->u.s.p + off[i], off[i + 1] - off[i]);
        return jv_undef(x, ar_printf(c, "str object has no element %lld", jv_intval(key)));
    }
    if (key->k == JV_STR)
        return get_attr(c, n, o, key->u.s.p);
    sbuf kb = {0};
    py_repr(x, &kb, key);
    return jv_undef(x, ar_printf(c, "%s has no element %s", obj_desc(c, o), kb.p));
}

static long long slice_bound(rctx *c, const node *n, jv *v, int *given)
{
    *given = 0;
    if (!v || v->k == JV_NONE)
        return 0;
    if (v->k != JV_INT && v->k != JV_BOOL)
        rfail(c, n, "slice indices must be integers or None, not %s", py_type(v));
    *given = 1;
    return jv_intval(v);
}

static jv *do_slice(rctx *c, const node *n, jv *o, jv *start, jv *stop, jv *stepv)
{
    jx *x = &c->x;
    if (o->k == JV_UNDEF)
        fail_undef(c, n, o);
    if ((o->k != JV_LIST && o->k != JV_STR) || o->gen)
        rfail(c, n, "'%s' object is not subscriptable", py_type(o));
    int gs, ge, gst;
    long long b = slice_bound(c, n, start, &gs), e = slice_bound(c, n, stop, &ge);
    long long st = slice_bound(c, n, stepv, &gst);
    if (!gst)
        st = 1;
    if (st == 0)
        rfail(c, n, "slice step cannot be zero");
    size_t cnt = 0, *off = NULL;
    if (o->k == JV_STR)
        off = u8_offsets(x, o->u.s.p, o->u.s.n, &cnt);
    else
        cnt = o->u.l.n;
    long long len = (long long)cnt;
    if (st > 0) {
        if (!gs) b = 0;
        else { if (b < 0) b += len; if (b < 0) b = 0; if (b > len) b = len; }
        if (!ge) e = len;
        else { if (e < 0) e += len; if (e < 0) e = 0; if (e > len) e = len; }
    } else {
        if (!gs) b = len - 1;
        else { if (b < 0) b += len; if (b < 0) b = -1; if (b >= len) b = len - 1; }
        if (!ge) e = -1;
        else { if (e < 0) e += len; if (e < 0) e = -1; if (e >= len) e = len - 1; }
    }
    if (o->k == JV_STR) {
        sbuf s = {0};
        sb_reserve(x, &s, 0);
        for (long long i = b; st > 0 ? i < e : i > e; i += st)
            sb_add(x, &s, o->u.s.p + off[i], off[i + 1] - off[i]);
        return jv_str_ref(x, s.p, s.n);
    }
    jv *l = jv_list(x);
    l->tuple = o->tuple;
    for (long long i = b; st > 0 ? i < e : i > e; i += st)
        list_push(x, l, o->u.l.v[i]);
    return l;
}

/* value of an attribute path "a.b.0" (map/selectattr/sort/join/unique attribute=) */
static jv *attr_path(rctx *c, const node *n, jv *v, jv *path)
{
    if (path->k == JV_INT)
        return get_item(c, n, v, path);
    jv *p = str_of(c, path);
    const char *s = p->u.s.p, *end = s + p->u.s.n;
    while (s <= end) {
        const char *dot = memchr(s, '.', (size_t)(end - s));
        if (!dot)
            dot = end;
        jv *key;
        int digits = dot > s;
        for (const char *q = s; q < dot; q++)
            digits &= isdigit((unsigned char)*q) != 0;
        if (digits)
            key = jv_int(&c->x, strtoll(s, NULL, 10));
        else
            key = jv_strn(&c->x, s, (size_t)(dot - s));
        v = get_item(c, n, v, key);
        s = dot + 1;
    }
    return v;
}

/* ---- renderer: argument binding ------------------------------------------------------- */

static void bind_args(rctx *c, const node *n, const char *what, const char *const *params,
                      jv **args, size_t na, const char **kn, jv **kv, size_t nk, jv **out)
{
    size_t np = 0;
    while (params[np])
        np++;
    for (size_t i = 0; i < np; i++)
        out[i] = NULL;
    if (na > np)
        rfail(c, n, "%s takes at most %zu argument(s) (%zu given)", what, np, na);
    for (size_t i = 0; i < na; i++)
        out[i] = args[i];
    for (size_t j = 0; j < nk; j++) {
        size_t i = 0;
        while (i < np && strcmp(params[i], kn[j]))
            i++;
        if (i == np)
            rfail(c, n, "%s got an unexpected keyword argument '%s'", what, kn[j]);
        if (out[i])
            rfail(c, n, "%s got multiple values for argument '%s'", what, kn[j]);
        out[i] = kv[j];
    }
}

static long long need_int(rctx *c, const node *n, const char *what, jv *v, long long dflt)
{
    if (!v || v->k == JV_NONE)
        return dflt;
    if (v->k == JV_INT || v->k == JV_BOOL)
        return jv_intval(v);
    rfail(c, n, "%s must be an integer, not %s", what, py_type(v));
}

static jv *need_str(rctx *c, const node *n, const char *what, jv *v)
{
    if (v && v->k == JV_STR)
        return v;
    if (v && v->k == JV_UNDEF)
        fail_undef(c, n, v);
    rfail(c, n, "%s must be a string, not %s", what, v ? py_type(v) : "nothing");
}

/* ---- renderer: string helpers --------------------------------------------------------- */

static int cp_in(uint32_t cp, const jv *chars)
{
    size_t i = 0;
    while (i < chars->u.s.n)
        if (u8_next(chars->u.s.p, chars->u.s.n, &i) == cp)
            return 1;
    return 0;
}

static jv *s_strip(rctx *c, jv *s, jv *chars, int left, int right)
{
    size_t cnt;
    size_t *off = u8_offsets(&c->x, s->u.s.p, s->u.s.n, &cnt);
    size_t b = 0, e = cnt;
    while (left && b < e) {
        size_t i = off[b];
        uint32_t cp = u8_next(s->u.s.p, s->u.s.n, &i);
        if (chars ? !cp_in(cp, chars) : !py_isspace(cp))
            break;
        b++;
    }
    while (right && e > b) {
        size_t i = off[e - 1];
        uint32_t cp = u8_next(s->u.s.p, s->u.s.n, &i);
        if (chars ? !cp_in(cp, chars) : !py_isspace(cp))
            break;
        e--;
    }
    return jv_str_ref(&c->x, s->u.s.p + off[b], off[e] - off[b]);
}

enum { CASE_UPPER, CASE_LOWER, CASE_TITLE, CASE_CAPITALIZE, CASE_JTITLE };

/* ASCII case mapping; non-ASCII characters are kept (and count as letters for title()) */
static jv *s_case(rctx *c, jv *s, int mode)
{
    char *p = ar_strndup(&c->x, s->u.s.p, s->u.s.n);
    int prev_cased = 0, word_start = 1;
    for (size_t i = 0; i < s->u.s.n; i++) {
        unsigned char ch = (unsigned char)p[i];
        int cased = isalpha(ch) || ch >= 0x80;
        switch (mode) {
        case CASE_UPPER: p[i] = (char)toupper(ch); break;
        case CASE_LOWER: p[i] = (char)tolower(ch); break;
        case CASE_CAPITALIZE: p[i] = (char)(i == 0 ? toupper(ch) : tolower(ch)); break;
        case CASE_TITLE:
            p[i] = (char)(prev_cased ? tolower(ch) : toupper(ch));
            if (ch < 0x80 || (ch & 0xC0) != 0x80)
                prev_cased = cased;
            break;
        case CASE_JTITLE: {
            int sep = ch == '-' || is_ascii_ws((char)ch) || ch == '(' || ch == '{' || ch == '[' || ch == '<';
            if (sep) {
                word_start = 1;
            } else {
                p[i] = (char)(word_start ? toupper(ch) : tolower(ch));
                word_start = 0;
            }
            break;
        }
        }
    }
    return jv_str_ref(&c->x, p, s->u.s.n);
}

static jv *s_replace(rctx *c, jv *s, jv *old, jv *new, long long count)
{
    jx *x = &c->x;
    sbuf b = {0};
    sb_reserve(x, &b, 0);
    if (old->u.s.n == 0) {
        size_t i = 0;
        long long done = 0;
        while (1) {
            if (count < 0 || done < count) {
                sb_add(x, &b, new->u.s.p, new->u.s.n);
                done++;
            }
            if (i >= s->u.s.n)
                break;
            size_t j = i;
            u8_next(s->u.s.p, s->u.s.n, &j);
            sb_add(x, &b, s->u.s.p + i, j - i);
            i = j;
        }
        return jv_str_ref(x, b.p, b.n);
    }
    const char *p = s->u.s.p, *end = p + s->u.s.n;
    long long done = 0;
    while (p < end && (count < 0 || done < count)) {
        const char *f = mem_find(p, (size_t)(end - p), old->u.s.p, old->u.s.n);
        if (!f)
            break;
        sb_add(x, &b, p, (size_t)(f - p));
        sb_add(x, &b, new->u.s.p, new->u.s.n);
        p = f + old->u.s.n;
        done++;
    }
    sb_add(x, &b, p, (size_t)(end - p));
    return jv_str_ref(x, b.p, b.n);
}

static jv *s_split(rctx *c, jv *s, jv *sep, long long maxsplit)
{
    jx *x = &c->x;
    jv *l = jv_list(x);
    const char *p = s->u.s.p;
    size_t n = s->u.s.n;
    if (!sep) {
        size_t i = 0;
        long long splits = 0;
        for (;;) {
            while (i < n) { /* skip whitespace */
                size_t j = i;
                if (!py_isspace(u8_next(p, n, &j)))
                    break;
                i = j;
            }
            if (i >= n)
                break;
            if (maxsplit >= 0 && splits >= maxsplit) {
                size_t e = n; /* the rest, trailing whitespace removed */
                jv *rest = s_strip(c, jv_str_ref(x, p + i, e - i), NULL, 0, 1);
                list_push(x, l, rest);
                break;
            }
            size_t b = i;
            while (i < n) {
                size_t j = i;
                if (py_isspace(u8_next(p, n, &j)))
                    break;
                i = j;
            }
            list_push(x, l, jv_str_ref(x, p + b, i - b));
            splits++;
        }
        return l;
    }
    const char *q = p, *end = p + n;
    long long splits = 0;
    while (maxsplit < 0 || splits < maxsplit) {
        const char *f = mem_find(q, (size_t)(end - q), sep->u.s.p, sep->u.s.n);
        if (!f)
            break;
        list_push(x, l, jv_strn(x, q, (size_t)(f - q)));
        q = f + sep->u.s.n;
        splits++;
    }
    list_push(x, l, jv_strn(x, q, (size_t)(end - q)));
    return l;
}

static jv *s_rsplit(rctx *c, jv *s, jv *sep, long long maxsplit)
{
    if (!sep || maxsplit < 0)
        return s_split(c, s, sep, maxsplit);
    jx *x = &c->x;
    jv *parts[256];
    size_t np = 0;
    const char *p = s->u.s.p;
    size_t end = s->u.s.n;
    long long splits = 0;
    while (splits < maxsplit && np < 255) {
        size_t found = (size_t)-1;
        for (size_t i = end; i >= sep->u.s.n && i > 0; i--)
            if (memcmp(p + i - sep->u.s.n, sep->u.s.p, sep->u.s.n) == 0) {
                found = i - sep->u.s.n;
                break;
            }
        if (found == (size_t)-1)
            break;
        parts[np++] = jv_strn(x, p + found + sep->u.s.n, end - found - sep->u.s.n);
        end = found;
        splits++;
    }
    jv *l = jv_list(x);
    list_push(x, l, jv_strn(x, p, end));
    while (np)
        list_push(x, l, parts[--np]);
    return l;
}

static int s_affix(const jv *s, const jv *a, int suffix)
{
    if (a->u.s.n > s->u.s.n)
        return 0;
    const char *p = suffix ? s->u.s.p + s->u.s.n - a->u.s.n : s->u.s.p;
    return memcmp(p, a->u.s.p, a->u.s.n) == 0;
}

static jv *call_method(rctx *c, const node *n, jv *self, const char *name, jv **args, size_t na,
                       const char **kn, jv **kv, size_t nk)
{
    jx *x = &c->x;
    jv *a[3];
    const char *what = ar_printf(c, "%s.%s()", py_type(self), name);
    if (self->k == JV_DICT) {
        if (!strcmp(name, "get")) {
            static const char *const P[] = {"key", "default", NULL};
            bind_args(c, n, what, P, args, na, kn, kv, nk, a);
            if (!a[0])
                rfail(c, n, "dict.get() needs a key");
            jv **v = dict_find(self, a[0]);
            return v ? *v : a[1] ? a[1] : &V_NONE;
        }
        static const char *const P0[] = {NULL};
        bind_args(c, n, what, P0, args, na, kn, kv, nk, a);
        jv *l = jv_list(x);
        for (size_t i = 0; i < self->u.d.n; i++) {
            if (!strcmp(name, "keys")) {
                list_push(x, l, self->u.d.key[i]);
            } else if (!strcmp(name, "values")) {
                list_push(x, l, self->u.d.val[i]);
            } else {
                jv *pair = jv_list(x);
                pair->tuple = 1;
                list_push(x, pair, self->u.d.key[i]);
                list_push(x, pair, self->u.d.val[i]);
                list_push(x, l, pair);
            }
        }
        return l;
    }
    if (self->k == JV_LIST) {
        static const char *const P[] = {"value", NULL};
        bind_args(c, n, what, P, args, na, kn, kv, nk, a);
        if (!a[0])
            rfail(c, n, "%s needs an argument", what);
        long long cnt = 0;
        for (size_t i = 0; i < self->u.l.n; i++)
            if (py_eq(self->u.l.v[i], a[0])) {
                if (!strcmp(name, "index"))
                    return jv_int(x, (long long)i);
                cnt++;
            }
        if (!strcmp(name, "index"))
            rfail(c, n, "list.index(x): x not in list");
        return jv_int(x, cnt);
    }
    /* str */
    if (!strcmp(name, "strip") || !strcmp(name, "lstrip") || !strcmp(name, "rstrip")) {
        static const char *const P[] = {"chars", NULL};
        bind_args(c, n, what, P, args, na, kn, kv, nk, a);
        jv *chars = a[0] && a[0]->k != JV_NONE ? need_str(c, n, "strip chars", a[0]) : NULL;
        return s_strip(c, self, chars, name[0] != 'r', name[0] != 'l');
    }
    if (!strcmp(name, "startswith") || !strcmp(name, "endswith")) {
        static const char *const P[] = {"prefix", NULL};
        bind_args(c, n, what, P, args, na, kn, kv, nk, a);
        if (!a[0])
            rfail(c, n, "%s needs an argument", what);
        int suffix = name[0] == 'e';
        if (a[0]->k == JV_LIST) {
            for (size_t i = 0; i < a[0]->u.l.n; i++)
                if (s_affix(self, need_str(c, n, what, a[0]->u.l.v[i]), suffix))
                    return &V_TRUE;
            return &V_FALSE;
        }
        return jv_bool(s_affix(self, need_str(c, n, what, a[0]), suffix));
    }
    if (!strcmp(name, "split") || !strcmp(name, "rsplit")) {
        static const char *const P[] = {"sep", "maxsplit", NULL};
        bind_args(c, n, what, P, args, na, kn, kv, nk, a);
        jv *sep = a[0] && a[0]->k != JV_NONE ? need_str(c, n, "separator", a[0]) : NULL;
        if (sep && sep->u.s.n == 0)
            rfail(c, n, "empty separator");
        long long ms = need_int(c, n, "maxsplit", a[1], -1);
        return name[0] == 'r' ? s_rsplit(c, self, sep, ms) : s_split(c, self, sep, ms);
    }
    if (!strcmp(name, "splitlines")) {
        static const char *const P[] = {NULL};
        bind_args(c, n, what, P, args, na, kn, kv, nk, a);
        jv *l = jv_list(x);
        const char *p = self->u.s.p, *end = p + self->u.s.n, *b = p;
        while (p < end) {
            if (*p == '\n' || *p == '\r') {
                list_push(x, l, jv_strn(x, b, (size_t)(p - b)));
                if (*p == '\r' && p + 1 < end && p[1] == '\n')
                    p++;
                b = ++p;
            } else {
                p++;
            }
        }
        if (b < end)
            list_push(x, l, jv_strn(x, b, (size_t)(end - b)));
        return l;
    }
    if (!strcmp(name, "title") || !strcmp(name, "upper") || !strcmp(name, "lower") ||
        !strcmp(name, "capitalize")) {
        static const char *const P[] = {NULL};
        bind_args(c, n, what, P, args, na, kn, kv, nk, a);
        int mode = name[0] == 't' ? CASE_TITLE : name[0] == 'u' ? CASE_UPPER
                 : name[0] == 'l' ? CASE_LOWER : CASE_CAPITALIZE;
        return s_case(c, self, mode);
    }
    if (!strcmp(name, "replace")) {
        static const char *const P[] = {"old", "new", "count", NULL};
        bind_args(c, n, what, P, args, na, kn, kv, nk, a);
        return s_replace(c, self, need_str(c, n, "replace old", a[0]), need_str(c, n, "replace new", a[1]),
                         need_int(c, n, "count", a[2], -1));
    }
    if (!strcmp(name, "find") || !strcmp(name, "rfind") || !strcmp(name, "count")) {
        static const char *const P[] = {"sub", NULL};
        bind_args(c, n, what, P, args, na, kn, kv, nk, a);
        jv *sub = need_str(c, n, what, a[0]);
        if (name[0] == 'c') {
            if (sub->u.s.n == 0)
                return jv_int(x, (long long)u8_count(self->u.s.p, self->u.s.n) + 1);
            long long cnt = 0;
            const char *p = self->u.s.p, *end = p + self->u.s.n, *f;
            while ((f = mem_find(p, (size_t)(end - p), sub->u.s.p, sub->u.s.n))) {
                cnt++;
                p = f + sub->u.s.n;
            }
            return jv_int(x, cnt);
        }
        long long found = -1;
        for (size_t i = 0; i + sub->u.s.n <= self->u.s.n; i++)
            if (memcmp(self->u.s.p + i, sub->u.s.p, sub->u.s.n) == 0) {
                found = (long long)i;
                if (name[0] == 'f')
                    break;
            }
        return jv_int(x, found < 0 ? -1 : (long long)u8_count(self->u.s.p, (size_t)found));
    }
    if (!strcmp(name, "join")) {
        static const char *const P[] = {"iterable", NULL};
        bind_args(c, n, what, P, args, na, kn, kv, nk, a);
        if (!a[0])
            rfail(c, n, "str.join() needs an iterable");
        size_t cnt;
        jv **items = iter_items(c, n, a[0], &cnt);
        sbuf b = {0};
        sb_reserve(x, &b, 0);
        for (size_t i = 0; i < cnt; i++) {
            if (items[i]->k != JV_STR)
                rfail(c, n, "sequence item %zu: expected str instance, %s found", i, py_type(items[i]));
            if (i)
                sb_add(x, &b, self->u.s.p, self->u.s.n);
            sb_add(x, &b, items[i]->u.s.p, items[i]->u.s.n);
        }
        return jv_str_ref(x, b.p, b.n);
    }
    /* is* predicates */
    static const char *const P[] = {NULL};
    bind_args(c, n, what, P, args, na, kn, kv, nk, a);
    const char *s = self->u.s.p;
    size_t len = self->u.s.n;
    int ok = len > 0, any_cased = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!strcmp(name, "isdigit")) ok &= isdigit(ch) != 0;
        else if (!strcmp(name, "isalpha")) ok &= isalpha(ch) != 0 || ch >= 0x80;
        else if (!strcmp(name, "isalnum")) ok &= isalnum(ch) != 0 || ch >= 0x80;
        else if (!strcmp(name, "isspace")) ok &= is_ascii_ws((char)ch);
        else if (!strcmp(name, "islower")) { ok &= !isupper(ch); any_cased |= islower(ch) != 0; }
        else if (!strcmp(name, "isupper")) { ok &= !islower(ch); any_cased |= isupper(ch) != 0; }
    }
    if (!strcmp(name, "islower") || !strcmp(name, "isupper"))
        ok = ok && any_cased;
    return jv_bool(ok);
}

/* ---- renderer: JSON output (transformers' tojson) ------------------------------------- */

static void json_str(rctx *c, sbuf *b, const char *s, size_t n, int ascii)
{
    jx *x = &c->x;
    sb_putc(x, b, '"');
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        uint32_t cp = u8_next(s, n, &j);
        switch (cp) {
        case '"': sb_puts(x, b, "\\\""); break;
        case '\\': sb_puts(x, b, "\\\\"); break;
        case '\n': sb_puts(x, b, "\\n"); break;
        case '\r': sb_puts(x, b, "\\r"); break;
        case '\t': sb_puts(x, b, "\\t"); break;
        case '\b': sb_puts(x, b, "\\b"); break;
        case '\f': sb_puts(x, b, "\\f"); break;
        default:
            if (cp < 0x20) {
                sb_printf(x, b, "\\u%04x", cp);
            } else if (ascii && cp >= 0x7F) {
                if (cp >= 0x10000) {
                    uint32_t v = cp - 0x10000;
                    sb_printf(x, b, "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
                } else {
                    sb_printf(x, b, "\\u%04x", cp);
                }
            } else {
                sb_add(x, b, s + i, j - i);
            }
        }
        i = j;
    }
    sb_putc(x, b, '"');
}

static void json_nl(rctx *c, sbuf *b, long indent, int level)
{
    sb_putc(&c->x, b, '\n');
    for (long i = 0; i < indent * level; i++)
        sb_putc(&c->x, b, ' ');
}

typedef struct json_fmt {
    long indent; /* < 0: one line */
    int ascii, sort_keys;
    const char *item_sep, *key_sep;
} json_fmt;

static void json_write(rctx *c, const node *n, sbuf *b, jv *v, const json_fmt *f, int level)
{
    long indent = f->indent;
    int ascii = f->ascii, sort_keys = f->sort_keys;
    jx *x = &c->x;
    char tmp[64];
    if (level > 200)
        rfail(c, n, "tojson: nesting too deep");
    switch (v->k) {
    case JV_NONE: sb_puts(x, b, "null"); return;
    case JV_BOOL: sb_puts(x, b, v->u.b ? "true" : "false"); return;
    case JV_INT: sb_printf(x, b, "%lld", v->u.i); return;
    case JV_FLOAT:
        if (isnan(v->u.f)) sb_puts(x, b, "NaN");
        else if (isinf(v->u.f)) sb_puts(x, b, v->u.f < 0 ? "-Infinity" : "Infinity");
        else { fmt_float(v->u.f, tmp, sizeof tmp); sb_puts(x, b, tmp); }
        return;
    case JV_STR: json_str(c, b, v->u.s.p, v->u.s.n, ascii); return;
    case JV_LIST:
        if (v->gen)
            rfail(c, n, "Object of type generator is not JSON serializable");
        if (v->u.l.n == 0) { sb_puts(x, b, "[]"); return; }
        sb_putc(x, b, '[');
        for (size_t i = 0; i < v->u.l.n; i++) {
            if (i)
                sb_puts(x, b, f->item_sep);
            if (indent >= 0)
                json_nl(c, b, indent, level + 1);
            json_write(c, n, b, v->u.l.v[i], f, level + 1);
        }
        if (indent >= 0)
            json_nl(c, b, indent, level);
        sb_putc(x, b, ']');
        return;
    case JV_DICT: {
        if (v->u.d.n == 0) { sb_puts(x, b, "{}"); return; }
        size_t cnt = v->u.d.n, *ord = ar_alloc(x, cnt * sizeof *ord);
        for (size_t i = 0; i < cnt; i++)
            ord[i] = i;
        if (sort_keys) /* insertion sort: key lists are short */
            for (size_t i = 1; i < cnt; i++)
                for (size_t j = i; j > 0 && py_lt(c, n, v->u.d.key[ord[j]], v->u.d.key[ord[j - 1]]); j--) {
                    size_t t = ord[j]; ord[j] = ord[j - 1]; ord[j - 1] = t;
                }
        sb_putc(x, b, '{');
        for (size_t k = 0; k < cnt; k++) {
            size_t i = ord[k];
            if (k)
                sb_puts(x, b, f->item_sep);
            if (indent >= 0)
                json_nl(c, b, indent, level + 1);
            jv *key = v->u.d.key[i];
            if (key->k == JV_STR) {
                json_str(c, b, key->u.s.p, key->u.s.n, ascii);
            } else if (key->k == JV_INT || key->k == JV_FLOAT || key->k == JV_BOOL || key->k == JV_NONE) {
                sbuf kb = {0};
                json_fmt kf = {-1, ascii, 0, ", ", ": "};
                json_write(c, n, &kb, key, &kf, 0);
                json_str(c, b, kb.p, kb.n, ascii);
            } else {
                rfail(c, n, "tojson: keys must be str, int, float, bool or None, not %s", py_type(key));
            }
            sb_puts(x, b, f->key_sep);
            json_write(c, n, b, v->u.d.val[i], f, level + 1);
        }
        if (indent >= 0)
            json_nl(c, b, indent, level);
        sb_putc(x, b, '}');
        return;
    }
    default: rfail(c, n, "Object of type %s is not JSON serializable", py_type(v));
    }
}

/* ---- renderer: filters ----------------------------------------------------------------- */

#define FILTER(fname)                                                                          \
    static jv *flt_##fname(rctx *c, const node *n, jv *v, jv **args, size_t na, const char **kn, \
                           jv **kv, size_t nk)
#define BIND(...)                                                                              \
    static const char *const P_[] = {__VA_ARGS__, NULL};                                       \
    jv *a[8];                                                                                  \
    bind_args(c, n, ar_printf(c, "filter '%s'", n->name ? n->name : "?"), P_, args, na, kn,    \
              kv, nk, a)
#define NOARGS                                                                                 \
    static const char *const P_[] = {NULL};                                                    \
    jv *a[1];                                                                                  \
    bind_args(c, n, ar_printf(c, "filter '%s'", n->name ? n->name : "?"), P_, args, na, kn,    \
              kv, nk, a);                                                                      \
    (void)a

static jv *apply_filter(rctx *c, const node *n, int fid, jv *v, jv **args, size_t na,
                        const char **kn, jv **kv, size_t nk);
static int apply_test(rctx *c, const node *n, int tid, jv *v, jv **args, size_t na);

FILTER(safe)
{
    NOARGS;
    if (v->k == JV_STR && v->markup)
        return v;
    jv *s = jv_str_ref(&c->x, str_of(c, v)->u.s.p, str_of(c, v)->u.s.n);
    s->markup = 1;
    return s;
}
FILTER(string) { NOARGS; return str_of(c, v); }

FILTER(trim)
{
    BIND("chars");
    jv *chars = a[0] && a[0]->k != JV_NONE ? need_str(c, n, "trim chars", a[0]) : NULL;
    return s_strip(c, str_of(c, v), chars, 1, 1);
}

FILTER(upper) { NOARGS; return s_case(c, str_of(c, v), CASE_UPPER); }
FILTER(lower) { NOARGS; return s_case(c, str_of(c, v), CASE_LOWER); }
FILTER(capitalize) { NOARGS; return s_case(c, str_of(c, v), CASE_CAPITALIZE); }
FILTER(title) { NOARGS; return s_case(c, str_of(c, v), CASE_JTITLE); }

FILTER(length)
{
    NOARGS;
    switch (v->k) {
    case JV_UNDEF: return jv_int(&c->x, 0);
    case JV_STR: return jv_int(&c->x, (long long)u8_count(v->u.s.p, v->u.s.n));
    case JV_LIST:
        if (v->gen)
            rfail(c, n, "object of type 'generator' has no len()");
        return jv_int(&c->x, (long long)v->u.l.n);
    case JV_DICT: return jv_int(&c->x, (long long)v->u.d.n);
    default: rfail(c, n, "object of type '%s' has no len()", py_type(v));
    }
}

FILTER(default)
{
    BIND("default_value", "boolean");
    jv *dv = a[0] ? a[0] : jv_str_ref(&c->x, "", 0);
    if (v->k == JV_UNDEF || (a[1] && py_truthy(a[1]) && !py_truthy(v)))
        return dv;
    return v;
}

FILTER(first)
{
    NOARGS;
    size_t cnt;
    jv **items = iter_items(c, n, v, &cnt);
    return cnt ? items[0] : jv_undef(&c->x, "No first item, sequence was empty.");
}

FILTER(last)
{
    NOARGS;
    size_t cnt;
    jv **items = iter_items(c, n, v, &cnt);
    return cnt ? items[cnt - 1] : jv_undef(&c->x, "No last item, sequence was empty.");
}

FILTER(join)
{
    BIND("d", "attribute");
    jv *sep = a[0] ? str_of(c, a[0]) : NULL;
    size_t cnt;
    jv **items = iter_items(c, n, v, &cnt);
    sbuf b = {0};
    sb_reserve(&c->x, &b, 0);
    for (size_t i = 0; i < cnt; i++) {
        if (i && sep)
            sb_add(&c->x, &b, sep->u.s.p, sep->u.s.n);
        py_str(&c->x, &b, a[1] ? attr_path(c, n, items[i], a[1]) : items[i]);
    }
    return jv_str_ref(&c->x, b.p, b.n);
}

FILTER(list)
{
    NOARGS;
    size_t cnt;
    jv **items = iter_items(c, n, v, &cnt);
    return list_from(c, items, cnt);
}

FILTER(int)
{
    BIND("default", "base");
    jv *dflt = a[0] ? a[0] : jv_int(&c->x, 0);
    long long base = need_int(c, n, "base", a[1], 10);
    if (v->k == JV_INT)
        return v;
    if (v->k == JV_BOOL)
        return jv_int(&c->x, v->u.b);
    if (v->k == JV_FLOAT)
        return isfinite(v->u.f) ? jv_int(&c->x, (long long)v->u.f) : dflt;
    if (v->k == JV_STR) {
        jv *s = s_strip(c, v, NULL, 1, 1);
        char *end;
        const char *p = ar_strndup(&c->x, s->u.s.p, s->u.s.n);
        long long r = strtoll(p, &end, (int)base);
        if (*p && !*end)
            return jv_int(&c->x, r);
        double d = strtod(p, &end);
        if (*p && !*end && isfinite(d))
            return jv_int(&c->x, (long long)d);
    }
    return dflt;
}

FILTER(float)
{
    BIND("default");
    jv *dflt = a[0] ? a[0] : jv_float(&c->x, 0.0);
    if (jv_isnum(v))
        return jv_float(&c->x, jv_num(v));
    if (v->k == JV_STR) {
        jv *s = s_strip(c, v, NULL, 1, 1);
        char *end;
        const char *p = ar_strndup(&c->x, s->u.s.p, s->u.s.n);
        double d = strtod(p, &end);
        if (*p && !*end)
            return jv_float(&c->x, d);
    }
    return dflt;
}

FILTER(abs)
{
    NOARGS;
    if (v->k == JV_INT || v->k == JV_BOOL)
        return jv_int(&c->x, llabs(jv_intval(v)));
    if (v->k == JV_FLOAT)
        return jv_float(&c->x, fabs(v->u.f));
    rfail(c, n, "bad operand type for abs(): '%s'", py_type(v));
}

FILTER(round)
{
    BIND("precision", "method");
    long long prec = need_int(c, n, "precision", a[0], 0);
    const char *method = a[1] ? need_str(c, n, "method", a[1])->u.s.p : "common";
    if (!jv_isnum(v))
        rfail(c, n, "round: expected a number, not %s", py_type(v));
    double m = pow(10.0, (double)prec), d = jv_num(v) * m;
    if (!strcmp(method, "common"))
        d = round(d);
    else if (!strcmp(method, "ceil"))
        d = ceil(d);
    else if (!strcmp(method, "floor"))
        d = floor(d);
    else
        rfail(c, n, "round: method must be 'common', 'ceil' or 'floor'");
    return jv_float(&c->x, d / m);
}

FILTER(items)
{
    NOARGS;
    if (v->k == JV_UNDEF)
        return jv_list(&c->x);
    if (v->k != JV_DICT)
        rfail(c, n, "Can only get item pairs from a mapping (got %s).", py_type(v));
    return call_method(c, n, v, "items", NULL, 0, NULL, NULL, 0);
}

FILTER(tojson)
{
    BIND("ensure_ascii", "indent", "separators", "sort_keys");
    json_fmt f = {-1, a[0] && py_truthy(a[0]), a[3] && py_truthy(a[3]), ", ", ": "};
    if (a[1] && a[1]->k != JV_NONE) {
        f.indent = (long)need_int(c, n, "tojson indent", a[1], 0);
        f.item_sep = ",";
    }
    if (a[2] && a[2]->k != JV_NONE) {
        if (a[2]->k != JV_LIST || a[2]->u.l.n != 2)
            rfail(c, n, "tojson separators must be a pair of strings");
        f.item_sep = need_str(c, n, "separator", a[2]->u.l.v[0])->u.s.p;
        f.key_sep = need_str(c, n, "separator", a[2]->u.l.v[1])->u.s.p;
    }
    sbuf b = {0};
    sb_reserve(&c->x, &b, 0);
    json_write(c, n, &b, v, &f, 0);
    return jv_str_ref(&c->x, b.p, b.n);
}

FILTER(indent)
{
    BIND("width", "first", "blank");
    jx *x = &c->x;
    sbuf ind = {0};
    sb_reserve(x, &ind, 0);
    if (a[0] && a[0]->k == JV_STR)
        sb_add(x, &ind, a[0]->u.s.p, a[0]->u.s.n);
    else
        for (long long i = need_int(c, n, "indent width", a[0], 4); i > 0; i--)
            sb_putc(x, &ind, ' ');
    int first = a[1] && py_truthy(a[1]), blank = a[2] && py_truthy(a[2]);
    jv *s = str_of(c, v);
    /* s + "\n" split into lines (Python splitlines on \n, \r\n, \r) */
    sbuf src = {0};
    sb_reserve(x, &src, 0);
    sb_add(x, &src, s->u.s.p, s->u.s.n);
    sb_putc(x, &src, '\n');
    jv *lines = call_method(c, n, jv_str_ref(x, src.p, src.n), "splitlines", NULL, 0, NULL, NULL, 0);
    sbuf out = {0};
    sb_reserve(x, &out, 0);
    if (first)
        sb_add(x, &out, ind.p, ind.n);
    for (size_t i = 0; i < lines->u.l.n; i++) {
        jv *ln = lines->u.l.v[i];
        if (i) {
            sb_putc(x, &out, '\n');
            if (blank || ln->u.s.n)
                sb_add(x, &out, ind.p, ind.n);
        }
        sb_add(x, &out, ln->u.s.p, ln->u.s.n);
    }
    return jv_str_ref(x, out.p, out.n);
}

static jv *fold_case(rctx *c, jv *v, int case_sensitive)
{
    return !case_sensitive && v->k == JV_STR ? s_case(c, v, CASE_LOWER) : v;
}

FILTER(unique)
{
    BIND("case_sensitive", "attribute");
    int cs = a[0] && py_truthy(a[0]);
    size_t cnt;
    jv **items = iter_items(c, n, v, &cnt);
    jv *out = jv_list(&c->x), *seen = jv_list(&c->x);
    for (size_t i = 0; i < cnt; i++) {
        jv *key = fold_case(c, a[1] ? attr_path(c, n, items[i], a[1]) : items[i], cs);
        if (py_contains(c, n, seen, key))
            continue;
        list_push(&c->x, seen, key);
        list_push(&c->x, out, items[i]);
    }
    out->gen = 1;
    return out;
}

FILTER(reverse)
{
    NOARGS;
    if (v->k == JV_STR) {
        jv *step1 = jv_int(&c->x, -1);
        return do_slice(c, n, v, NULL, NULL, step1);
    }
    size_t cnt;
    jv **items = iter_items(c, n, v, &cnt);
    jv *l = jv_list(&c->x);
    for (size_t i = cnt; i > 0; i--)
        list_push(&c->x, l, items[i - 1]);
    return l;
}

FILTER(sort)
{
    BIND("reverse", "case_sensitive", "attribute");
    int rev = a[0] && py_truthy(a[0]), cs = a[1] && py_truthy(a[1]);
    size_t cnt;
    jv **items = iter_items(c, n, v, &cnt);
    jv *l = list_from(c, items, cnt);
    jv **keys = ar_alloc(&c->x, (cnt + 1) * sizeof *keys);
    for (size_t i = 0; i < cnt; i++)
        keys[i] = fold_case(c, a[2] ? attr_path(c, n, l->u.l.v[i], a[2]) : l->u.l.v[i], cs);
    for (size_t i = 1; i < cnt; i++) /* stable insertion sort */
        for (size_t j = i; j > 0; j--) {
            int lt = rev ? py_lt(c, n, keys[j - 1], keys[j]) : py_lt(c, n, keys[j], keys[j - 1]);
            if (!lt)
                break;
            jv *t = keys[j]; keys[j] = keys[j - 1]; keys[j - 1] = t;
            t = l->u.l.v[j]; l->u.l.v[j] = l->u.l.v[j - 1]; l->u.l.v[j - 1] = t;
        }
    return l;
}

FILTER(sum)
{
    BIND("attribute", "start");
    jv *acc = a[1] ? a[1] : jv_int(&c->x, 0);
    size_t cnt;
    jv **items = iter_items(c, n, v, &cnt);
    for (size_t i = 0; i < cnt; i++)
        acc = binop(c, n, OP_ADD, acc, a[0] ? attr_path(c, n, items[i], a[0]) : items[i]);
    return acc;
}

static jv *minmax(rctx *c, const node *n, jv *v, jv **a, int want_max)
{
    int cs = a[0] && py_truthy(a[0]);
    size_t cnt;
    jv **items = iter_items(c, n, v, &cnt);
    if (!cnt)
        return jv_undef(&c->x, "No aggregated item, sequence was empty.");
    jv *best = items[0], *bk = fold_case(c, a[1] ? attr_path(c, n, best, a[1]) : best, cs);
    for (size_t i = 1; i < cnt; i++) {
        jv *k = fold_case(c, a[1] ? attr_path(c, n, items[i], a[1]) : items[i], cs);
        if (want_max ? py_lt(c, n, bk, k) : py_lt(c, n, k, bk)) {
            best = items[i];
            bk = k;
        }
    }
    return best;
}

FILTER(min) { BIND("case_sensitive", "attribute"); return minmax(c, n, v, a, 0); }
FILTER(max) { BIND("case_sensitive", "attribute"); return minmax(c, n, v, a, 1); }

FILTER(escape)
{
    NOARGS;
    return html_escape(c, v);
}

static jv *html_escape(rctx *c, jv *v)
{
    if (v->k == JV_STR && v->markup)
        return v;
    jv *s = str_of(c, v);
    sbuf b = {0};
    sb_reserve(&c->x, &b, 0);
    for (size_t i = 0; i < s->u.s.n; i++) {
        char ch = s->u.s.p[i];
        switch (ch) {
        case '&': sb_puts(&c->x, &b, "&amp;"); break;
        case '<': sb_puts(&c->x, &b, "&lt;"); break;
        case '>': sb_puts(&c->x, &b, "&gt;"); break;
        case '"': sb_puts(&c->x, &b, "&#34;"); break;
        case '\'': sb_puts(&c->x, &b, "&#39;"); break;
        default: sb_putc(&c->x, &b, ch);
        }
    }
    jv *r = jv_str_ref(&c->x, b.p, b.n);
    r->markup = 1;
    return r;
}

FILTER(attr)
{
    BIND("name");
    return get_attr(c, n, v, need_str(c, n, "attr name", a[0])->u.s.p);
}

FILTER(replace)
{
    BIND("old", "new", "count");
    return s_replace(c, str_of(c, v), need_str(c, n, "replace old", a[0]),
                     need_str(c, n, "replace new", a[1]), need_int(c, n, "count", a[2], -1));
}

/* map(attribute='x', default=...) or map('filter', args...) */
FILTER(map)
{
    size_t cnt = 0;
    jv **items = py_truthy(v) ? iter_items(c, n, v, &cnt) : NULL; /* jinja2: `if value:` */
    jv *out = jv_list(&c->x);
    if (na == 0) {
        jv *attr = NULL, *dflt = NULL;
        for (size_t j = 0; j < nk; j++) {
            if (!strcmp(kn[j], "attribute")) attr = kv[j];
            else if (!strcmp(kn[j], "default")) dflt = kv[j];
            else rfail(c, n, "filter 'map' got an unexpected keyword argument '%s'", kn[j]);
        }
        if (!attr)
            rfail(c, n, "filter 'map' needs a filter name or attribute=");
        for (size_t i = 0; i < cnt; i++) {
            jv *r = attr_path(c, n, items[i], attr);
            list_push(&c->x, out, r->k == JV_UNDEF && dflt ? dflt : r);
        }
        out->gen = 1;
        return out;
    }
    jv *fname = need_str(c, n, "map filter name", args[0]);
    int fid = find_filter(fname->u.s.p);
    if (fid < 0)
        rfail(c, n, "unknown filter '%s' in map()", fname->u.s.p);
    for (size_t i = 0; i < cnt; i++)
        list_push(&c->x, out, apply_filter(c, n, fid, items[i], args + 1, na - 1, kn, kv, nk));
    out->gen = 1;
    return out;
}

static jv *select_common(rctx *c, const node *n, jv *v, jv **args, size_t na, size_t nk,
                         int by_attr, int keep)
{
    if (nk)
        rfail(c, n, "filter '%s' takes no keyword arguments", n->name);
    size_t cnt = 0;
    jv **items = py_truthy(v) ? iter_items(c, n, v, &cnt) : NULL; /* jinja2: `if value:` */
    jv *attr = NULL;
    if (by_attr) {
        if (na < 1)
            rfail(c, n, "filter '%s' needs an attribute name", n->name);
        attr = args[0];
        args++;
        na--;
    }
    int tid = -1;
    if (na >= 1) {
        jv *tname = need_str(c, n, "test name", args[0]);
        tid = find_test(tname->u.s.p);
        if (tid < 0)
            rfail(c, n, "unknown test '%s' in filter '%s'", tname->u.s.p, n->name);
        args++;
        na--;
    }
    jv *out = jv_list(&c->x);
    for (size_t i = 0; i < cnt; i++) {
        jv *val = attr ? attr_path(c, n, items[i], attr) : items[i];
        int ok = tid >= 0 ? apply_test(c, n, tid, val, args, na) : py_truthy(val);
        if (ok == keep)
            list_push(&c->x, out, items[i]);
    }
    out->gen = 1;
    return out;
}

FILTER(select) { (void)kn; (void)kv; return select_common(c, n, v, args, na, nk, 0, 1); }
FILTER(reject) { (void)kn; (void)kv; return select_common(c, n, v, args, na, nk, 0, 0); }
FILTER(selectattr) { (void)kn; (void)kv; return select_common(c, n, v, args, na, nk, 1, 1); }
FILTER(rejectattr) { (void)kn; (void)kv; return select_common(c, n, v, args, na, nk, 1, 0); }

static const filter_def FILTERS[] = {
    {"abs", flt_abs}, {"attr", flt_attr}, {"capitalize", flt_capitalize}, {"count", flt_length},
    {"d", flt_default}, {"default", flt_default}, {"e", flt_escape}, {"escape", flt_escape},
    {"first", flt_first}, {"float", flt_float}, {"indent", flt_indent}, {"int", flt_int},
    {"items", flt_items}, {"join", flt_join}, {"last", flt_last}, {"length", flt_length},
    {"list", flt_list}, {"lower", flt_lower}, {"map", flt_map}, {"max", flt_max},
    {"min", flt_min}, {"reject", flt_reject}, {"rejectattr", flt_rejectattr},
    {"replace", flt_replace}, {"reverse", flt_reverse}, {"round", flt_round},
    {"safe", flt_safe}, {"select", flt_select}, {"selectattr", flt_selectattr},
    {"sort", flt_sort}, {"string", flt_string}, {"sum", flt_sum}, {"title", flt_title},
    {"tojson", flt_tojson}, {"trim", flt_trim}, {"unique", flt_unique}, {"upper", flt_upper},
    {NULL, NULL},
};

static jv *apply_filter(rctx *c, const node *n, int fid, jv *v, jv **args, size_t na,
                        const char **kn, jv **kv, size_t nk)
{
    node tmp = *n; /* the filter's name for its error messages */
    tmp.name = FILTERS[fid].name;
    return FILTERS[fid].fn(c, &tmp, v, args, na, kn, kv, nk);
}

/* ---- renderer: tests ------------------------------------------------------------------- */

#define TEST(tname) static int tst_##tname(rctx *c, const node *n, jv *v, jv **args, size_t na)
#define NARGS(k)                                                                               \
    do {                                                                                       \
        if (na != (k))                                                                         \
            rfail(c, n, "test '%s' takes %d argument(s), got %zu", n->name, (k), na);          \
    } while (0)

TEST(defined) { NARGS(0); (void)c; (void)args; return v->k != JV_UNDEF; }
TEST(undefined) { NARGS(0); (void)c; (void)args; return v->k == JV_UNDEF; }
TEST(none) { NARGS(0); (void)c; (void)args; return v->k == JV_NONE; }
TEST(string) { NARGS(0); (void)c; (void)args; return v->k == JV_STR; }
TEST(mapping) { NARGS(0); (void)c; (void)args; return v->k == JV_DICT; }
TEST(iterable)
{
    NARGS(0); (void)c; (void)args;
    return v->k == JV_STR || v->k == JV_LIST || v->k == JV_DICT || v->k == JV_UNDEF;
}
TEST(sequence) { return tst_iterable(c, n, v, args, na); }
TEST(number) { NARGS(0); (void)c; (void)args; return jv_isnum(v); }
TEST(integer) { NARGS(0); (void)c; (void)args; return v->k == JV_INT; }
TEST(float) { NARGS(0); (void)c; (void)args; return v->k == JV_FLOAT; }
TEST(boolean) { NARGS(0); (void)c; (void)args; return v->k == JV_BOOL; }
TEST(true) { NARGS(0); (void)c; (void)args; return v->k == JV_BOOL && v->u.b; }
TEST(false) { NARGS(0); (void)c; (void)args; return v->k == JV_BOOL && !v->u.b; }
TEST(callable) { NARGS(0); (void)c; (void)args; return v->k == JV_MACRO || v->k == JV_FUNC || v->k == JV_METHOD; }
TEST(odd)
{
    NARGS(0); (void)args;
    if (v->k != JV_INT && v->k != JV_BOOL)
        rfail(c, n, "test 'odd' needs an integer, not %s", py_type(v));
    return (jv_intval(v) & 1) != 0;
}
TEST(even) { return !tst_odd(c, n, v, args, na); }
TEST(divisibleby)
{
    NARGS(1);
    long long d = need_int(c, n, "divisibleby", args[0], 1), x = need_int(c, n, "value", v, 0);
    if (d == 0)
        rfail(c, n, "integer division or modulo by zero");
    return x % d == 0;
}
TEST(eq) { NARGS(1); (void)c; return py_eq(v, args[0]); }
TEST(ne) { NARGS(1); (void)c; return !py_eq(v, args[0]); }
TEST(lt) { NARGS(1); return py_lt(c, n, v, args[0]); }
TEST(le) { NARGS(1); return !py_lt(c, n, args[0], v); }
TEST(gt) { NARGS(1); return py_lt(c, n, args[0], v); }
TEST(ge) { NARGS(1); return !py_lt(c, n, v, args[0]); }
TEST(in) { NARGS(1); return py_contains(c, n, args[0], v); }
TEST(sameas)
{
    NARGS(1); (void)c;
    jv *o = args[0];
    if (v->k == JV_NONE || v->k == JV_BOOL || o->k == JV_NONE || o->k == JV_BOOL)
        return v->k == o->k && (v->k == JV_NONE || v->u.b == o->u.b);
    return v == o;
}
TEST(lower)
{
    NARGS(0); (void)args;
    jv *s = str_of(c, v);
    int any = 0;
    for (size_t i = 0; i < s->u.s.n; i++) {
        if (isupper((unsigned char)s->u.s.p[i]))
            return 0;
        any |= islower((unsigned char)s->u.s.p[i]) != 0;
    }
    return any;
}
TEST(upper)
{
    NARGS(0); (void)args;
    jv *s = str_of(c, v);
    int any = 0;
    for (size_t i = 0; i < s->u.s.n; i++) {
        if (islower((unsigned char)s->u.s.p[i]))
            return 0;
        any |= isupper((unsigned char)s->u.s.p[i]) != 0;
    }
    return any;
}

static const test_def TESTS[] = {
    {"boolean", tst_boolean}, {"callable", tst_callable}, {"defined", tst_defined},
    {"divisibleby", tst_divisibleby}, {"eq", tst_eq}, {"equalto", tst_eq}, {"==", tst_eq},
    {"even", tst_even}, {"false", tst_false}, {"float", tst_float}, {"ge", tst_ge},
    {">=", tst_ge}, {"gt", tst_gt}, {">", tst_gt}, {"greaterthan", tst_gt}, {"in", tst_in},
    {"integer", tst_integer}, {"iterable", tst_iterable}, {"le", tst_le}, {"<=", tst_le},
    {"lower", tst_lower}, {"lt", tst_lt}, {"<", tst_lt}, {"lessthan", tst_lt},
    {"mapping", tst_mapping}, {"ne", tst_ne}, {"!=", tst_ne}, {"none", tst_none},
    {"number", tst_number}, {"odd", tst_odd}, {"sameas", tst_sameas},
    {"sequence", tst_sequence}, {"string", tst_string}, {"true", tst_true},
    {"undefined", tst_undefined}, {"upper", tst_upper}, {NULL, NULL},
};

static int apply_test(rctx *c, const node *n, int tid, jv *v, jv **args, size_t na)
{
    node tmp = *n;
    tmp.name = TESTS[tid].name;
    return TESTS[tid].fn(c, &tmp, v, args, na);
}

static int find_filter(const char *name)
{
    for (int i = 0; FILTERS[i].name; i++)
        if (!strcmp(FILTERS[i].name, name))
            return i;
    return -1;
}

static int find_test(const char *name)
{
    for (int i = 0; TESTS[i].name; i++)
        if (!strcmp(TESTS[i].name, name))
            return i;
    return -1;
}

/* ---- renderer: calls ------------------------------------------------------------------- */

static jv *call_builtin(rctx *c, const node *n, int fn, jv **args, size_t na, const char **kn,
                        jv **kv, size_t nk)
{
    jx *x = &c->x;
    jv *a[4];
    switch (fn) {
    case F_RAISE: {
        static const char *const P[] = {"message", NULL};
        bind_args(c, n, "raise_exception()", P, args, na, kn, kv, nk, a);
        jv *msg = a[0] ? str_of(c, a[0]) : jv_str_ref(x, "", 0);
        jx_fail(x, COH_EINVAL, "%s", msg->u.s.p);
    }
    case F_STRFTIME: {
        static const char *const P[] = {"format", NULL};
        bind_args(c, n, "strftime_now()", P, args, na, kn, kv, nk, a);
        jv *fmt = need_str(c, n, "strftime_now format", a[0]);
        struct tm tmv;
        if (c->now) {
            tmv = *c->now;
        } else {
            time_t t = time(NULL);
            localtime_r(&t, &tmv);
        }
        char buf[512];
        size_t len = fmt->u.s.n ? strftime(buf, sizeof buf, fmt->u.s.p, &tmv) : 0;
        return jv_strn(x, buf, len);
    }
    case F_NAMESPACE:
    case F_DICT: {
        jv *d = jv_new(x, fn == F_NAMESPACE ? JV_NS : JV_DICT);
        if (na > 1 || (na == 1 && args[0]->k != JV_DICT))
            rfail(c, n, "%s() takes at most one mapping argument", fn == F_NAMESPACE ? "namespace" : "dict");
        if (na == 1)
            for (size_t i = 0; i < args[0]->u.d.n; i++)
                dict_set(x, d, args[0]->u.d.key[i], args[0]->u.d.val[i]);
        for (size_t j = 0; j < nk; j++)
            dict_set_s(x, d, kn[j], kv[j]);
        return d;
    }
    case F_RANGE: {
        if (nk || na < 1 || na > 3)
            rfail(c, n, "range() takes 1 to 3 positional arguments");
        long long b = 0, e, s = 1;
        if (na == 1) {
            e = need_int(c, n, "range stop", args[0], 0);
        } else {
            b = need_int(c, n, "range start", args[0], 0);
            e = need_int(c, n, "range stop", args[1], 0);
            if (na == 3)
                s = need_int(c, n, "range step", args[2], 1);
        }
        if (s == 0)
            rfail(c, n, "range() arg 3 must not be zero");
        jv *l = jv_list(x);
        for (long long i = b; s > 0 ? i < e : i > e; i += s) {
            if (l->u.l.n >= 1000000)
                rfail(c, n, "range() too large (more than a million items)");
            list_push(x, l, jv_int(x, i));
        }
        return l;
    }
    }
    rfail(c, n, "unknown builtin");
}

static jv *call_macro(rctx *c, const node *n, jv *m, jv **args, size_t na, const char **kn,
                      jv **kv, size_t nk)
{
    const node *def = m->u.m.def;
    step(c, n);
    if (c->depth >= 200)
        rfail(c, n, "macro '%s' recursed more than 200 calls deep", def->name);
    if (na > def->nnames)
        rfail(c, n, "macro '%s' takes not more than %zu argument(s)", def->name, def->nnames);
    scope *s = scope_new(c, m->u.m.closure);
    jv **val = ar_alloc(&c->x, (def->nnames + 1) * sizeof *val);
    for (size_t i = 0; i < def->nnames; i++)
        val[i] = i < na ? args[i] : NULL;
    for (size_t j = 0; j < nk; j++) {
        size_t i = 0;
        while (i < def->nnames && strcmp(def->names[i], kn[j]))
            i++;
        if (i == def->nnames)
            rfail(c, n, "macro '%s' takes no keyword argument '%s'", def->name, kn[j]);
        if (val[i])
            rfail(c, n, "macro '%s' got multiple values for argument '%s'", def->name, kn[j]);
        val[i] = kv[j];
    }
    for (size_t i = 0; i < def->nnames; i++) {
        if (!val[i])
            val[i] = def->kw.v[i] ? eval(c, s, def->kw.v[i])
                                  : jv_undef(&c->x, ar_printf(c, "'%s' is undefined", def->names[i]));
        scope_set(c, s, def->names[i], val[i]);
    }
    sbuf buf = {0}, *saved = c->out;
    sb_reserve(&c->x, &buf, 0);
    c->out = &buf;
    c->depth++;
    exec_body(c, s, &def->args);
    c->depth--;
    c->out = saved;
    return jv_str_ref(&c->x, buf.p, buf.n);
}

static jv *call_value(rctx *c, const node *n, jv *f, jv **args, size_t na, const char **kn,
                      jv **kv, size_t nk)
{
    switch (f->k) {
    case JV_UNDEF: fail_undef(c, n, f);
    case JV_FUNC: return call_builtin(c, n, f->u.fn, args, na, kn, kv, nk);
    case JV_MACRO: return call_macro(c, n, f, args, na, kn, kv, nk);
    case JV_METHOD: return call_method(c, n, f->u.me.self, f->u.me.name, args, na, kn, kv, nk);
    default: rfail(c, n, "'%s' object is not callable", py_type(f));
    }
}

/* ---- renderer: expressions and statements ---------------------------------------------- */

static jv **eval_list(rctx *c, scope *sc, const nvec *v)
{
    jv **out = ar_alloc(&c->x, (v->n + 1) * sizeof *out);
    for (size_t i = 0; i < v->n; i++)
        out[i] = eval(c, sc, v->v[i]);
    return out;
}

static jv *lookup(rctx *c, scope *sc, const char *name)
{
    jv *v = scope_get(sc, name);
    if (v)
        return v;
    static const char *const GLOBALS[] = {"raise_exception", "strftime_now", "namespace", "range",
                                          "dict", NULL};
    for (int i = 0; GLOBALS[i]; i++)
        if (!strcmp(GLOBALS[i], name)) {
            jv *f = jv_new(&c->x, JV_FUNC);
            f->u.fn = i;
            return f;
        }
    return jv_undef(&c->x, ar_printf(c, "'%s' is undefined", name));
}

static jv *eval(rctx *c, scope *sc, const node *n)
{
    jx *x = &c->x;
    switch (n->k) {
    case E_LIT: return n->lit;
    case E_NAME: return lookup(c, sc, n->name);
    case E_LIST:
    case E_TUPLE: {
        jv *l = list_from(c, eval_list(c, sc, &n->args), n->args.n);
        l->tuple = n->k == E_TUPLE;
        return l;
    }
    case E_DICT: {
        jv *d = jv_new(x, JV_DICT);
        for (size_t i = 0; i < n->args.n; i++) {
            jv *k = eval(c, sc, n->args.v[i]);
            dict_set(x, d, k, eval(c, sc, n->kw.v[i]));
        }
        return d;
    }
    case E_ATTR: return get_attr(c, n, eval(c, sc, n->a), n->name);
    case E_ITEM: {
        jv *o = eval(c, sc, n->a);
        return get_item(c, n, o, eval(c, sc, n->b));
    }
    case E_SLICE: {
        jv *o = eval(c, sc, n->a);
        jv *b = n->b ? eval(c, sc, n->b) : NULL, *e = n->c ? eval(c, sc, n->c) : NULL;
        jv *st = n->d ? eval(c, sc, n->d) : NULL;
        return do_slice(c, n, o, b, e, st);
    }
    case E_CALL: {
        jv *f = eval(c, sc, n->a);
        jv **args = eval_list(c, sc, &n->args), **kv = eval_list(c, sc, &n->kw);
        return call_value(c, n, f, args, n->args.n, n->names, kv, n->kw.n);
    }
    case E_FILTER: {
        jv *v = n->a ? eval(c, sc, n->a) : c->input;
        jv **args = eval_list(c, sc, &n->args), **kv = eval_list(c, sc, &n->kw);
        return FILTERS[n->fid].fn(c, n, v, args, n->args.n, n->names, kv, n->kw.n);
    }
    case E_TEST: {
        jv *v = eval(c, sc, n->a);
        jv **args = eval_list(c, sc, &n->args);
        if (n->kw.n)
            rfail(c, n, "test '%s' takes no keyword arguments", n->name);
        int r = TESTS[n->fid].fn(c, n, v, args, n->args.n);
        return jv_bool(n->op ? !r : r);
    }
    case E_NOT: return jv_bool(!py_truthy(eval(c, sc, n->a)));
    case E_NEG:
    case E_POS: {
        jv *v = eval(c, sc, n->a);
        if (v->k == JV_UNDEF)
            fail_undef(c, n, v);
        if (!jv_isnum(v))
            rfail(c, n, "bad operand type for unary %s: '%s'", n->k == E_NEG ? "-" : "+", py_type(v));
        if (n->k == E_POS)
            return v->k == JV_BOOL ? jv_int(x, v->u.b) : v;
        return v->k == JV_FLOAT ? jv_float(x, -v->u.f) : jv_int(x, -jv_intval(v));
    }
    case E_BIN: {
        jv *a = eval(c, sc, n->a);
        return binop(c, n, n->op, a, eval(c, sc, n->b));
    }
    case E_AND: {
        jv *a = eval(c, sc, n->a);
        return py_truthy(a) ? eval(c, sc, n->b) : a;
    }
    case E_OR: {
        jv *a = eval(c, sc, n->a);
        return py_truthy(a) ? a : eval(c, sc, n->b);
    }
    case E_COND:
        if (py_truthy(eval(c, sc, n->a)))
            return eval(c, sc, n->b);
        return n->c ? eval(c, sc, n->c)
                    : jv_undef(x, "the inline if-expression evaluated to false and no else section was defined.");
    case E_INPUT: return c->input;
    default: rfail(c, n, "internal error: statement node in an expression");
    }
}

static void bind_targets(rctx *c, const node *n, scope *s, jv *item)
{
    if (n->nnames == 1) {
        scope_set(c, s, n->names[0], item);
        return;
    }
    size_t cnt;
    jv **items = iter_items(c, n, item, &cnt);
    if (cnt != n->nnames)
        rfail(c, n, "%s values to unpack (expected %zu, got %zu)",
              cnt > n->nnames ? "too many" : "not enough", n->nnames, cnt);
    for (size_t i = 0; i < cnt; i++)
        scope_set(c, s, n->names[i], items[i]);
}

static jv *render_to_string(rctx *c, scope *sc, const nvec *body)
{
    sbuf buf = {0}, *saved = c->out;
    sb_reserve(&c->x, &buf, 0);
    c->out = &buf;
    exec_body(c, sc, body);
    c->out = saved;
    return jv_str_ref(&c->x, buf.p, buf.n);
}

static jv *apply_chain(rctx *c, scope *sc, const node *chain, jv *input)
{
    jv *saved = c->input;
    c->input = input;
    jv *r = eval(c, sc, chain);
    c->input = saved;
    return r;
}

static int exec_for(rctx *c, scope *sc, const node *n)
{
    jx *x = &c->x;
    jv *it = eval(c, sc, n->a);
    size_t cnt;
    jv **items = iter_items(c, n, it, &cnt);
    if (n->b) { /* {% for x in xs if cond %}: filtered before loop.* is counted */
        jv **kept = ar_alloc(x, (cnt + 1) * sizeof *kept);
        size_t k = 0;
        for (size_t i = 0; i < cnt; i++) {
            scope *t = scope_new(c, sc);
            bind_targets(c, n, t, items[i]);
            if (py_truthy(eval(c, t, n->b)))
                kept[k++] = items[i];
        }
        items = kept;
        cnt = k;
    }
    if (cnt == 0) {
        if (n->kw.n)
            exec_body(c, scope_new(c, sc), &n->kw);
        return ST_OK;
    }
    for (size_t i = 0; i < cnt; i++) {
        step(c, n);
        scope *s = scope_new(c, sc);
        jv *loop = jv_new(x, JV_DICT);
        long long len = (long long)cnt, idx = (long long)i;
        dict_set_s(x, loop, "index", jv_int(x, idx + 1));
        dict_set_s(x, loop, "index0", jv_int(x, idx));
        dict_set_s(x, loop, "revindex", jv_int(x, len - idx));
        dict_set_s(x, loop, "revindex0", jv_int(x, len - idx - 1));
        dict_set_s(x, loop, "first", jv_bool(i == 0));
        dict_set_s(x, loop, "last", jv_bool(i + 1 == cnt));
        dict_set_s(x, loop, "length", jv_int(x, len));
        dict_set_s(x, loop, "depth", jv_int(x, 1));
        dict_set_s(x, loop, "depth0", jv_int(x, 0));
        if (i > 0)
            dict_set_s(x, loop, "previtem", items[i - 1]);
        if (i + 1 < cnt)
            dict_set_s(x, loop, "nextitem", items[i + 1]);
        scope_set(c, s, "loop", loop);
        bind_targets(c, n, s, items[i]);
        if (exec_body(c, s, &n->args) == ST_BREAK)
            break;
    }
    return ST_OK;
}

static int exec_stmt(rctx *c, scope *sc, const node *n)
{
    jx *x = &c->x;
    switch (n->k) {
    case S_TEXT: sb_add(x, c->out, n->lit->u.s.p, n->lit->u.s.n); return ST_OK;
    case S_OUT: py_str(x, c->out, eval(c, sc, n->a)); return ST_OK;
    case S_IF: return exec_body(c, sc, py_truthy(eval(c, sc, n->a)) ? &n->args : &n->kw);
    case S_FOR: return exec_for(c, sc, n);
    case S_SET: {
        jv *v = eval(c, sc, n->a);
        if (n->attr) {
            jv *ns = lookup(c, sc, n->name);
            if (ns->k != JV_NS)
                rfail(c, n, "can only set attributes of a namespace: '%s' is %s", n->name,
                      ns->k == JV_UNDEF ? "undefined" : py_type(ns));
            dict_set_s(x, ns, n->attr, v);
        } else {
            bind_targets(c, n, sc, v);
        }
        return ST_OK;
    }
    case S_SETBLOCK: {
        jv *v = render_to_string(c, sc, &n->args);
        if (n->c)
            v = apply_chain(c, sc, n->c, v);
        scope_set(c, sc, n->name, v);
        return ST_OK;
    }
    case S_MACRO: {
        jv *m = jv_new(x, JV_MACRO);
        m->u.m.def = n;
        m->u.m.closure = sc;
        scope_set(c, sc, n->name, m);
        return ST_OK;
    }
    case S_FILTERBLK: {
        jv *v = apply_chain(c, sc, n->c, render_to_string(c, sc, &n->args));
        py_str(x, c->out, v);
        return ST_OK;
    }
    case S_BREAK: return ST_BREAK;
    case S_CONTINUE: return ST_CONTINUE;
    default: rfail(c, n, "internal error: expression node as a statement");
    }
}

static int exec_body(rctx *c, scope *sc, const nvec *body)
{
    for (size_t i = 0; i < body->n; i++) {
        int st = exec_stmt(c, sc, body->v[i]);
        if (st != ST_OK)
            return st;
    }
    return ST_OK;
}

/* ---- public API: render ---------------------------------------------------------------- */

static jv *from_cjson(rctx *c, const cJSON *j)
{
    jx *x = &c->x;
    if (cJSON_IsNull(j))
        return &V_NONE;
    if (cJSON_IsBool(j))
        return jv_bool(cJSON_IsTrue(j));
    if (cJSON_IsNumber(j)) {
        double d = j->valuedouble;
        if (d == floor(d) && fabs(d) < 9007199254740992.0)
            return jv_int(x, (long long)d);
        return jv_float(x, d);
    }
    if (cJSON_IsString(j))
        return jv_str(x, j->valuestring ? j->valuestring : "");
    if (cJSON_IsArray(j)) {
        jv *l = jv_list(x);
        for (const cJSON *e = j->child; e; e = e->next)
            list_push(x, l, from_cjson(c, e));
        return l;
    }
    if (cJSON_IsObject(j)) {
        jv *d = jv_new(x, JV_DICT);
        for (const cJSON *e = j->child; e; e = e->next)
            dict_set_s(x, d, e->string ? e->string : "", from_cjson(c, e));
        return d;
    }
    return &V_NONE; /* cJSON_Raw / invalid: nothing a chat template can use */
}

int jinja_render(const jinja_tpl *tpl, const cJSON *vars, const jinja_opts *opts, char **out,
                 coh_err *err)
{
    if (out)
        *out = NULL;
    if (!tpl || !out)
        return coh_fail(err, COH_EINVAL, "jinja_render: NULL template or output");
    if (vars && !cJSON_IsObject(vars))
        return coh_fail(err, COH_EINVAL, "jinja_render: the variables must be a JSON object");
    rctx c;
    memset(&c, 0, sizeof c);
    c.x.err = err;
    c.now = opts ? opts->now : NULL;
    c.max_steps = opts && opts->max_steps > 0 ? opts->max_steps : 10000000L;
    if (setjmp(c.x.jb)) {
        ar_free_all(c.x.head);
        return c.x.code;
    }
    c.root = scope_new(&c, NULL);
    if (vars)
        for (const cJSON *e = vars->child; e; e = e->next)
            if (e->string)
                scope_set(&c, c.root, ar_strndup(&c.x, e->string, strlen(e->string)), from_cjson(&c, e));
    sbuf buf = {0};
    sb_reserve(&c.x, &buf, 0);
    c.out = &buf;
    exec_body(&c, c.root, &tpl->body);
    char *res = malloc(buf.n + 1);
    if (!res) {
        ar_free_all(c.x.head);
        return coh_fail(err, COH_ENOMEM, "out of memory copying a rendered template (%zu bytes)", buf.n);
    }
    memcpy(res, buf.p, buf.n);
    res[buf.n] = 0;
    ar_free_all(c.x.head);
    *out = res;
    return COH_OK;
}

/* ---- public API: compile --------------------------------------------------------------- */

int jinja_compile(const char *src, jinja_tpl **out, coh_err *err)
{
    if (out)
        *out = NULL;
    if (!src || !out)
        return coh_fail(err, COH_EINVAL, "jinja_compile: NULL template or output");
    jx x = {0};
    x.err = err;
    if (setjmp(x.jb)) {
        ar_free_all(x.head);
        return x.code;
    }
    /* newlines normalised to \n, then the single trailing newline dropped
     * (keep_trailing_newline=False) */
    size_t n = strlen(src);
    char *s = ar_alloc(&x, n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (src[i] == '\r') {
            s[k++] = '\n';
            if (i + 1 < n && src[i + 1] == '\n')
                i++;
        } else {
            s[k++] = src[i];
        }
    }
    if (k > 0 && s[k - 1] == '\n')
        k--;
    s[k] = 0;
    lexer L = {.x = &x, .src = s, .n = k};
    lex(&L);
    parser P = {.x = &x, .t = L.toks, .n = L.ntok};
    jinja_tpl *tpl = ar_alloc(&x, sizeof *tpl);
    memset(tpl, 0, sizeof *tpl);
    p_body(&P, &tpl->body, NULL, NULL, 0);
    tpl->arena = x.head;
    *out = tpl;
    return COH_OK;
}

void jinja_free(jinja_tpl *tpl)
{
    if (tpl)
        ar_free_all(tpl->arena); /* tpl itself lives in its arena */
}
