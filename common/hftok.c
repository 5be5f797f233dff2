/* hftok.c - Hugging Face tokenizer.json BPE tokenizers (see hftok.h).
 *
 * Encoding follows the tokenizers library step by step:
 *   1. added tokens with normalized: false are cut out of the raw text (leftmost-longest);
 *   2. every remaining piece is normalized, and added tokens with normalized: true (their
 *      content normalized the same way) are cut out of it;
 *   3. every remaining piece goes through the pre-tokenizer steps (a flat list: nested
 *      Sequences apply each step to every word of the previous one, so flattening them
 *      changes nothing), giving words. When every step only cuts (Split steps, and at most
 *      a last ByteLevel step whose byte mapping can wait), words are offsets into the piece
 *      and each goes through the remaining steps depth first (pre_word), nothing copied;
 *   4. every word goes through BPE: one symbol per character (byte fallback or unk for
 *      characters outside the vocabulary; one per byte, mapped by a table, after a last
 *      ByteLevel step), then the adjacent pair of lowest merge rank, leftmost first, is
 *      merged until none is left. Words of up to BPE_SCAN_MAX symbols find that pair by a
 *      linear scan; longer ones use a binary heap with lazy deletion, as the library does.
 *      A long word is first cut where no merge can join the two sides (seg_break: a whole
 *      SentencePiece text is one word, and falls apart at its U+2581 word starts), and each
 *      segment merged alone, which gives the same ids.
 * Speed without changing results: a word's ids depend only on its bytes and on the step it
 * is at, so short words (and segments) go through a bounded word cache shared by the
 * threads using the handle (lock-free seqlock entries, see wc_get); a hit skips the
 * remaining regex splits and BPE.
 * Decoding maps ids to token strings and runs the decoder steps over the list of strings
 * (each step's decode_chain, in order), then concatenates.
 *
 * Lookups: token strings in an open-addressing hash table; single characters of the Basic
 * Multilingual Plane in a direct table (every byte-level symbol is one); merges in a hash
 * table of 8-byte entries keyed by the pair of ids giving the rank (the merged id is
 * mnew[rank]): BPE probes it at random, so its size is what costs.
 */
#include "hftok.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <cjson/cJSON.h>
#include <pcre2.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#define BPE_SCAN_MAX 48      /* words up to this many symbols merge by linear scan */
#define CP_TABLE 0x10000     /* direct char -> id table for the BMP */
#define SEG_MIN 24           /* words longer than this many bytes are cut into segments */
/* the word cache (see wc_get): 64-byte entries keyed by up to WC_WORD bytes */
#define WC_KEYW 3
#define WC_WORD (8 * WC_KEYW) /* bytes of a cached word */
#define WC_IDS 6              /* ids of a cached result */
#define WC_SIZE 8192          /* entries (a power of 2): 512 KiB per handle */
#define WC_MAXLV 255          /* pre-tokenizer levels that can be cached */
#define CPF_START_BAD 1       /* hft.cpf bits */
#define CPF_END_BAD 2
#define FIELD "tokenizer.json: "

/* ---- small growable buffers ---------------------------------------------------------- */

typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf;

static int sb_reserve(sbuf *b, size_t extra)
{
    if (b->n + extra + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + extra + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p)
        return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static int sb_add(sbuf *b, const void *s, size_t n)
{
    if (sb_reserve(b, n))
        return -1;
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
    return 0;
}

static int sb_adds(sbuf *b, const char *s) { return sb_add(b, s, strlen(s)); }

/* A list of strings kept in one buffer: word i is buf[off[i] .. off[i] + len[i]). */
typedef struct wlist {
    sbuf buf;
    size_t *off, *len;
    size_t n, cap;
} wlist;

static int wl_add(wlist *w, const char *s, size_t n)
{
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 64;
        size_t *o = realloc(w->off, cap * sizeof *o);
        if (!o)
            return -1;
        w->off = o;
        size_t *l = realloc(w->len, cap * sizeof *l);
        if (!l)
            return -1;
        w->len = l;
        w->cap = cap;
    }
    w->off[w->n] = w->buf.n;
    w->len[w->n] = n;
    w->n++;
    return sb_add(&w->buf, s, n);
}

static void wl_clear(wlist *w)
{
    w->n = 0;
    w->buf.n = 0;
}

static void wl_free(wlist *w)
{
    free(w->buf.p);
    free(w->off);
    free(w->len);
}

/* ---- UTF-8 ----------------------------------------------------------------------------- */

/* Decode one character at s (n > 0 bytes left). Returns its length (1..4) with *cp set, or
 * -k when the first k bytes (k >= 1) are the maximal invalid subpart there (the unit that
 * becomes one U+FFFD in a lossy conversion). */
static int utf8_next(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    int need;
    uint32_t v;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        need = 1;
        v = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        v = c & 0x0F;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        v = c & 0x07;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        return -1;
    }
    for (int k = 1; k <= need; k++) {
        if ((size_t)k >= n)
            return -k;
        unsigned b = s[k];
        if (b < lo || b > hi)
            return -k;
        v = (v << 6) | (b & 0x3F);
        lo = 0x80;
        hi = 0xBF;
    }
    *cp = v;
    return need + 1;
}

/* Length of the (valid) UTF-8 character starting with byte c. */
static int utf8_len(unsigned char c) { return c < 0xC0 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }

static int utf8_put(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Append bytes as String::from_utf8_lossy does: each maximal invalid subpart -> U+FFFD. */
static int sb_add_lossy(sbuf *b, const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        uint32_t cp;
        int k = 0;
        while (j < n && (k = utf8_next(s + j, n - j, &cp)) > 0)
            j += (size_t)k;
        if (sb_add(b, s + i, j - i))
            return -1;
        if (j >= n)
            break;
        if (sb_add(b, "\xEF\xBF\xBD", 3))
            return -1;
        i = j + (size_t)(-k);
    }
    return 0;
}

/* memmem without _GNU_SOURCE: first occurrence of p[0..pn) in s[0..n), or NULL. */
static const char *mem_find(const char *s, size_t n, const char *p, size_t pn)
{
    if (pn == 0 || pn > n)
        return pn == 0 ? s : NULL;
    const char *end = s + n - pn;
    for (const char *q = s; q <= end; q++) {
        q = memchr(q, p[0], (size_t)(end - q) + 1);
        if (!q)
            return NULL;
        if (memcmp(q, p, pn) == 0)
            return q;
    }
    return NULL;
}

static int utf8_is_valid(const unsigned char *s, size_t n)
{
    uint32_t cp;
    for (size_t i = 0; i < n;) {
        int k = utf8_next(s + i, n - i, &cp);
        if (k < 0)
            return 0;
        i += (size_t)k;
    }
    return 1;
}

/* Unicode White_Space (Rust's char::is_whitespace, Oniguruma's \s). */
static int is_white_space(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

/* ---- hashing --------------------------------------------------------------------------- */

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL ^ (n * 0x9E3779B97F4A7C15ULL);
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 0x100000001b3ULL;
    return h ^ (h >> 29);
}

static uint64_t hash_u64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

static size_t pow2_at_least(size_t n)
{
    size_t c = 16;
    while (c < n)
        c *= 2;
    return c;
}

/* ---- the tokenizer --------------------------------------------------------------------- */

typedef struct regex {
    pcre2_code *code;
    int jit; /* JIT-compiled: matched with pcre2_jit_match */
} regex;

enum { N_NFC, N_NFD, N_NFKC, N_NFKD, N_PREPEND, N_REPLACE };
typedef struct norm_step {
    int kind;
    char *a, *b; /* Prepend: a = text; Replace: a = pattern, b = content */
} norm_step;

enum { SB_REMOVED, SB_ISOLATED, SB_MERGED_PREV, SB_MERGED_NEXT, SB_CONTIGUOUS };
enum { P_SPLIT, P_BYTELEVEL };
typedef struct pre_step {
    int kind;
    regex re;         /* Split's pattern; ByteLevel's GPT-2 regex when use_regex (else NULL) */
    int behavior;     /* Split */
    int invert;       /* Split */
    int prefix_space; /* ByteLevel add_prefix_space */
} pre_step;

enum { D_BYTELEVEL, D_REPLACE, D_BYTEFALLBACK, D_FUSE, D_STRIP };
typedef struct dec_step {
    int kind;
    char *a, *b;      /* Replace: a = pattern, b = content; Strip: a = content (one char) */
    int start, stop;  /* Strip */
} dec_step;

typedef struct added {
    int id;
    int special, normalized, lstrip, rstrip, single_word;
    char *content; /* as in the file */
    char *pat;     /* what is looked for: content, normalized when normalized is true */
    size_t plen;
} added;

/* A set of added tokens to match: indices into hft.add, grouped by first byte, longest
 * first within a group. */
typedef struct match_set {
    int *idx;
    int first[257]; /* idx[first[c] .. first[c + 1]) start with byte c */
    int n;
} match_set;

typedef struct vent {
    uint32_t off, len; /* string in pool */
    int32_t id;        /* -1: empty slot */
} vent;

struct hft {
    /* vocabulary */
    char *pool;
    size_t pool_len, pool_cap;
    vent *vtab;
    size_t vmask;
    uint32_t *tok_off, *tok_len; /* id -> string in pool; tok_len UINT32_MAX: no token */
    int nids;
    int32_t *cp_id; /* BMP code point -> id of the one-character token, or -1 */
    /* merges: pair (a, b) -> rank in an open-addressing table; rank -> merged id in mnew.
     * The table is what BPE probes most, at random, so it is kept small: one 8-byte entry
     * per slot (a + 1, b and rank packed: MC_* below) when ids and ranks fit, else 16. */
    uint64_t *mtab8;   /* packed entries, 0: empty */
    struct ment {
        uint64_t key;  /* UINT64_MAX: empty */
        uint64_t rank;
    } *mtab;           /* wide entries (only when the packed ones cannot hold the ids) */
    size_t mmask;
    int32_t *mnew;     /* rank -> merged id */
    /* model options */
    int unk_id, fuse_unk, byte_fallback, ignore_merges;
    int byte_id[256]; /* <0xXX> token ids, -1 when missing */
    /* added tokens */
    added *add;
    int nadd;
    match_set raw_set, norm_set;
    regex word_char; /* [\p{Alphabetic}\p{N}_] for single_word, only when needed */
    /* pipeline */
    norm_step *norm;
    int nnorm;
    pre_step *pre;
    int npre;
    dec_step *dec;
    int ndec;
    int has_decoder;
    int template_bos;
    /* ByteLevel tables */
    char bl_enc[256][3];    /* byte -> UTF-8 of its stand-in character, NUL-terminated */
    int16_t bl_dec[0x144]; /* code point -> byte, or -1 */
    /* encoding speed: tables derived at load time, and the word cache */
    int32_t bl_id[256];    /* byte -> id of its ByteLevel character's token, or -1 */
    uint32_t bl_cp[256];   /* byte -> its ByteLevel character */
    int bl_all;            /* every bl_id is >= 0 */
    int span_pre;          /* the pre-tokenizer steps can work on offsets (encode_piece) */
    int bl_last;           /* ... and the last of them is a ByteLevel step */
    uint8_t *nomerge;      /* id -> 1 when the id is in no merge */
    /* BMP code point c -> CPF_START_BAD when some merge (a, b) has b starting with c and a
     * not ending with c; CPF_END_BAD when some merge has a ending with c and b not starting
     * with c (see seg_break) */
    uint8_t *cpf;
    uint32_t unk_f, unk_l; /* first and last code point of the unk token's string */
    struct wcent *wc;      /* WC_SIZE entries, written by encoding threads (atomics only) */
};

typedef struct wcent {
    _Atomic uint64_t seq;  /* odd while a writer fills the entry */
    _Atomic uint64_t meta; /* hash (high 32 bits) | number of ids << 8 | word length */
    _Atomic uint64_t w[WC_KEYW];      /* the word, zero-padded */
    _Atomic uint64_t id[WC_IDS / 2];  /* the ids, two per word */
} wcent;

/* ---- vocabulary table ------------------------------------------------------------------ */

static int pool_add(hft *t, const char *s, size_t n, uint32_t *off)
{
    if (t->pool_len + n + 1 > t->pool_cap) {
        size_t cap = t->pool_cap ? t->pool_cap : 1 << 16;
        while (cap < t->pool_len + n + 1)
            cap *= 2;
        if (cap > UINT32_MAX)
            return -1;
        char *p = realloc(t->pool, cap);
        if (!p)
            return -1;
        t->pool = p;
        t->pool_cap = cap;
    }
    *off = (uint32_t)t->pool_len;
    memcpy(t->pool + t->pool_len, s, n);
    t->pool[t->pool_len + n] = '\0';
    t->pool_len += n + 1;
    return 0;
}

static int vocab_get(const hft *t, const char *s, size_t n)
{
    size_t i = hash_bytes(s, n) & t->vmask;
    for (;;) {
        const vent *e = &t->vtab[i];
        if (e->id < 0)
            return -1;
        if (e->len == n && memcmp(t->pool + e->off, s, n) == 0)
            return e->id;
        i = (i + 1) & t->vmask;
    }
}

/* Insert (or overwrite) s -> id; the string lands in the pool. */
static int vocab_put(hft *t, const char *s, size_t n, int id)
{
    size_t i = hash_bytes(s, n) & t->vmask;
    for (;;) {
        vent *e = &t->vtab[i];
        if (e->id < 0)
            break;
        if (e->len == n && memcmp(t->pool + e->off, s, n) == 0) {
            e->id = id;
            return 0;
        }
        i = (i + 1) & t->vmask;
    }
    uint32_t off;
    if (pool_add(t, s, n, &off))
        return -1;
    t->vtab[i].off = off;
    t->vtab[i].len = (uint32_t)n;
    t->vtab[i].id = id;
    return 0;
}

/* ---- merges table ---------------------------------------------------------------------- */

static inline uint64_t pair_key(int a, int b) { return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b; }

/* Packed merge entries: (a + 1) << MC_A | b << MC_B | rank. */
#define MC_A 44
#define MC_B 24
#define MC_IDS ((1 << 20) - 1)   /* ids below this fit */
#define MC_RANKS (1 << 24)       /* ranks below this fit */

static inline uint64_t merge_hash(uint64_t k) { return hash_u64(k); }

/* The rank of merging (a, b) into *rank (the merged id is mnew[*rank]), or 0 when the pair
 * is not a merge. */
static inline int merge_get(const hft *t, int a, int b, uint32_t *rank)
{
    if (t->mtab8) {
        uint64_t k = ((uint64_t)(uint32_t)(a + 1) << (MC_A - MC_B)) | (uint32_t)b;
        size_t i = merge_hash(k) & t->mmask;
        for (;;) {
            uint64_t e = t->mtab8[i];
            if ((e >> MC_B) == k) {
                *rank = (uint32_t)(e & (MC_RANKS - 1));
                return 1;
            }
            if (!e)
                return 0;
            i = (i + 1) & t->mmask;
        }
    }
    uint64_t k = pair_key(a, b);
    size_t i = merge_hash(k) & t->mmask;
    for (;;) {
        const struct ment *e = &t->mtab[i];
        if (e->key == k) {
            *rank = (uint32_t)e->rank;
            return 1;
        }
        if (e->key == UINT64_MAX)
            return 0;
        i = (i + 1) & t->mmask;
    }
}

static void merge_put(hft *t, int a, int b, uint32_t rank, int new_id)
{
    t->mnew[rank] = new_id;
    if (t->mtab8) {
        uint64_t k = ((uint64_t)(uint32_t)(a + 1) << (MC_A - MC_B)) | (uint32_t)b;
        size_t i = merge_hash(k) & t->mmask;
        while (t->mtab8[i] && (t->mtab8[i] >> MC_B) != k)
            i = (i + 1) & t->mmask;
        /* a later duplicate overrides the earlier rank, as in the library */
        t->mtab8[i] = (k << MC_B) | rank;
        return;
    }
    uint64_t k = pair_key(a, b);
    size_t i = merge_hash(k) & t->mmask;
    while (t->mtab[i].key != UINT64_MAX && t->mtab[i].key != k)
        i = (i + 1) & t->mmask;
    t->mtab[i].key = k; /* a later duplicate overrides the earlier rank, as in the library */
    t->mtab[i].rank = rank;
}

/* ---- regexes (Oniguruma flavour -> PCRE2) --------------------------------------------- */

#define WS_ITEMS                                                                             \
    "\\t-\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}"    \
    "\\x{205F}\\x{3000}"
#define WORD_ITEMS "\\p{L}\\p{M}\\p{Nd}\\p{Pc}"

/* Rewrite an Oniguruma (Ruby syntax) pattern for PCRE2 with PCRE2_UTF | PCRE2_UCP |
 * PCRE2_MULTILINE. Escapes whose meaning differs are spelled out; constructs PCRE2 would
 * read differently and that have no simple rewrite are refused. */
static int onig_to_pcre2(const char *src, size_t n, sbuf *out, const char *where,
                         coh_err *err)
{
    int in_class = 0;
    size_t class_at = 0; /* index just after '[' or '[^' */
    for (size_t i = 0; i < n;) {
        char c = src[i];
        int r = 0;
        if (c == '\\') {
            if (i + 1 >= n)
                return coh_fail(err, COH_EFORMAT, FIELD "%s: regex ends with a backslash", where);
            char d = src[i + 1];
            const char *neg_items = NULL;
            switch (d) {
            case 's':
                r = sb_adds(out, in_class ? WS_ITEMS : "[" WS_ITEMS "]");
                break;
            case 'w':
                r = sb_adds(out, in_class ? WORD_ITEMS : "[" WORD_ITEMS "]");
                break;
            case 'h':
                r = sb_adds(out, in_class ? "0-9a-fA-F" : "[0-9a-fA-F]");
                break;
            case 'S': neg_items = WS_ITEMS; break;
            case 'W': neg_items = WORD_ITEMS; break;
            case 'H': neg_items = "0-9a-fA-F"; break;
            case 'b':
            case 'B':
                if (in_class) {
                    r = sb_add(out, src + i, 2);
                    break;
                }
                return coh_fail(err, COH_EUNSUPPORTED,
                                FIELD "%s: regex word boundary \\%c is not supported "
                                "(Oniguruma and PCRE2 define word characters differently)",
                                where, d);
            case 'u':
                if (i + 6 <= n && strspn(src + i + 2, "0123456789abcdefABCDEF") >= 4) {
                    r = sb_adds(out, "\\x{") || sb_add(out, src + i + 2, 4) || sb_adds(out, "}");
                    i += 6;
                    if (r)
                        return coh_fail(err, COH_ENOMEM, "out of memory");
                    continue;
                }
                return coh_fail(err, COH_EFORMAT,
                                FIELD "%s: regex escape \\u must be followed by 4 hex digits",
                                where);
            default: {
                /* copy the backslash and the whole next character */
                int k = utf8_len((unsigned char)d);
                if (i + 1 + (size_t)k > n)
                    k = (int)(n - i - 1);
                r = sb_add(out, src + i, 1 + (size_t)k);
                i += 1 + (size_t)k;
                if (r)
                    return coh_fail(err, COH_ENOMEM, "out of memory");
                continue;
            }
            }
            if (neg_items) {
                if (in_class)
                    return coh_fail(err, COH_EUNSUPPORTED,
                                    FIELD "%s: regex \\%c inside a character class is not "
                                    "supported",
                                    where, d);
                r = sb_adds(out, "[^") || sb_adds(out, neg_items) || sb_adds(out, "]");
            }
            if (r)
                return coh_fail(err, COH_ENOMEM, "out of memory");
            i += 2;
            continue;
        }
        if (in_class) {
            if (c == '[') {
                if (i + 1 < n && src[i + 1] == ':') {
                    const char *end = NULL;
                    for (size_t j = i + 2; j + 1 < n; j++)
                        if (src[j] == ':' && src[j + 1] == ']') {
                            end = src + j + 2;
                            break;
                        }
                    if (!end)
                        return coh_fail(err, COH_EFORMAT,
                                        FIELD "%s: regex has an unterminated [: class", where);
                    r = sb_add(out, src + i, (size_t)(end - (src + i)));
                    i = (size_t)(end - src);
                    if (r)
                        return coh_fail(err, COH_ENOMEM, "out of memory");
                    continue;
                }
                return coh_fail(err, COH_EUNSUPPORTED,
                                FIELD "%s: nested character classes in a regex are not "
                                "supported",
                                where);
            }
            if (c == '&' && i + 1 < n && src[i + 1] == '&')
                return coh_fail(err, COH_EUNSUPPORTED,
                                FIELD "%s: character class intersection && in a regex is not "
                                "supported",
                                where);
            if (c == ']' && i != class_at)
                in_class = 0;
            if (sb_add(out, &c, 1))
                return coh_fail(err, COH_ENOMEM, "out of memory");
            i++;
            continue;
        }
        if (c == '[') {
            in_class = 1;
            size_t j = i + 1;
            if (j < n && src[j] == '^')
                j++;
            class_at = j;
            if (sb_add(out, src + i, j - i))
                return coh_fail(err, COH_ENOMEM, "out of memory");
            i = j;
            continue;
        }
        if (sb_add(out, &c, 1))
            return coh_fail(err, COH_ENOMEM, "out of memory");
        i++;
    }
    if (in_class)
        return coh_fail(err, COH_EFORMAT, FIELD "%s: regex has an unterminated character class",
                        where);
    return COH_OK;
}

static int regex_compile(regex *re, const char *pat, size_t n, int translate,
                         const char *where, coh_err *err)
{
    sbuf p = {0};
    int rc;
    if (translate) {
        if ((rc = onig_to_pcre2(pat, n, &p, where, err)) != COH_OK) {
            free(p.p);
            return rc;
        }
    } else if (sb_add(&p, pat, n)) {
        free(p.p);
        return coh_fail(err, COH_ENOMEM, "out of memory");
    }
    pcre2_compile_context *cc = pcre2_compile_context_create(NULL);
    if (!cc) {
        free(p.p);
        return coh_fail(err, COH_ENOMEM, "out of memory");
    }
    pcre2_set_newline(cc, PCRE2_NEWLINE_LF);
    int ec;
    PCRE2_SIZE eo;
    re->code = pcre2_compile((PCRE2_SPTR)(p.p ? p.p : ""), p.n,
                             PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE, &ec, &eo, cc);
    pcre2_compile_context_free(cc);
    if (!re->code) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(ec, msg, sizeof msg);
        rc = coh_fail(err, COH_EFORMAT, FIELD "%s: regex \"%.200s\" does not compile: %s "
                      "(at offset %zu of its PCRE2 form)",
                      where, pat, (char *)msg, (size_t)eo);
        free(p.p);
        return rc;
    }
    free(p.p);
    /* Without a JIT (some platforms) the interpreter gives the same matches, slower. */
    re->jit = pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE) == 0;
    return COH_OK;
}

static void regex_free(regex *re)
{
    pcre2_code_free(re->code);
    re->code = NULL;
}

/* Per-call matching state. */
typedef struct matcher {
    pcre2_match_data *md;
} matcher;

/* Find the next match of re in s[0..n) at or after pos. Returns 1 with [*ms, *me), 0 when
 * there is none, or a negative COH code. */
static int regex_find(const regex *re, matcher *m, const char *s, size_t n, size_t pos,
                      size_t *ms, size_t *me, coh_err *err)
{
    int rc = re->jit ? pcre2_jit_match(re->code, (PCRE2_SPTR)s, n, pos, 0, m->md, NULL)
                     : pcre2_match(re->code, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, m->md, NULL);
    if (rc == PCRE2_ERROR_NOMATCH)
        return 0;
    if (rc < 0) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(rc, msg, sizeof msg);
        return coh_fail(err, COH_ERANGE, "pre-tokenizer regex failed on a piece of %zu bytes: %s",
                        n, (char *)msg);
    }
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(m->md);
    *ms = ov[0];
    *me = ov[1];
    return 1;
}

/* ---- JSON helpers ---------------------------------------------------------------------- */

static const cJSON *jget(const cJSON *o, const char *k)
{
    return cJSON_GetObjectItemCaseSensitive(o, k);
}

/* Optional bool: *out unchanged when missing or null. */
static int jbool(const cJSON *o, const char *k, int *out, const char *where, coh_err *err)
{
    const cJSON *v = jget(o, k);
    if (!v || cJSON_IsNull(v))
        return COH_OK;
    if (!cJSON_IsBool(v))
        return coh_fail(err, COH_EFORMAT, FIELD "%s \"%s\" must be true or false", where, k);
    *out = cJSON_IsTrue(v);
    return COH_OK;
}

static int jstr(const cJSON *o, const char *k, const char **out, const char *where,
                coh_err *err)
{
    const cJSON *v = jget(o, k);
    if (!cJSON_IsString(v))
        return coh_fail(err, COH_EFORMAT, FIELD "%s needs a string \"%s\"", where, k);
    *out = v->valuestring;
    return COH_OK;
}

/* Refuse members of o not in the NULL-terminated list known. */
static int jonly(const cJSON *o, const char *const *known, const char *where, coh_err *err)
{
    for (const cJSON *c = o->child; c; c = c->next) {
        int ok = 0;
        for (const char *const *k = known; *k; k++)
            if (c->string && strcmp(c->string, *k) == 0)
                ok = 1;
        if (!ok)
            return coh_fail(err, COH_EUNSUPPORTED,
                            FIELD "%s option \"%.64s\" is not supported", where,
                            c->string ? c->string : "?");
    }
    return COH_OK;
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

/* ---- loading: model -------------------------------------------------------------------- */

static int load_vocab(hft *t, const cJSON *vocab, const cJSON *added_arr, coh_err *err)
{
    if (!cJSON_IsObject(vocab))
        return coh_fail(err, COH_EFORMAT, FIELD "model needs a \"vocab\" object of token -> id");
    size_t nv = 0;
    int max_id = -1;
    for (const cJSON *c = vocab->child; c; c = c->next, nv++) {
        if (!cJSON_IsNumber(c) || c->valuedouble < 0 || c->valuedouble > 1e8 ||
            c->valuedouble != (double)(int)c->valuedouble)
            return coh_fail(err, COH_EFORMAT,
                            FIELD "model.vocab entry \"%.64s\" must map to an id >= 0",
                            c->string ? c->string : "?");
        if (c->valueint > max_id)
            max_id = c->valueint;
    }
    int nadded = cJSON_GetArraySize(added_arr);
    for (const cJSON *a = added_arr ? added_arr->child : NULL; a; a = a->next) {
        const cJSON *id = jget(a, "id");
        if (cJSON_IsNumber(id) && id->valueint > max_id && id->valuedouble <= 1e8)
            max_id = id->valueint;
    }
    t->nids = max_id + 1;
    t->vmask = pow2_at_least((nv + (size_t)nadded) * 2 + 16) - 1;
    t->vtab = malloc((t->vmask + 1) * sizeof *t->vtab);
    t->tok_off = malloc(((size_t)t->nids + 1) * sizeof *t->tok_off);
    t->tok_len = malloc(((size_t)t->nids + 1) * sizeof *t->tok_len);
    t->cp_id = malloc(CP_TABLE * sizeof *t->cp_id);
    if (!t->vtab || !t->tok_off || !t->tok_len || !t->cp_id)
        return coh_fail(err, COH_ENOMEM, "out of memory loading a vocabulary of %zu tokens", nv);
    for (size_t i = 0; i <= t->vmask; i++)
        t->vtab[i].id = -1;
    for (int i = 0; i <= t->nids; i++)
        t->tok_len[i] = UINT32_MAX;
    for (int i = 0; i < CP_TABLE; i++)
        t->cp_id[i] = -1;
    for (const cJSON *c = vocab->child; c; c = c->next) {
        const char *s = c->string;
        size_t n = strlen(s);
        int id = c->valueint;
        if (vocab_get(t, s, n) >= 0)
            return coh_fail(err, COH_EFORMAT, FIELD "model.vocab has token \"%.64s\" twice", s);
        if (vocab_put(t, s, n, id))
            return coh_fail(err, COH_ENOMEM, "out of memory loading the vocabulary");
        if (t->tok_len[id] != UINT32_MAX)
            return coh_fail(err, COH_EFORMAT,
                            FIELD "model.vocab gives id %d to both \"%.64s\" and \"%.64s\"", id,
                            t->pool + t->tok_off[id], s);
        t->tok_off[id] = (uint32_t)(t->pool_len - n - 1);
        t->tok_len[id] = (uint32_t)n;
    }
    return COH_OK;
}

/* Split one merges entry into its two token strings (pointers into the entry or into buf). */
static int merge_parts(const cJSON *m, int i, const char **a, size_t *na, const char **b,
                       size_t *nb, coh_err *err)
{
    if (cJSON_IsString(m)) {
        const char *s = m->valuestring;
        const char *sp = strchr(s, ' ');
        if (!sp || strchr(sp + 1, ' '))
            return coh_fail(err, COH_EFORMAT,
                            FIELD "model.merges[%d] \"%.64s\" must be two tokens separated by "
                            "one space",
                            i, s);
        *a = s;
        *na = (size_t)(sp - s);
        *b = sp + 1;
        *nb = strlen(sp + 1);
        return COH_OK;
    }
    if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) &&
        cJSON_IsString(m->child->next)) {
        *a = m->child->valuestring;
        *na = strlen(*a);
        *b = m->child->next->valuestring;
        *nb = strlen(*b);
        return COH_OK;
    }
    return coh_fail(err, COH_EFORMAT,
                    FIELD "model.merges[%d] must be a string \"a b\" or a pair [\"a\", \"b\"]", i);
}

/* The first and the last code point of s[0..n), UINT32_MAX when there is none. */
static uint32_t first_cp(const char *s, size_t n)
{
    uint32_t cp;
    return n && utf8_next((const unsigned char *)s, n, &cp) > 0 ? cp : UINT32_MAX;
}

static uint32_t last_cp(const char *s, size_t n)
{
    size_t i = n;
    while (i > 0 && ((unsigned char)s[i - 1] & 0xC0) == 0x80)
        i--;
    if (i == 0)
        return UINT32_MAX;
    uint32_t cp;
    int k = utf8_next((const unsigned char *)s + i - 1, n - i + 1, &cp);
    return k > 0 && (size_t)k == n - i + 1 ? cp : UINT32_MAX;
}

static int load_merges(hft *t, const cJSON *merges, coh_err *err)
{
    if (!cJSON_IsArray(merges))
        return coh_fail(err, COH_EFORMAT, FIELD "model needs a \"merges\" array");
    int nm = cJSON_GetArraySize(merges);
    t->mmask = pow2_at_least((size_t)nm * 2 + 16) - 1;
    t->mnew = malloc(((size_t)nm + 1) * sizeof *t->mnew);
    if (!t->mnew)
        return coh_fail(err, COH_ENOMEM, "out of memory loading %d merges", nm);
    if (t->nids < MC_IDS && nm < MC_RANKS) {
        t->mtab8 = calloc(t->mmask + 1, sizeof *t->mtab8);
        if (!t->mtab8)
            return coh_fail(err, COH_ENOMEM, "out of memory loading %d merges", nm);
    } else {
        t->mtab = malloc((t->mmask + 1) * sizeof *t->mtab);
        if (!t->mtab)
            return coh_fail(err, COH_ENOMEM, "out of memory loading %d merges", nm);
        for (size_t i = 0; i <= t->mmask; i++)
            t->mtab[i].key = UINT64_MAX;
    }
    t->nomerge = malloc((size_t)t->nids + 1);
    t->cpf = calloc(CP_TABLE, 1);
    if (!t->nomerge || !t->cpf)
        return coh_fail(err, COH_ENOMEM, "out of memory loading %d merges", nm);
    memset(t->nomerge, 1, (size_t)t->nids + 1);
    sbuf cat = {0};
    int i = 0, rc = COH_OK;
    for (const cJSON *m = merges->child; m; m = m->next, i++) {
        const char *a = NULL, *b = NULL;
        size_t na = 0, nb = 0;
        if ((rc = merge_parts(m, i, &a, &na, &b, &nb, err)) != COH_OK)
            break;
        int ia = vocab_get(t, a, na), ib = vocab_get(t, b, nb);
        if (ia < 0 || ib < 0) {
            rc = coh_fail(err, COH_EFORMAT,
                          FIELD "model.merges[%d] refers to token \"%.*s\", which is not in "
                          "model.vocab",
                          i, (int)(ia < 0 ? na : nb), ia < 0 ? a : b);
            break;
        }
        cat.n = 0;
        if (sb_add(&cat, a, na) || sb_add(&cat, b, nb)) {
            rc = coh_fail(err, COH_ENOMEM, "out of memory");
            break;
        }
        int ic = vocab_get(t, cat.p, cat.n);
        if (ic < 0) {
            rc = coh_fail(err, COH_EFORMAT,
                          FIELD "model.merges[%d] merges into \"%.64s\", which is not in "
                          "model.vocab",
                          i, cat.p);
            break;
        }
        merge_put(t, ia, ib, (uint32_t)i, ic);
        t->nomerge[ia] = t->nomerge[ib] = 0;
        uint32_t l = last_cp(a, na), f = first_cp(b, nb);
        if (l != f) {
            if (f < CP_TABLE)
                t->cpf[f] |= CPF_START_BAD;
            if (l < CP_TABLE)
                t->cpf[l] |= CPF_END_BAD;
        }
    }
    free(cat.p);
    return rc;
}

static int load_model(hft *t, const cJSON *model, const cJSON *added_arr, coh_err *err)
{
    if (!cJSON_IsObject(model))
        return coh_fail(err, COH_EFORMAT, FIELD "\"model\" must be an object");
    const cJSON *type = jget(model, "type");
    if (type && !cJSON_IsString(type))
        return coh_fail(err, COH_EFORMAT, FIELD "model.type must be a string");
    if (type && strcmp(type->valuestring, "BPE") != 0)
        return coh_fail(err, COH_EUNSUPPORTED,
                        FIELD "model type \"%.64s\" is not supported (Cohort reads BPE)",
                        type->valuestring);
    if (!type && !jget(model, "merges"))
        return coh_fail(err, COH_EUNSUPPORTED,
                        FIELD "model has no \"type\" and no \"merges\": only BPE models are "
                        "supported");
    static const char *const known[] = {"type", "dropout", "unk_token",
                                        "continuing_subword_prefix", "end_of_word_suffix",
                                        "fuse_unk", "byte_fallback", "ignore_merges", "vocab",
                                        "merges", NULL};
    int rc = jonly(model, known, "model", err);
    if (rc)
        return rc;
    const cJSON *v = jget(model, "dropout");
    if (v && !cJSON_IsNull(v))
        return coh_fail(err, COH_EUNSUPPORTED,
                        FIELD "model.dropout must be null (BPE dropout is not supported)");
    static const char *const must_null[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        v = jget(model, must_null[i]);
        if (v && !cJSON_IsNull(v) && !(cJSON_IsString(v) && !v->valuestring[0]))
            return coh_fail(err, COH_EUNSUPPORTED,
                            FIELD "model.%s must be null (it is not supported)", must_null[i]);
    }
    if ((rc = jbool(model, "fuse_unk", &t->fuse_unk, "model", err)) ||
        (rc = jbool(model, "byte_fallback", &t->byte_fallback, "model", err)) ||
        (rc = jbool(model, "ignore_merges", &t->ignore_merges, "model", err)))
        return rc;
    if ((rc = load_vocab(t, jget(model, "vocab"), added_arr, err)) ||
        (rc = load_merges(t, jget(model, "merges"), err)))
        return rc;
    t->unk_id = -1;
    v = jget(model, "unk_token");
    if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsString(v))
            return coh_fail(err, COH_EFORMAT, FIELD "model.unk_token must be a string or null");
        t->unk_id = vocab_get(t, v->valuestring, strlen(v->valuestring));
        t->unk_f = first_cp(v->valuestring, strlen(v->valuestring));
        t->unk_l = last_cp(v->valuestring, strlen(v->valuestring));
        if (t->unk_id < 0)
            return coh_fail(err, COH_EFORMAT,
                            FIELD "model.unk_token \"%.64s\" is not in model.vocab",
                            v->valuestring);
    }
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        t->byte_id[b] = vocab_get(t, name, 6);
    }
    /* one-character tokens of the BMP (every id has its string by now) */
    for (int id = 0; id < t->nids; id++) {
        if (t->tok_len[id] == UINT32_MAX || t->tok_len[id] > 3)
            continue;
        uint32_t cp;
        const unsigned char *s = (const unsigned char *)t->pool + t->tok_off[id];
        int k = utf8_next(s, t->tok_len[id], &cp);
        if (k > 0 && (uint32_t)k == t->tok_len[id] && cp < CP_TABLE)
            t->cp_id[cp] = id;
    }
    return COH_OK;
}

/* ---- loading: normalizer, pre-tokenizer, decoder, post-processor ---------------------- */

static int pattern_string(const cJSON *o, const char *where, const char **out, int *is_regex,
                          coh_err *err)
{
    const cJSON *p = jget(o, "pattern");
    if (!cJSON_IsObject(p) || !p->child || p->child->next)
        return coh_fail(err, COH_EFORMAT,
                        FIELD "%s needs \"pattern\": {\"String\": ...} or {\"Regex\": ...}", where);
    if (!cJSON_IsString(p->child))
        return coh_fail(err, COH_EFORMAT, FIELD "%s pattern must hold a string", where);
    if (strcmp(p->child->string, "String") == 0)
        *is_regex = 0;
    else if (strcmp(p->child->string, "Regex") == 0)
        *is_regex = 1;
    else
        return coh_fail(err, COH_EUNSUPPORTED, FIELD "%s pattern kind \"%.64s\" is not supported",
                        where, p->child->string);
    *out = p->child->valuestring;
    return COH_OK;
}

static int add_norm(hft *t, int kind, const char *a, const char *b, coh_err *err)
{
    norm_step *ns = realloc(t->norm, (size_t)(t->nnorm + 1) * sizeof *ns);
    if (!ns)
        return coh_fail(err, COH_ENOMEM, "out of memory");
    t->norm = ns;
    norm_step *s = &t->norm[t->nnorm++];
    memset(s, 0, sizeof *s);
    s->kind = kind;
    if ((a && !(s->a = xstrdup(a))) || (b && !(s->b = xstrdup(b))))
        return coh_fail(err, COH_ENOMEM, "out of memory");
    return COH_OK;
}

static int load_normalizer(hft *t, const cJSON *n, int depth, coh_err *err)
{
    if (!n || cJSON_IsNull(n))
        return COH_OK;
    const char *type = NULL;
    if (!cJSON_IsObject(n) || jstr(n, "type", &type, "normalizer", err))
        return coh_fail(err, COH_EFORMAT, FIELD "normalizer must be null or an object with a "
                        "\"type\"");
    if (depth > 8)
        return coh_fail(err, COH_EFORMAT, FIELD "normalizer Sequences nest too deep");
    int rc;
    if (strcmp(type, "Sequence") == 0) {
        static const char *const k[] = {"type", "normalizers", NULL};
        if ((rc = jonly(n, k, "normalizer Sequence", err)))
            return rc;
        const cJSON *arr = jget(n, "normalizers");
        if (!cJSON_IsArray(arr))
            return coh_fail(err, COH_EFORMAT, FIELD "normalizer Sequence needs a \"normalizers\" "
                            "array");
        for (const cJSON *c = arr->child; c; c = c->next)
            if ((rc = load_normalizer(t, c, depth + 1, err)))
                return rc;
        return COH_OK;
    }
    static const char *const forms[] = {"NFC", "NFD", "NFKC", "NFKD"};
    for (int f = 0; f < 4; f++)
        if (strcmp(type, forms[f]) == 0) {
            static const char *const k[] = {"type", NULL};
            if ((rc = jonly(n, k, "normalizer", err)))
                return rc;
            return add_norm(t, N_NFC + f, NULL, NULL, err);
        }
    if (strcmp(type, "Prepend") == 0) {
        static const char *const k[] = {"type", "prepend", NULL};
        const char *p = NULL;
        if ((rc = jonly(n, k, "normalizer Prepend", err)) ||
            (rc = jstr(n, "prepend", &p, "normalizer Prepend", err)))
            return rc;
        return add_norm(t, N_PREPEND, p, NULL, err);
    }
    if (strcmp(type, "Replace") == 0) {
        static const char *const k[] = {"type", "pattern", "content", NULL};
        const char *p = NULL, *c = NULL;
        int is_re = 0;
        if ((rc = jonly(n, k, "normalizer Replace", err)) ||
            (rc = pattern_string(n, "normalizer Replace", &p, &is_re, err)) ||
            (rc = jstr(n, "content", &c, "normalizer Replace", err)))
            return rc;
        if (is_re)
            return coh_fail(err, COH_EUNSUPPORTED,
                            FIELD "normalizer Replace with a Regex pattern is not supported");
        if (!p[0])
            return coh_fail(err, COH_EFORMAT, FIELD "normalizer Replace has an empty pattern");
        return add_norm(t, N_REPLACE, p, c, err);
    }
    return coh_fail(err, COH_EUNSUPPORTED, FIELD "normalizer type \"%.64s\" is not supported",
                    type);
}

static int add_pre(hft *t, pre_step **out, coh_err *err)
{
    pre_step *ps = realloc(t->pre, (size_t)(t->npre + 1) * sizeof *ps);
    if (!ps)
        return coh_fail(err, COH_ENOMEM, "out of memory");
    t->pre = ps;
    *out = &t->pre[t->npre++];
    memset(*out, 0, sizeof **out);
    return COH_OK;
}

static const char k_gpt2_regex[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static int load_pretok(hft *t, const cJSON *p, int depth, coh_err *err)
{
    if (!p || cJSON_IsNull(p))
        return COH_OK;
    const char *type = NULL;
    if (!cJSON_IsObject(p) || jstr(p, "type", &type, "pre_tokenizer", err))
        return coh_fail(err, COH_EFORMAT, FIELD "pre_tokenizer must be null or an object with a "
                        "\"type\"");
    if (depth > 8)
        return coh_fail(err, COH_EFORMAT, FIELD "pre_tokenizer Sequences nest too deep");
    int rc;
    pre_step *s;
    if (strcmp(type, "Sequence") == 0) {
        static const char *const k[] = {"type", "pretokenizers", NULL};
        if ((rc = jonly(p, k, "pre_tokenizer Sequence", err)))
            return rc;
        const cJSON *arr = jget(p, "pretokenizers");
        if (!cJSON_IsArray(arr))
            return coh_fail(err, COH_EFORMAT, FIELD "pre_tokenizer Sequence needs a "
                            "\"pretokenizers\" array");
        for (const cJSON *c = arr->child; c; c = c->next)
            if ((rc = load_pretok(t, c, depth + 1, err)))
                return rc;
        return COH_OK;
    }
    if (strcmp(type, "ByteLevel") == 0) {
        static const char *const k[] = {"type", "add_prefix_space", "trim_offsets", "use_regex",
                                        NULL};
        int prefix = 1, trim = 1, use_regex = 1; /* the library's defaults */
        if ((rc = jonly(p, k, "pre_tokenizer ByteLevel", err)) ||
            (rc = jbool(p, "add_prefix_space", &prefix, "pre_tokenizer ByteLevel", err)) ||
            (rc = jbool(p, "trim_offsets", &trim, "pre_tokenizer ByteLevel", err)) ||
            (rc = jbool(p, "use_regex", &use_regex, "pre_tokenizer ByteLevel", err)) ||
            (rc = add_pre(t, &s, err)))
            return rc;
        s->kind = P_BYTELEVEL;
        s->prefix_space = prefix;
        if (use_regex)
            return regex_compile(&s->re, k_gpt2_regex, strlen(k_gpt2_regex), 1,
                                 "pre_tokenizer ByteLevel", err);
        return COH_OK;
    }
    if (strcmp(type, "Digits") == 0) {
        static const char *const k[] = {"type", "individual_digits", NULL};
        int individual = 0;
        if ((rc = jonly(p, k, "pre_tokenizer Digits", err)) ||
            (rc = jbool(p, "individual_digits", &individual, "pre_tokenizer Digits", err)) ||
            (rc = add_pre(t, &s, err)))
            return rc;
        /* per-character matches of char::is_numeric (N), Isolated or Contiguous */
        s->kind = P_SPLIT;
        s->behavior = SB_ISOLATED;
        const char *re = individual ? "\\p{N}" : "\\p{N}+";
        return regex_compile(&s->re, re, strlen(re), 0, "pre_tokenizer Digits", err);
    }
    if (strcmp(type, "Split") == 0) {
        static const char *const k[] = {"type", "pattern", "behavior", "invert", NULL};
        const char *pat = NULL, *beh = NULL;
        int is_re = 0, invert = 0;
        if ((rc = jonly(p, k, "pre_tokenizer Split", err)) ||
            (rc = pattern_string(p, "pre_tokenizer Split", &pat, &is_re, err)) ||
            (rc = jstr(p, "behavior", &beh, "pre_tokenizer Split", err)) ||
            (rc = jbool(p, "invert", &invert, "pre_tokenizer Split", err)))
            return rc;
        static const char *const behs[] = {"Removed", "Isolated", "MergedWithPrevious",
                                           "MergedWithNext", "Contiguous"};
        int b = -1;
        for (int i = 0; i < 5; i++)
            if (strcmp(beh, behs[i]) == 0)
                b = i;
        if (b < 0)
            return coh_fail(err, COH_EUNSUPPORTED,
                            FIELD "pre_tokenizer Split behavior \"%.64s\" is not supported",
                            beh);
        if (!pat[0])
            return coh_fail(err, COH_EFORMAT, FIELD "pre_tokenizer Split has an empty pattern");
        if ((rc = add_pre(t, &s, err)))
            return rc;
        s->kind = P_SPLIT;
        s->behavior = b;
        s->invert = invert;
        if (is_re)
            return regex_compile(&s->re, pat, strlen(pat), 1, "pre_tokenizer Split", err);
        /* a literal string: quote it */
        sbuf q = {0};
        int bad = sb_adds(&q, "\\Q");
        for (const char *c = pat; *c && !bad; c++) {
            if (c[0] == '\\' && c[1] == 'E')
                bad = sb_adds(&q, "\\E\\\\E\\Q"), c++;
            else
                bad = sb_add(&q, c, 1);
        }
        bad = bad || sb_adds(&q, "\\E");
        rc = bad ? coh_fail(err, COH_ENOMEM, "out of memory")
                 : regex_compile(&s->re, q.p, q.n, 0, "pre_tokenizer Split", err);
        free(q.p);
        return rc;
    }
    return coh_fail(err, COH_EUNSUPPORTED, FIELD "pre_tokenizer type \"%.64s\" is not supported",
                    type);
}

static int add_dec(hft *t, dec_step **out, coh_err *err)
{
    dec_step *ds = realloc(t->dec, (size_t)(t->ndec + 1) * sizeof *ds);
    if (!ds)
        return coh_fail(err, COH_ENOMEM, "out of memory");
    t->dec = ds;
    *out = &t->dec[t->ndec++];
    memset(*out, 0, sizeof **out);
    return COH_OK;
}

static int jint(const cJSON *o, const char *k, int *out, const char *where, coh_err *err)
{
    const cJSON *v = jget(o, k);
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 1e6 ||
        v->valuedouble != (double)(int)v->valuedouble)
        return coh_fail(err, COH_EFORMAT, FIELD "%s needs a count \"%s\"", where, k);
    *out = v->valueint;
    return COH_OK;
}

static int load_decoder(hft *t, const cJSON *d, int depth, coh_err *err)
{
    if (!d || cJSON_IsNull(d))
        return COH_OK;
    const char *type = NULL;
    if (!cJSON_IsObject(d) || jstr(d, "type", &type, "decoder", err))
        return coh_fail(err, COH_EFORMAT, FIELD "decoder must be null or an object with a "
                        "\"type\"");
    if (depth > 8)
        return coh_fail(err, COH_EFORMAT, FIELD "decoder Sequences nest too deep");
    t->has_decoder = 1;
    int rc;
    dec_step *s;
    if (strcmp(type, "Sequence") == 0) {
        static const char *const k[] = {"type", "decoders", NULL};
        if ((rc = jonly(d, k, "decoder Sequence", err)))
            return rc;
        const cJSON *arr = jget(d, "decoders");
        if (!cJSON_IsArray(arr))
            return coh_fail(err, COH_EFORMAT, FIELD "decoder Sequence needs a \"decoders\" array");
        for (const cJSON *c = arr->child; c; c = c->next)
            if ((rc = load_decoder(t, c, depth + 1, err)))
                return rc;
        return COH_OK;
    }
    if (strcmp(type, "ByteLevel") == 0) {
        static const char *const k[] = {"type", "add_prefix_space", "trim_offsets", "use_regex",
                                        NULL};
        if ((rc = jonly(d, k, "decoder ByteLevel", err)) || (rc = add_dec(t, &s, err)))
            return rc;
        s->kind = D_BYTELEVEL;
        return COH_OK;
    }
    if (strcmp(type, "ByteFallback") == 0 || strcmp(type, "Fuse") == 0) {
        static const char *const k[] = {"type", NULL};
        if ((rc = jonly(d, k, "decoder", err)) || (rc = add_dec(t, &s, err)))
            return rc;
        s->kind = type[0] == 'B' ? D_BYTEFALLBACK : D_FUSE;
        return COH_OK;
    }
    if (strcmp(type, "Replace") == 0) {
        static const char *const k[] = {"type", "pattern", "content", NULL};
        const char *p = NULL, *c = NULL;
        int is_re = 0;
        if ((rc = jonly(d, k, "decoder Replace", err)) ||
            (rc = pattern_string(d, "decoder Replace", &p, &is_re, err)) ||
            (rc = jstr(d, "content", &c, "decoder Replace", err)))
            return rc;
        if (is_re)
            return coh_fail(err, COH_EUNSUPPORTED,
                            FIELD "decoder Replace with a Regex pattern is not supported");
        if (!p[0])
            return coh_fail(err, COH_EFORMAT, FIELD "decoder Replace has an empty pattern");
        if ((rc = add_dec(t, &s, err)))
            return rc;
        s->kind = D_REPLACE;
        if (!(s->a = xstrdup(p)) || !(s->b = xstrdup(c)))
            return coh_fail(err, COH_ENOMEM, "out of memory");
        return COH_OK;
    }
    if (strcmp(type, "Strip") == 0) {
        static const char *const k[] = {"type", "content", "start", "stop", NULL};
        const char *c = NULL;
        int start = 0, stop = 0;
        if ((rc = jonly(d, k, "decoder Strip", err)) ||
            (rc = jstr(d, "content", &c, "decoder Strip", err)) ||
            (rc = jint(d, "start", &start, "decoder Strip", err)) ||
            (rc = jint(d, "stop", &stop, "decoder Strip", err)))
            return rc;
        uint32_t cp;
        size_t cl = strlen(c);
        if (cl == 0 || utf8_next((const unsigned char *)c, cl, &cp) != (int)cl)
            return coh_fail(err, COH_EFORMAT, FIELD "decoder Strip content must be one character");
        if ((rc = add_dec(t, &s, err)))
            return rc;
        s->kind = D_STRIP;
        s->start = start;
        s->stop = stop;
        if (!(s->a = xstrdup(c)))
            return coh_fail(err, COH_ENOMEM, "out of memory");
        return COH_OK;
    }
    return coh_fail(err, COH_EUNSUPPORTED, FIELD "decoder type \"%.64s\" is not supported", type);
}

static int load_post(hft *t, const cJSON *p, coh_err *err)
{
    t->template_bos = -1;
    if (!p || cJSON_IsNull(p))
        return COH_OK;
    const char *type = NULL;
    if (!cJSON_IsObject(p) || jstr(p, "type", &type, "post_processor", err))
        return coh_fail(err, COH_EFORMAT, FIELD "post_processor must be null or an object with a "
                        "\"type\"");
    if (strcmp(type, "ByteLevel") == 0)
        return COH_OK; /* it only adjusts offsets */
    if (strcmp(type, "TemplateProcessing") == 0) {
        const cJSON *single = jget(p, "single");
        const cJSON *first = cJSON_IsArray(single) ? single->child : NULL;
        const cJSON *sp = first ? jget(first, "SpecialToken") : NULL;
        const cJSON *id = sp ? jget(sp, "id") : NULL;
        if (cJSON_IsString(id)) {
            const cJSON *toks = jget(p, "special_tokens");
            const cJSON *e = toks ? jget(toks, id->valuestring) : NULL;
            const cJSON *ids = e ? jget(e, "ids") : NULL;
            if (cJSON_IsArray(ids) && cJSON_GetArraySize(ids) == 1 && cJSON_IsNumber(ids->child))
                t->template_bos = ids->child->valueint;
        }
        return COH_OK;
    }
    return coh_fail(err, COH_EUNSUPPORTED,
                    FIELD "post_processor type \"%.64s\" is not supported", type);
}

/* ---- loading: added tokens ------------------------------------------------------------ */

static int normalize(const hft *t, const char *s, size_t n, sbuf *out, coh_err *err);

static int build_set(hft *t, match_set *ms, int normalized)
{
    ms->n = 0;
    ms->idx = malloc(((size_t)t->nadd + 1) * sizeof *ms->idx);
    if (!ms->idx)
        return -1;
    for (int c = 0; c < 256; c++) {
        ms->first[c] = ms->n;
        /* the tokens starting with byte c, longest first (stable among equals) */
        int start = ms->n;
        for (int i = 0; i < t->nadd; i++) {
            const added *a = &t->add[i];
            if (a->normalized != normalized || a->plen == 0 || (unsigned char)a->pat[0] != c)
                continue;
            int j = ms->n++;
            while (j > start && t->add[ms->idx[j - 1]].plen < a->plen) {
                ms->idx[j] = ms->idx[j - 1];
                j--;
            }
            ms->idx[j] = i;
        }
    }
    ms->first[256] = ms->n;
    return 0;
}

static int load_added(hft *t, const cJSON *arr, coh_err *err)
{
    if (!arr || cJSON_IsNull(arr))
        return COH_OK;
    if (!cJSON_IsArray(arr))
        return coh_fail(err, COH_EFORMAT, FIELD "\"added_tokens\" must be an array");
    int n = cJSON_GetArraySize(arr);
    t->add = calloc((size_t)n + 1, sizeof *t->add);
    if (!t->add)
        return coh_fail(err, COH_ENOMEM, "out of memory");
    int i = 0, rc;
    for (const cJSON *a = arr->child; a; a = a->next, i++) {
        char where[48];
        snprintf(where, sizeof where, "added_tokens[%d]", i);
        static const char *const k[] = {"id", "content", "special", "normalized", "lstrip",
                                        "rstrip", "single_word", NULL};
        if (!cJSON_IsObject(a))
            return coh_fail(err, COH_EFORMAT, FIELD "%s must be an object", where);
        const cJSON *id = jget(a, "id");
        const char *content = NULL;
        if ((rc = jonly(a, k, where, err)) || (rc = jstr(a, "content", &content, where, err)))
            return rc;
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valueint >= t->nids ||
            id->valuedouble != (double)id->valueint)
            return coh_fail(err, COH_EFORMAT, FIELD "%s needs an \"id\" >= 0", where);
        if (!content[0])
            return coh_fail(err, COH_EFORMAT, FIELD "%s has an empty \"content\"", where);
        added *d = &t->add[t->nadd++];
        d->id = id->valueint;
        d->content = xstrdup(content);
        if (!d->content)
            return coh_fail(err, COH_ENOMEM, "out of memory");
        if ((rc = jbool(a, "special", &d->special, where, err)))
            return rc;
        d->normalized = !d->special; /* the library's default */
        if ((rc = jbool(a, "normalized", &d->normalized, where, err)) ||
            (rc = jbool(a, "lstrip", &d->lstrip, where, err)) ||
            (rc = jbool(a, "rstrip", &d->rstrip, where, err)) ||
            (rc = jbool(a, "single_word", &d->single_word, where, err)))
            return rc;
        /* its id now decodes to its content */
        uint32_t off;
        if (pool_add(t, content, strlen(content), &off))
            return coh_fail(err, COH_ENOMEM, "out of memory");
        t->tok_off[d->id] = off;
        t->tok_len[d->id] = (uint32_t)strlen(content);
    }
    /* the normalized form of each normalized token is what is looked for */
    for (i = 0; i < t->nadd; i++) {
        added *d = &t->add[i];
        sbuf nb = {0};
        if (d->normalized) {
            if ((rc = normalize(t, d->content, strlen(d->content), &nb, err)) != COH_OK) {
                free(nb.p);
                return rc;
            }
        } else if (sb_adds(&nb, d->content)) {
            free(nb.p);
            return coh_fail(err, COH_ENOMEM, "out of memory");
        }
        d->pat = nb.p;
        d->plen = nb.n;
        if (!d->pat)
            return coh_fail(err, COH_ENOMEM, "out of memory");
        if (d->single_word && !t->word_char.code &&
            (rc = regex_compile(&t->word_char, "[\\p{Alphabetic}\\p{N}_]", 22, 0,
                                "added_tokens", err)))
            return rc;
    }
    if (build_set(t, &t->raw_set, 0) || build_set(t, &t->norm_set, 1))
        return coh_fail(err, COH_ENOMEM, "out of memory");
    return COH_OK;
}

static void bytelevel_tables(hft *t)
{
    int n = 0;
    for (int b = 0; b < 256; b++) {
        uint32_t cp;
        if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF))
            cp = (uint32_t)b;
        else
            cp = 256 + (uint32_t)n++;
        int k = utf8_put(cp, t->bl_enc[b]);
        t->bl_enc[b][k] = '\0';
    }
    for (int c = 0; c < 0x144; c++)
        t->bl_dec[c] = -1;
    for (int b = 0; b < 256; b++) {
        uint32_t cp;
        utf8_next((const unsigned char *)t->bl_enc[b], strlen(t->bl_enc[b]), &cp);
        t->bl_dec[cp] = (int16_t)b;
    }
}

/* What encoding derives from the loaded tokenizer: ByteLevel ids per byte, whether the
 * pre-tokenizer can run on offsets, and the (empty) word cache. */
static int speed_tables(hft *t, coh_err *err)
{
    t->bl_all = 1;
    for (int b = 0; b < 256; b++) {
        uint32_t cp = first_cp(t->bl_enc[b], strlen(t->bl_enc[b]));
        t->bl_cp[b] = cp;
        t->bl_id[b] = cp < CP_TABLE ? t->cp_id[cp] : -1;
        if (t->bl_id[b] < 0)
            t->bl_all = 0;
    }
    /* Split steps only cut; a ByteLevel step only maps, besides its own regex split, so as
     * the last step (and without a prefix space to add) its mapping can wait for BPE */
    t->span_pre = 1;
    for (int k = 0; k < t->npre; k++)
        if (t->pre[k].kind == P_BYTELEVEL && (k != t->npre - 1 || t->pre[k].prefix_space))
            t->span_pre = 0;
    t->bl_last = t->npre > 0 && t->pre[t->npre - 1].kind == P_BYTELEVEL;
    t->wc = aligned_alloc(64, WC_SIZE * sizeof *t->wc);
    if (!t->wc)
        return coh_fail(err, COH_ENOMEM, "out of memory");
    for (size_t i = 0; i < WC_SIZE; i++) {
        wcent *c = &t->wc[i];
        atomic_init(&c->seq, 0);
        atomic_init(&c->meta, 0); /* length 0: matches no word */
        for (int j = 0; j < WC_KEYW; j++)
            atomic_init(&c->w[j], 0);
        for (int j = 0; j < WC_IDS / 2; j++)
            atomic_init(&c->id[j], 0);
    }
    return COH_OK;
}

/* Explain why text is not JSON: scan it (strings, nesting) up to the parser's stop to
 * name the top-level field it stopped in, and say "truncated" when the text ends inside an
 * unclosed string, object or array. */
static int json_error(const char *s, size_t len, size_t at, coh_err *err)
{
    int depth = 0, in_str = 0, esc = 0;
    size_t str_at = 0, key_at = 0, key_len = 0, last_at = 0, last_len = 0;
    int have_key = 0, have_last = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (in_str) {
            if (esc)
                esc = 0;
            else if (c == '\\')
                esc = 1;
            else if (c == '"') {
                in_str = 0;
                if (depth == 1) {
                    last_at = str_at;
                    last_len = i - str_at;
                    have_last = 1;
                }
            }
            continue;
        }
        if (i >= at && depth >= 0)
            break;
        if (c == '"') {
            in_str = 1;
            str_at = i + 1;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            depth--;
        } else if (c == ':' && depth == 1 && have_last) {
            key_at = last_at;
            key_len = last_len;
            have_key = 1;
        } else if (c == ',' && depth == 1) {
            have_last = 0;
        }
    }
    int truncated = in_str || (depth > 0 && at >= len - (len > 0));
    char field[80] = "";
    if (have_key)
        snprintf(field, sizeof field, " inside \"%.*s\"", (int)(key_len < 60 ? key_len : 60),
                 s + key_at);
    if (truncated)
        return coh_fail(err, COH_EFORMAT,
                        FIELD "not valid JSON: it ends%s before its JSON is complete (%zu bytes; "
                        "the file looks truncated)",
                        field, len);
    return coh_fail(err, COH_EFORMAT, FIELD "not valid JSON: the parser stopped at byte %zu of "
                    "%zu%s", at, len, field);
}

int hft_create(const char *json, size_t len, hft **out, coh_err *err)
{
    if (out)
        *out = NULL;
    if (!json || !out)
        return coh_fail(err, COH_EINVAL, "hft_create: NULL argument");
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root) {
        size_t at = end && end >= json && end <= json + len ? (size_t)(end - json) : len;
        return json_error(json, len, at, err);
    }
    int rc = COH_OK;
    hft *t = calloc(1, sizeof *t);
    if (!t) {
        cJSON_Delete(root);
        return coh_fail(err, COH_ENOMEM, "out of memory");
    }
    bytelevel_tables(t);
    if (!cJSON_IsObject(root)) {
        rc = coh_fail(err, COH_EFORMAT, FIELD "the top level must be an object");
        goto done;
    }
    static const char *const k[] = {"version", "truncation", "padding", "added_tokens",
                                    "normalizer", "pre_tokenizer", "post_processor", "decoder",
                                    "model", NULL};
    if ((rc = jonly(root, k, "top-level", err)))
        goto done;
    static const char *const must_null[] = {"truncation", "padding"};
    for (int i = 0; i < 2; i++) {
        const cJSON *v = jget(root, must_null[i]);
        if (v && !cJSON_IsNull(v)) {
            rc = coh_fail(err, COH_EUNSUPPORTED,
                          FIELD "\"%s\" must be null (%s inside the tokenizer is not supported)",
                          must_null[i], must_null[i]);
            goto done;
        }
    }
    const cJSON *model = jget(root, "model");
    if (!model) {
        rc = coh_fail(err, COH_EFORMAT, FIELD "missing \"model\"");
        goto done;
    }
    const cJSON *added_arr = jget(root, "added_tokens");
    if (added_arr && !cJSON_IsArray(added_arr) && !cJSON_IsNull(added_arr)) {
        rc = coh_fail(err, COH_EFORMAT, FIELD "\"added_tokens\" must be an array");
        goto done;
    }
    if ((rc = load_model(t, model, cJSON_IsArray(added_arr) ? added_arr : NULL, err)) ||
        (rc = load_normalizer(t, jget(root, "normalizer"), 0, err)) ||
        (rc = load_pretok(t, jget(root, "pre_tokenizer"), 0, err)) ||
        (rc = load_decoder(t, jget(root, "decoder"), 0, err)) ||
        (rc = load_post(t, jget(root, "post_processor"), err)) ||
        (rc = load_added(t, added_arr, err)) || (rc = speed_tables(t, err)))
        goto done;
done:
    cJSON_Delete(root);
    if (rc != COH_OK) {
        hft_destroy(t);
        return rc;
    }
    *out = t;
    return COH_OK;
}

void hft_destroy(hft *t)
{
    if (!t)
        return;
    free(t->pool);
    free(t->vtab);
    free(t->tok_off);
    free(t->tok_len);
    free(t->cp_id);
    free(t->mtab);
    free(t->mtab8);
    free(t->mnew);
    free(t->nomerge);
    free(t->cpf);
    free(t->wc);
    for (int i = 0; i < t->nadd; i++) {
        free(t->add[i].content);
        free(t->add[i].pat);
    }
    free(t->add);
    free(t->raw_set.idx);
    free(t->norm_set.idx);
    regex_free(&t->word_char);
    for (int i = 0; i < t->nnorm; i++) {
        free(t->norm[i].a);
        free(t->norm[i].b);
    }
    free(t->norm);
    for (int i = 0; i < t->npre; i++)
        regex_free(&t->pre[i].re);
    free(t->pre);
    for (int i = 0; i < t->ndec; i++) {
        free(t->dec[i].a);
        free(t->dec[i].b);
    }
    free(t->dec);
    free(t);
}

/* ---- queries ---------------------------------------------------------------------------- */

int hft_vocab_size(const hft *t) { return t ? t->nids : 0; }

int hft_token_id(const hft *t, const char *s)
{
    if (!t || !s)
        return -1;
    for (int i = 0; i < t->nadd; i++)
        if (strcmp(t->add[i].content, s) == 0)
            return t->add[i].id;
    return vocab_get(t, s, strlen(s));
}

const char *hft_token_str(const hft *t, int id)
{
    if (!t || id < 0 || id >= t->nids || t->tok_len[id] == UINT32_MAX)
        return NULL;
    return t->pool + t->tok_off[id];
}

int hft_is_special(const hft *t, int id)
{
    for (int i = 0; t && i < t->nadd; i++)
        if (t->add[i].id == id && t->add[i].special)
            return 1;
    return 0;
}

int hft_template_bos(const hft *t) { return t ? t->template_bos : -1; }

/* ---- encoding --------------------------------------------------------------------------- */

typedef struct hnode {
    uint32_t rank;
    int32_t pos, a, b; /* the pair (a, b) at symbols pos and the one after it */
} hnode;

/* A list of word spans [s, e) of one piece (the span pre-tokenizer path). */
typedef struct wspan {
    size_t s, e;
} wspan;
typedef struct splist {
    wspan *p;
    size_t n, cap;
} splist;

static int spl_add(splist *l, size_t s, size_t e)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        wspan *p = realloc(l->p, cap * sizeof *p);
        if (!p)
            return -1;
        l->p = p;
        l->cap = cap;
    }
    l->p[l->n].s = s;
    l->p[l->n].e = e;
    l->n++;
    return 0;
}

/* Per-call scratch. */
typedef struct enc {
    const hft *t;
    int *ids;
    size_t n, cap;
    wlist wa, wb;     /* pre-tokenizer ping-pong, copying path */
    splist *lv;       /* span path: the pieces of the current word of each level */
    splist gt;        /* one word's pieces (copying path) */
    sbuf norm;        /* normalized piece */
    sbuf tmp;
    /* BPE of one word: symbols, then the segments it is cut into (see bpe_word) */
    int *sym, *prv, *nxt;
    size_t *seg, *segb; /* segment k starts at symbol seg[k], byte segb[k] */
    size_t scap, nseg;
    uint32_t plcp;      /* last code point of the previous symbol's token string */
    int pnm;            /* the previous symbol is in no merge */
    hnode *heap;
    size_t hn, hcap;
    struct span { size_t s, e; int m; } *sp;
    size_t nsp, spcap;
    matcher m;
    coh_err *err;
} enc;

static int ids_reserve(enc *e, size_t k)
{
    if (e->n + k <= e->cap)
        return COH_OK;
    size_t cap = e->cap ? e->cap * 2 : 256;
    while (cap < e->n + k)
        cap *= 2;
    int *p = realloc(e->ids, cap * sizeof *p);
    if (!p)
        return coh_fail(e->err, COH_ENOMEM, "out of memory encoding");
    e->ids = p;
    e->cap = cap;
    return COH_OK;
}

static inline int push_id(enc *e, int id)
{
    if (e->n == e->cap && ids_reserve(e, 1))
        return COH_ENOMEM;
    e->ids[e->n++] = id;
    return COH_OK;
}

static int heap_push(enc *e, uint32_t rank, int pos, int a, int b)
{
    if (e->hn == e->hcap) {
        size_t cap = e->hcap ? e->hcap * 2 : 256;
        hnode *h = realloc(e->heap, cap * sizeof *h);
        if (!h)
            return -1;
        e->heap = h;
        e->hcap = cap;
    }
    hnode x = {rank, pos, a, b};
    size_t i = e->hn++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        hnode *q = &e->heap[p];
        if (q->rank < x.rank || (q->rank == x.rank && q->pos < x.pos))
            break;
        e->heap[i] = *q;
        i = p;
    }
    e->heap[i] = x;
    return 0;
}

static hnode heap_pop(enc *e)
{
    hnode top = e->heap[0];
    hnode x = e->heap[--e->hn];
    size_t i = 0, n = e->hn;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && (e->heap[c + 1].rank < e->heap[c].rank ||
                          (e->heap[c + 1].rank == e->heap[c].rank &&
                           e->heap[c + 1].pos < e->heap[c].pos)))
            c++;
        if (x.rank < e->heap[c].rank || (x.rank == e->heap[c].rank && x.pos < e->heap[c].pos))
            break;
        e->heap[i] = e->heap[c];
        i = c;
    }
    if (n)
        e->heap[i] = x;
    return top;
}

/* Room for n symbols (and segments) of one word. */
static int sym_reserve(enc *e, size_t n)
{
    if (n <= e->scap)
        return 0;
    size_t cap = e->scap ? e->scap : 256;
    while (cap < n)
        cap *= 2;
    int *a = realloc(e->sym, cap * sizeof *a);
    if (!a)
        return -1;
    e->sym = a;
    int *b = realloc(e->prv, cap * sizeof *b);
    if (!b)
        return -1;
    e->prv = b;
    int *c = realloc(e->nxt, cap * sizeof *c);
    if (!c)
        return -1;
    e->nxt = c;
    size_t *d = realloc(e->seg, (cap + 1) * sizeof *d);
    if (!d)
        return -1;
    e->seg = d;
    size_t *f = realloc(e->segb, (cap + 1) * sizeof *f);
    if (!f)
        return -1;
    e->segb = f;
    e->scap = cap;
    return 0;
}

/* ---- the word cache ----------------------------------------------------------------------
 * BPE results of short words (and of the segments of long ones), shared by every thread
 * that uses the handle: a direct-mapped table of 64-byte entries, each a seqlock. A reader
 * loads the sequence number, the entry and the sequence number again and uses the entry
 * only when the number is even and unchanged; a writer claims the entry by moving the
 * number from even to odd (skipping the store when another writer holds it) and releases
 * it with the next even number. Every field is an atomic (acquire loads and release stores,
 * which are plain moves on x86), so there is no data race in the C11 sense. A
 * result is a pure function of the word's bytes, so a store can only ever put the same
 * answer back: the cache changes speed, never ids. */

/* The key of word w[0..len) (len <= WC_WORD) at pre-tokenizer level lv (the word goes
 * through steps lv.. and BPE; lv = npre: BPE alone). */
static inline void wc_key(const char *w, size_t len, int lv, uint64_t k[WC_KEYW],
                          uint64_t *meta, size_t *slot)
{
    k[0] = k[1] = k[2] = 0;
    memcpy(k, w, len);
    uint64_t tag = (uint64_t)len | (uint64_t)lv << 16;
    uint64_t h = (k[0] * 0x9E3779B97F4A7C15ULL) ^ (k[1] * 0xC2B2AE3D27D4EB4FULL) ^
                 (k[2] * 0x165667B19E3779F9ULL) ^ tag;
    h ^= h >> 31;
    h *= 0xBF58476D1CE4E5B9ULL;
    h ^= h >> 29;
    *slot = (size_t)h & (WC_SIZE - 1);
    *meta = (h & 0xFFFFFFFF00000000ULL) | tag;
}

/* The cached ids of the word (count returned, ids[] filled), or -1. */
static inline int wc_get(const hft *t, const uint64_t k[WC_KEYW], uint64_t meta, size_t slot,
                         int ids[WC_IDS])
{
    wcent *c = &t->wc[slot];
    uint64_t s1 = atomic_load_explicit(&c->seq, memory_order_acquire);
    if (s1 & 1)
        return -1;
    /* acquire loads of the fields, paired with the writer's release stores: a reader that
     * sees any field of a store in progress then sees the odd (or a newer) sequence number
     * below, so it never uses a torn entry (no fence needed, which ThreadSanitizer also
     * checks) */
    uint64_t m = atomic_load_explicit(&c->meta, memory_order_acquire);
    if ((m & ~(uint64_t)0xFF00) != meta)
        return -1;
    uint64_t w0 = atomic_load_explicit(&c->w[0], memory_order_acquire);
    uint64_t w1 = atomic_load_explicit(&c->w[1], memory_order_acquire);
    uint64_t w2 = atomic_load_explicit(&c->w[2], memory_order_acquire);
    uint64_t v[WC_IDS / 2];
    for (int i = 0; i < WC_IDS / 2; i++)
        v[i] = atomic_load_explicit(&c->id[i], memory_order_acquire);
    if (atomic_load_explicit(&c->seq, memory_order_relaxed) != s1)
        return -1;
    if (w0 != k[0] || w1 != k[1] || w2 != k[2])
        return -1;
    int n = (int)((m >> 8) & 0xFF);
    for (int i = 0; i < n; i++)
        ids[i] = (int)(int32_t)(uint32_t)(v[i / 2] >> (32 * (i & 1)));
    return n;
}

static inline void wc_put(const hft *t, const uint64_t k[WC_KEYW], uint64_t meta, size_t slot,
                          const int *ids, size_t n)
{
    if (n == 0 || n > WC_IDS)
        return;
    wcent *c = &t->wc[slot];
    uint64_t s = atomic_load_explicit(&c->seq, memory_order_relaxed);
    if ((s & 1) || !atomic_compare_exchange_strong_explicit(&c->seq, &s, s + 1,
                                                            memory_order_relaxed,
                                                            memory_order_relaxed))
        return;
    uint64_t v[WC_IDS / 2] = {0};
    for (size_t i = 0; i < n; i++)
        v[i / 2] |= (uint64_t)(uint32_t)ids[i] << (32 * (i & 1));
    /* release stores: the odd sequence number above is visible to any reader that sees one
     * of them (see wc_get) */
    atomic_store_explicit(&c->meta, meta | ((uint64_t)n << 8), memory_order_release);
    for (int i = 0; i < WC_KEYW; i++)
        atomic_store_explicit(&c->w[i], k[i], memory_order_release);
    for (int i = 0; i < WC_IDS / 2; i++)
        atomic_store_explicit(&c->id[i], v[i], memory_order_release);
    atomic_store_explicit(&c->seq, s + 2, memory_order_release);
}

/* Merge the symbols sym[0..ns) of one segment (the adjacent pair of lowest rank, leftmost
 * first, until none is left) and push the resulting ids. */
static int bpe_merge(enc *e, int *sym, size_t ns)
{
    const hft *t = e->t;
    if (ids_reserve(e, ns))
        return COH_ENOMEM;
    if (ns <= BPE_SCAN_MAX) {
        /* linear scan: merge the lowest-rank pair, leftmost first, and compact the array;
         * rk[i] caches the rank of pair (i, i + 1), recomputed only next to a merge */
        uint32_t *rk = (uint32_t *)e->prv;
        for (size_t i = 0; i + 1 < ns; i++)
            if (!merge_get(t, sym[i], sym[i + 1], &rk[i]))
                rk[i] = UINT32_MAX;
        while (ns > 1) {
            uint32_t best = UINT32_MAX;
            size_t at = 0;
            for (size_t i = 0; i + 1 < ns; i++)
                if (rk[i] < best) {
                    best = rk[i];
                    at = i;
                }
            if (best == UINT32_MAX)
                break;
            sym[at] = t->mnew[best];
            size_t tail = ns - at - 2; /* symbols after the merged pair */
            memmove(sym + at + 1, sym + at + 2, tail * sizeof *sym);
            if (tail > 1)
                memmove(rk + at + 1, rk + at + 2, (tail - 1) * sizeof *rk);
            ns--;
            if (at + 1 < ns && !merge_get(t, sym[at], sym[at + 1], &rk[at]))
                rk[at] = UINT32_MAX;
            if (at > 0 && !merge_get(t, sym[at - 1], sym[at], &rk[at - 1]))
                rk[at - 1] = UINT32_MAX;
        }
        memcpy(e->ids + e->n, sym, ns * sizeof *sym);
        e->n += ns;
        return COH_OK;
    }
    /* heap of candidate merges (rank, position, the pair's ids); an entry whose pair is no
     * longer at its position (one side merged meanwhile) is skipped when popped */
    int *prv = e->prv, *nxt = e->nxt;
    e->hn = 0;
    for (size_t i = 0; i < ns; i++) {
        prv[i] = (int)i - 1;
        nxt[i] = i + 1 < ns ? (int)i + 1 : -1;
    }
    for (size_t i = 0; i + 1 < ns; i++) {
        uint32_t r;
        if (merge_get(t, sym[i], sym[i + 1], &r) && heap_push(e, r, (int)i, sym[i], sym[i + 1]))
            goto oom;
    }
    while (e->hn) {
        hnode h = heap_pop(e);
        int p = h.pos, q = nxt[p];
        if (q < 0 || sym[p] != h.a || sym[q] != h.b)
            continue;
        sym[p] = t->mnew[h.rank];
        sym[q] = -1;
        nxt[p] = nxt[q];
        if (nxt[q] >= 0)
            prv[nxt[q]] = p;
        uint32_t r;
        if (prv[p] >= 0 && merge_get(t, sym[prv[p]], sym[p], &r) &&
            heap_push(e, r, prv[p], sym[prv[p]], sym[p]))
            goto oom;
        if (nxt[p] >= 0 && merge_get(t, sym[p], sym[nxt[p]], &r) &&
            heap_push(e, r, p, sym[p], sym[nxt[p]]))
            goto oom;
    }
    for (int i = 0; i >= 0; i = nxt[i])
        e->ids[e->n++] = sym[i];
    return COH_OK;
oom:
    return coh_fail(e->err, COH_ENOMEM, "out of memory encoding");
}

/* Whether no merge can join a symbol whose token string ends with code point l (in no merge
 * when pnm) to one that starts with code point f (in no merge when nm): then BPE of the
 * word is BPE of the two sides, one after the other (see hft.cpf). */
static inline int seg_break(const hft *t, uint32_t l, int pnm, uint32_t f, int nm)
{
    if (pnm || nm)
        return 1;
    if (f == l)
        return 0;
    return (f < CP_TABLE && !(t->cpf[f] & CPF_START_BAD)) ||
           (l < CP_TABLE && !(t->cpf[l] & CPF_END_BAD));
}

/* Append symbol id (token string from code point f to code point l) that starts at byte at
 * of the word; when seg, start a new segment before it where seg_break allows. */
static inline void sym_add(enc *e, size_t *ns, int id, uint32_t f, uint32_t l, size_t at,
                           int seg)
{
    size_t i = (*ns)++;
    e->sym[i] = id;
    if (seg) {
        const hft *t = e->t;
        int nm = t->nomerge[id];
        if (i == 0 || seg_break(t, e->plcp, e->pnm, f, nm)) {
            e->seg[e->nseg] = i;
            e->segb[e->nseg] = at;
            e->nseg++;
        }
        e->plcp = l;
        e->pnm = nm;
    }
}

/* BPE on one word: w[0..len) are the word's characters, or its raw bytes when bl (a last
 * ByteLevel step maps each byte to its character's token, bl_id).
 *
 * Short words are looked up in the word cache first. Long words are cut into segments at
 * the symbol boundaries no merge can cross (seg_break: a SentencePiece text is one word,
 * and its merges never join a symbol to a following one that starts with U+2581 "▁", so
 * it falls apart into its space-separated words); each segment is merged on its own,
 * which gives the same ids (a merge inside one segment never depends on another), and
 * short segments go through the cache as words do. */
static int bpe_word(enc *e, const char *w, size_t len, int bl, int nocache)
{
    const hft *t = e->t;
    if (len == 0)
        return COH_OK;
    uint64_t key[WC_KEYW], meta = 0;
    size_t slot = 0;
    int lv = t->npre; /* the cache level of BPE alone */
    int cached = !nocache && len <= WC_WORD && lv <= WC_MAXLV;
    if (cached) {
        int got[WC_IDS];
        wc_key(w, len, lv, key, &meta, &slot);
        int k = wc_get(t, key, meta, slot, got);
        if (k > 0) {
            if (ids_reserve(e, (size_t)k))
                return COH_ENOMEM;
            for (int i = 0; i < k; i++)
                e->ids[e->n++] = got[i];
            return COH_OK;
        }
    }
    const unsigned char *s = (const unsigned char *)w;
    size_t n0 = e->n;
    if (bl && !t->bl_all) {
        /* a byte whose character has no token: map the word and take the general path
         * (segments then are not cached: their bytes are mapped ones, not raw) */
        sbuf *b = &e->tmp;
        b->n = 0;
        for (size_t i = 0; i < len; i++)
            if (sb_adds(b, t->bl_enc[s[i]]))
                return coh_fail(e->err, COH_ENOMEM, "out of memory encoding");
        w = b->p;
        s = (const unsigned char *)w;
        len = b->n;
        bl = -1;
    }
    if (t->ignore_merges) {
        const char *m = w;
        size_t mn = len;
        if (bl > 0) {
            sbuf *b = &e->tmp;
            b->n = 0;
            for (size_t i = 0; i < len; i++)
                if (sb_adds(b, t->bl_enc[s[i]]))
                    return coh_fail(e->err, COH_ENOMEM, "out of memory encoding");
            m = b->p;
            mn = b->n;
        }
        int id = vocab_get(t, m, mn);
        if (id >= 0) {
            if (cached)
                wc_put(t, key, meta, slot, &id, 1);
            return push_id(e, id);
        }
    }
    if (sym_reserve(e, len + 1))
        goto oom;
    int seg = len > SEG_MIN;
    e->nseg = 0;
    size_t ns = 0;
    if (bl > 0) {
        for (size_t i = 0; i < len; i++)
            sym_add(e, &ns, t->bl_id[s[i]], t->bl_cp[s[i]], t->bl_cp[s[i]], i, seg);
    } else {
        int unk_pending = 0, reorder = 0;
        size_t unk_at = 0;
        for (size_t i = 0; i < len;) {
            uint32_t cp;
            int k = utf8_next(s + i, len - i, &cp);
            if (k <= 0) /* cannot happen: input is validated and pieces are cut at characters */
                return coh_fail(e->err, COH_EINVAL, "internal error: a word is not valid UTF-8");
            int id = cp < CP_TABLE ? t->cp_id[cp] : vocab_get(t, w + i, (size_t)k);
            if (id >= 0) {
                if (unk_pending)
                    sym_add(e, &ns, t->unk_id, t->unk_f, t->unk_l, unk_at, seg);
                unk_pending = 0;
                sym_add(e, &ns, id, cp, cp, i, seg);
            } else {
                int done = 0;
                if (t->byte_fallback) {
                    int all = 1;
                    for (int j = 0; j < k; j++)
                        if (t->byte_id[s[i + (size_t)j]] < 0)
                            all = 0;
                    if (all) {
                        /* as the library does, a pending unk stays pending (it lands after
                         * these bytes): symbols then are out of byte order, no segments */
                        if (unk_pending)
                            reorder = 1;
                        for (int j = 0; j < k; j++)
                            sym_add(e, &ns, t->byte_id[s[i + (size_t)j]], '<', '>',
                                    i + (size_t)j, seg);
                        done = 1;
                    }
                }
                if (!done && t->unk_id >= 0) {
                    if (unk_pending && !t->fuse_unk)
                        sym_add(e, &ns, t->unk_id, t->unk_f, t->unk_l, unk_at, seg);
                    if (!unk_pending || !t->fuse_unk)
                        unk_at = i;
                    unk_pending = 1;
                }
            }
            i += (size_t)k;
        }
        if (unk_pending)
            sym_add(e, &ns, t->unk_id, t->unk_f, t->unk_l, unk_at, seg);
        if (reorder)
            e->nseg = 0;
    }
    if (ns == 0)
        return COH_OK;
    if (!seg || e->nseg <= 1) {
        int rc = bpe_merge(e, e->sym, ns);
        if (rc == COH_OK && cached)
            wc_put(t, key, meta, slot, e->ids + n0, e->n - n0);
        return rc;
    }
    /* segments: [seg[k], seg[k + 1]) symbols, [segb[k], segb[k + 1]) bytes */
    e->seg[e->nseg] = ns;
    e->segb[e->nseg] = len;
    int cache_seg = !t->ignore_merges && bl >= 0 && lv <= WC_MAXLV;
    for (size_t k = 0; k < e->nseg; k++) {
        size_t a = e->seg[k], z = e->seg[k + 1];
        size_t ba = e->segb[k], bz = e->segb[k + 1];
        if (z - a == 1) {
            if (push_id(e, e->sym[a]))
                return COH_ENOMEM;
            continue;
        }
        int c = cache_seg && bz - ba <= WC_WORD;
        if (c) {
            int got[WC_IDS];
            wc_key(w + ba, bz - ba, lv, key, &meta, &slot);
            int g = wc_get(t, key, meta, slot, got);
            if (g > 0) {
                if (ids_reserve(e, (size_t)g))
                    return COH_ENOMEM;
                for (int i = 0; i < g; i++)
                    e->ids[e->n++] = got[i];
                continue;
            }
        }
        size_t m0 = e->n;
        int rc = bpe_merge(e, e->sym + a, z - a);
        if (rc)
            return rc;
        if (c)
            wc_put(t, key, meta, slot, e->ids + m0, e->n - m0);
    }
    return COH_OK;
oom:
    return coh_fail(e->err, COH_ENOMEM, "out of memory encoding");
}

static int add_span(enc *e, size_t s, size_t en, int m)
{
    if (e->nsp == e->spcap) {
        size_t cap = e->spcap ? e->spcap * 2 : 64;
        struct span *p = realloc(e->sp, cap * sizeof *p);
        if (!p)
            return -1;
        e->sp = p;
        e->spcap = cap;
    }
    e->sp[e->nsp].s = s;
    e->sp[e->nsp].e = en;
    e->sp[e->nsp].m = m;
    e->nsp++;
    return 0;
}

/* All matches of re in s[0..n) with the gaps between them, as the library's find_matches
 * (an empty match right after the previous match is skipped; after an empty match the
 * search moves one character on). The search stops at n: an empty match there could only
 * add an empty span at the end, which no split behavior turns into a piece. */
static int find_spans(enc *e, const regex *re, const char *s, size_t n)
{
    e->nsp = 0;
    size_t pos = 0, prev = 0;
    long last_end = -1;
    while (pos < n) {
        size_t ms, me;
        int rc = regex_find(re, &e->m, s, n, pos, &ms, &me, e->err);
        if (rc < 0)
            return rc;
        if (rc == 0)
            break;
        if (ms == me) {
            size_t step = me < n ? (size_t)utf8_len((unsigned char)s[me]) : 1;
            if ((long)me == last_end) {
                pos = me + step;
                continue;
            }
            pos = me + step;
        } else {
            pos = me;
        }
        if (ms > prev && add_span(e, prev, ms, 0))
            goto oom;
        if (add_span(e, ms, me, 1))
            goto oom;
        prev = me;
        last_end = (long)me;
    }
    if (prev < n && add_span(e, prev, n, 0))
        goto oom;
    return COH_OK;
oom:
    return coh_fail(e->err, COH_ENOMEM, "out of memory encoding");
}

/* Split one word s[0..n) by a Split step, appending its pieces (offsets plus base) to out. */
static int split_spans(enc *e, const pre_step *ps, const char *s, size_t n, size_t base,
                       splist *out)
{
    /* every behavior but Removed cuts a word into pieces that cover it: one character stays
     * as it is, whatever the regex says */
    if (ps->behavior != SB_REMOVED && (size_t)utf8_len((unsigned char)s[0]) == n)
        return spl_add(out, base, base + n) ? coh_fail(e->err, COH_ENOMEM, "out of memory "
                                                       "encoding")
                                            : COH_OK;
    int rc = find_spans(e, &ps->re, s, n);
    if (rc)
        return rc;
    struct span *sp = e->sp;
    size_t k = e->nsp;
    if (ps->invert)
        for (size_t i = 0; i < k; i++)
            sp[i].m = !sp[i].m;
    /* apply the behavior in place: the result is a list of kept spans (m = 0 keep) */
    size_t w = 0;
    switch (ps->behavior) {
    case SB_ISOLATED:
        w = k;
        for (size_t i = 0; i < k; i++)
            sp[i].m = 0;
        break;
    case SB_REMOVED:
        for (size_t i = 0; i < k; i++)
            if (!sp[i].m)
                sp[w++] = sp[i];
        break;
    case SB_MERGED_PREV: {
        int prev_match = 0;
        for (size_t i = 0; i < k; i++) {
            int m = sp[i].m;
            if (m && !prev_match && w > 0)
                sp[w - 1].e = sp[i].e;
            else
                sp[w++] = sp[i];
            prev_match = m;
        }
        break;
    }
    case SB_MERGED_NEXT: {
        /* walk backwards, merging each match into the piece after it */
        int prev_match = 0;
        size_t r = k; /* kept spans grow downwards from the end */
        for (size_t i = k; i-- > 0;) {
            int m = sp[i].m;
            if (m && !prev_match && r < k)
                sp[r].s = sp[i].s;
            else
                sp[--r] = sp[i];
            prev_match = m;
        }
        memmove(sp, sp + r, (k - r) * sizeof *sp);
        w = k - r;
        break;
    }
    case SB_CONTIGUOUS: {
        int prev_match = 0;
        for (size_t i = 0; i < k; i++) {
            int m = sp[i].m;
            if (m == prev_match && w > 0)
                sp[w - 1].e = sp[i].e;
            else
                sp[w++] = sp[i];
            prev_match = m;
        }
        break;
    }
    }
    for (size_t i = 0; i < w; i++)
        if (sp[i].e > sp[i].s && spl_add(out, base + sp[i].s, base + sp[i].e))
            return coh_fail(e->err, COH_ENOMEM, "out of memory encoding");
    return COH_OK;
}

/* Split one word by a Split step, appending the pieces (copied) to out. */
static int split_word(enc *e, const pre_step *ps, const char *s, size_t n, wlist *out)
{
    e->gt.n = 0;
    int rc = split_spans(e, ps, s, n, 0, &e->gt);
    if (rc)
        return rc;
    for (size_t i = 0; i < e->gt.n; i++)
        if (wl_add(out, s + e->gt.p[i].s, e->gt.p[i].e - e->gt.p[i].s))
            return coh_fail(e->err, COH_ENOMEM, "out of memory encoding");
    return COH_OK;
}

static int bytelevel_word(enc *e, const pre_step *ps, const char *s, size_t n, wlist *out)
{
    const hft *t = e->t;
    sbuf *b = &e->tmp;
    b->n = 0;
    if (ps->prefix_space && (n == 0 || s[0] != ' ') && sb_add(b, " ", 1))
        goto oom;
    if (sb_add(b, s, n))
        goto oom;
    /* e->tmp is reused by nothing below: the spans index into it */
    const char *src = b->p;
    size_t sn = b->n;
    if (ps->re.code) {
        int rc = find_spans(e, &ps->re, src, sn);
        if (rc)
            return rc;
    } else {
        e->nsp = 0;
        if (add_span(e, 0, sn, 0))
            goto oom;
    }
    for (size_t i = 0; i < e->nsp; i++) {
        size_t a = e->sp[i].s, z = e->sp[i].e;
        if (z <= a)
            continue;
        if (wl_add(out, "", 0))
            goto oom;
        size_t need = 2 * (z - a);
        if (sb_reserve(&out->buf, need))
            goto oom;
        char *dst = out->buf.p + out->buf.n;
        size_t wn = 0;
        for (size_t j = a; j < z; j++) {
            const char *m = t->bl_enc[(unsigned char)src[j]];
            dst[wn++] = m[0];
            if (m[1])
                dst[wn++] = m[1];
        }
        out->buf.n += wn;
        out->buf.p[out->buf.n] = '\0';
        out->len[out->n - 1] = wn;
    }
    return COH_OK;
oom:
    return coh_fail(e->err, COH_ENOMEM, "out of memory encoding");
}

/* The span path of the pre-tokenizer (span_pre): the word s[a..z) of level k (the pieces
 * step k gets; k = 0: the whole normalized piece) through steps k.. and BPE, depth first so
 * that ids come out in order. Every step cuts words into pieces of the piece, so words
 * are offsets (nothing is copied); a last ByteLevel step's mapping is left to bpe_word
 * (bl_id). The result of a word depends on its bytes and level alone, so the first level
 * at which a word is short enough goes through the word cache: a hit skips the remaining
 * regex splits as well as BPE (looked: an ancestor of this word was looked up already,
 * and its entry covers this one). */
static int pre_word(enc *e, const char *s, size_t a, size_t z, int k, int looked)
{
    const hft *t = e->t;
    uint64_t key[WC_KEYW], meta = 0;
    size_t slot = 0;
    int cached = 0;
    size_t n0 = e->n;
    for (;;) {
        while (k < t->npre && t->pre[k].kind == P_BYTELEVEL && !t->pre[k].re.code)
            k++; /* the mapping alone: pieces unchanged */
        if (k == t->npre)
            break;
        if (!looked && z - a <= WC_WORD && k <= WC_MAXLV) {
            int got[WC_IDS];
            wc_key(s + a, z - a, k, key, &meta, &slot);
            int g = wc_get(t, key, meta, slot, got);
            if (g > 0) {
                if (ids_reserve(e, (size_t)g))
                    return COH_ENOMEM;
                for (int i = 0; i < g; i++)
                    e->ids[e->n++] = got[i];
                return COH_OK;
            }
            looked = cached = 1;
        }
        const pre_step *ps = &t->pre[k];
        splist *out = &e->lv[k];
        out->n = 0;
        int rc;
        if (ps->kind == P_SPLIT) {
            rc = split_spans(e, ps, s + a, z - a, a, out);
        } else {
            rc = find_spans(e, &ps->re, s + a, z - a);
            for (size_t j = 0; rc == COH_OK && j < e->nsp; j++)
                if (e->sp[j].e > e->sp[j].s && spl_add(out, a + e->sp[j].s, a + e->sp[j].e))
                    rc = coh_fail(e->err, COH_ENOMEM, "out of memory encoding");
        }
        if (rc)
            return rc;
        k++;
        if (out->n == 1 && out->p[0].s == a && out->p[0].e == z)
            continue; /* the step left the word as it was */
        for (size_t i = 0; i < out->n; i++)
            if ((rc = pre_word(e, s, out->p[i].s, out->p[i].e, k, looked)))
                return rc;
        goto done;
    }
    {
        int rc = bpe_word(e, s + a, z - a, t->bl_last, looked);
        if (rc)
            return rc;
    }
done:
    if (cached)
        wc_put(t, key, meta, slot, e->ids + n0, e->n - n0);
    return COH_OK;
}

/* Pre-tokenize and BPE one normalized piece. */
static int encode_piece(enc *e, const char *s, size_t n)
{
    const hft *t = e->t;
    if (n == 0)
        return COH_OK;
    if (t->npre == 0)
        return bpe_word(e, s, n, 0, 0);
    if (t->span_pre)
        return pre_word(e, s, 0, n, 0, 0);
    wlist *in = &e->wa, *out = &e->wb;
    wl_clear(in);
    if (wl_add(in, s, n))
        return coh_fail(e->err, COH_ENOMEM, "out of memory encoding");
    for (int k = 0; k < t->npre; k++) {
        const pre_step *ps = &t->pre[k];
        wl_clear(out);
        for (size_t i = 0; i < in->n; i++) {
            const char *w = in->buf.p + in->off[i];
            int rc = ps->kind == P_SPLIT ? split_word(e, ps, w, in->len[i], out)
                                         : bytelevel_word(e, ps, w, in->len[i], out);
            if (rc)
                return rc;
        }
        wlist *x = in;
        in = out;
        out = x;
    }
    for (size_t i = 0; i < in->n; i++) {
        int rc = bpe_word(e, in->buf.p + in->off[i], in->len[i], 0, 0);
        if (rc)
            return rc;
    }
    return COH_OK;
}

/* Apply the normalizer steps to s[0..n) into out (replaced). */
static int normalize(const hft *t, const char *s, size_t n, sbuf *out, coh_err *err)
{
    out->n = 0;
    if (sb_add(out, s, n))
        goto oom;
    sbuf tmp = {0};
    for (int k = 0; k < t->nnorm; k++) {
        const norm_step *ns = &t->norm[k];
        tmp.n = 0;
        switch (ns->kind) {
        case N_PREPEND:
            if (out->n == 0)
                continue;
            if (sb_adds(&tmp, ns->a) || sb_add(&tmp, out->p, out->n))
                goto oom_tmp;
            break;
        case N_REPLACE: {
            size_t pl = strlen(ns->a);
            const char *p = out->p, *end = out->p + out->n;
            while (p < end) {
                const char *hit = mem_find(p, (size_t)(end - p), ns->a, pl);
                if (!hit) {
                    if (sb_add(&tmp, p, (size_t)(end - p)))
                        goto oom_tmp;
                    break;
                }
                if (sb_add(&tmp, p, (size_t)(hit - p)) || sb_adds(&tmp, ns->b))
                    goto oom_tmp;
                p = hit + pl;
            }
            break;
        }
        default: {
            int ascii = 1;
            for (size_t i = 0; i < out->n && ascii; i++)
                if ((unsigned char)out->p[i] >= 0x80)
                    ascii = 0;
            if (ascii || out->n == 0) /* ASCII is invariant under every normalization form */
                continue;
            utf8proc_option_t opt = UTF8PROC_STABLE;
            opt |= (ns->kind == N_NFC || ns->kind == N_NFKC) ? UTF8PROC_COMPOSE
                                                             : UTF8PROC_DECOMPOSE;
            if (ns->kind == N_NFKC || ns->kind == N_NFKD)
                opt |= UTF8PROC_COMPAT;
            utf8proc_uint8_t *r = NULL;
            utf8proc_ssize_t rl = utf8proc_map((const utf8proc_uint8_t *)out->p,
                                               (utf8proc_ssize_t)out->n, &r, opt);
            if (rl < 0) {
                free(tmp.p);
                return coh_fail(err, COH_EINVAL, "normalizing text failed: %s",
                                utf8proc_errmsg(rl));
            }
            int bad = sb_add(&tmp, r, (size_t)rl);
            free(r);
            if (bad)
                goto oom_tmp;
            break;
        }
        }
        sbuf x = *out;
        *out = tmp;
        tmp = x;
    }
    free(tmp.p);
    return COH_OK;
oom_tmp:
    free(tmp.p);
oom:
    return coh_fail(err, COH_ENOMEM, "out of memory normalizing text");
}

/* Leftmost-longest search for the tokens of set in s[from..n); returns the index into
 * t->add and the match [*ms, *me), or -1. */
static int find_added(const hft *t, const match_set *set, const char *s, size_t n,
                      size_t from, size_t *ms)
{
    if (set->n == 0)
        return -1;
    for (size_t i = from; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        for (int j = set->first[c]; j < set->first[c + 1]; j++) {
            const added *a = &t->add[set->idx[j]];
            if (a->plen <= n - i && memcmp(s + i, a->pat, a->plen) == 0) {
                *ms = i;
                return set->idx[j];
            }
        }
    }
    return -1;
}

static int is_word_char(const hft *t, enc *e, const char *s, size_t n)
{
    size_t ms, me;
    int rc = regex_find(&t->word_char, &e->m, s, n, 0, &ms, &me, NULL);
    return rc == 1 && ms == 0;
}

/* The added-token split of s[0..n): calls piece() for text between tokens and pushes the
 * ids of tokens (the library's find_matches with lstrip/rstrip/single_word). */
static int split_added(enc *e, const match_set *set, const char *s, size_t n,
                       int (*piece)(enc *, const char *, size_t))
{
    const hft *t = e->t;
    size_t start_offset = 0, from = 0;
    int rc;
    while (from < n) {
        size_t ms;
        int ai = find_added(t, set, s, n, from, &ms);
        if (ai < 0)
            break;
        const added *a = &t->add[ai];
        size_t start = ms, stop = ms + a->plen;
        from = stop;
        if (a->single_word) {
            int before = 0, after = 0;
            if (start > 0) {
                size_t b = start - 1;
                while (b > 0 && ((unsigned char)s[b] & 0xC0) == 0x80)
                    b--;
                before = is_word_char(t, e, s + b, start - b);
            }
            if (stop < n)
                after = is_word_char(t, e, s + stop, (size_t)utf8_len((unsigned char)s[stop]));
            if (before || after)
                continue;
        }
        if (start < start_offset)
            continue; /* overlaps the whitespace an rstrip token took */
        if (a->lstrip) {
            size_t b = start;
            while (b > 0) {
                size_t c = b - 1;
                while (c > 0 && ((unsigned char)s[c] & 0xC0) == 0x80)
                    c--;
                uint32_t cp;
                utf8_next((const unsigned char *)s + c, b - c, &cp);
                if (!is_white_space(cp))
                    break;
                b = c;
            }
            start = b > start_offset ? b : start_offset;
        }
        if (a->rstrip) {
            while (stop < n) {
                uint32_t cp;
                int k = utf8_next((const unsigned char *)s + stop, n - stop, &cp);
                if (k <= 0 || !is_white_space(cp))
                    break;
                stop += (size_t)k;
            }
        }
        if (start > start_offset && (rc = piece(e, s + start_offset, start - start_offset)))
            return rc;
        if ((rc = push_id(e, a->id)))
            return rc;
        start_offset = stop;
    }
    if (start_offset < n && (rc = piece(e, s + start_offset, n - start_offset)))
        return rc;
    return COH_OK;
}

/* A piece of raw text between non-normalized added tokens: normalize it, then split out
 * the normalized added tokens. */
static int raw_piece(enc *e, const char *s, size_t n)
{
    int rc = normalize(e->t, s, n, &e->norm, e->err);
    if (rc)
        return rc;
    /* encode_piece never touches e->norm, so its text stays put while it is split */
    return split_added(e, &e->t->norm_set, e->norm.p, e->norm.n, encode_piece);
}

int hft_encode(const hft *t, const char *text, size_t len, int **ids, size_t *n,
               coh_err *err)
{
    if (ids)
        *ids = NULL;
    if (n)
        *n = 0;
    if (!t || !ids || !n || (!text && len))
        return coh_fail(err, COH_EINVAL, "hft_encode: NULL argument");
    const unsigned char *u = (const unsigned char *)text;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        if (i + 8 <= len) {
            uint64_t v;
            memcpy(&v, u + i, 8);
            if (!(v & 0x8080808080808080ULL)) {
                i += 8;
                continue;
            }
        }
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        int k = utf8_next(u + i, len - i, &cp);
        if (k < 0)
            return coh_fail(err, COH_EINVAL,
                            "text is not valid UTF-8: byte 0x%02x at offset %zu does not start "
                            "a valid character (fix or drop that byte)",
                            u[i], i);
        i += (size_t)k;
    }
    enc e = {.t = t, .err = err};
    e.m.md = pcre2_match_data_create(1, NULL);
    if (!e.m.md)
        return coh_fail(err, COH_ENOMEM, "out of memory encoding");
    int rc = len ? ids_reserve(&e, len / 4 + 16) : COH_OK;
    if (rc == COH_OK && len && t->span_pre && t->npre > 0 &&
        !(e.lv = calloc((size_t)t->npre, sizeof *e.lv)))
        rc = coh_fail(err, COH_ENOMEM, "out of memory encoding");
    if (rc == COH_OK && len)
        rc = split_added(&e, &t->raw_set, text, len, raw_piece);
    pcre2_match_data_free(e.m.md);
    wl_free(&e.wa);
    wl_free(&e.wb);
    for (int k = 0; e.lv && k < t->npre; k++)
        free(e.lv[k].p);
    free(e.lv);
    free(e.gt.p);
    free(e.norm.p);
    free(e.tmp.p);
    free(e.sym);
    free(e.prv);
    free(e.nxt);
    free(e.seg);
    free(e.segb);
    free(e.heap);
    free(e.sp);
    if (rc != COH_OK) {
        free(e.ids);
        return rc;
    }
    *ids = e.ids;
    *n = e.n;
    return COH_OK;
}

/* ---- decoding --------------------------------------------------------------------------- */

/* The token list the decoder steps work on. */
typedef struct tlist {
    char **s;
    size_t *len;
    size_t n;
} tlist;

static void tl_free(tlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->s[i]);
    free(l->s);
    free(l->len);
    l->s = NULL;
    l->len = NULL;
    l->n = 0;
}

/* Replace l by the single string b (taken over). */
static int tl_set_one(tlist *l, sbuf *b)
{
    tl_free(l);
    l->s = malloc(sizeof *l->s);
    l->len = malloc(sizeof *l->len);
    if (!l->s || !l->len) {
        free(b->p);
        return -1;
    }
    if (!b->p && sb_add(b, "", 0))
        return -1;
    l->s[0] = b->p;
    l->len[0] = b->n;
    l->n = 1;
    *b = (sbuf){0};
    return 0;
}

static int byte_token(const char *s, size_t n, unsigned char *b)
{
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>')
        return 0;
    unsigned v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
              : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0)
            return 0;
        v = v * 16 + (unsigned)d;
    }
    *b = (unsigned char)v;
    return 1;
}

static int dec_step_run(const hft *t, const dec_step *d, tlist *l)
{
    switch (d->kind) {
    case D_BYTELEVEL: {
        sbuf bytes = {0}, out = {0};
        for (size_t i = 0; i < l->n; i++) {
            size_t mark = bytes.n;
            const unsigned char *s = (const unsigned char *)l->s[i];
            int all = 1;
            for (size_t j = 0; j < l->len[i];) {
                uint32_t cp;
                int k = utf8_next(s + j, l->len[i] - j, &cp);
                if (k <= 0 || cp >= 0x144 || t->bl_dec[cp] < 0) {
                    all = 0;
                    break;
                }
                unsigned char b = (unsigned char)t->bl_dec[cp];
                if (sb_add(&bytes, &b, 1))
                    goto oom_bl;
                j += (size_t)k;
            }
            if (!all) {
                bytes.n = mark;
                if (sb_add(&bytes, s, l->len[i]))
                    goto oom_bl;
            }
        }
        if (sb_add_lossy(&out, (const unsigned char *)(bytes.p ? bytes.p : ""), bytes.n))
            goto oom_bl;
        free(bytes.p);
        return tl_set_one(l, &out);
    oom_bl:
        free(bytes.p);
        free(out.p);
        return -1;
    }
    case D_REPLACE: {
        size_t pl = strlen(d->a);
        for (size_t i = 0; i < l->n; i++) {
            if (!mem_find(l->s[i], l->len[i], d->a, pl))
                continue;
            sbuf o = {0};
            const char *p = l->s[i], *end = l->s[i] + l->len[i];
            while (p < end) {
                const char *hit = mem_find(p, (size_t)(end - p), d->a, pl);
                if (!hit) {
                    if (sb_add(&o, p, (size_t)(end - p)))
                        goto oom_r;
                    break;
                }
                if (sb_add(&o, p, (size_t)(hit - p)) || sb_adds(&o, d->b))
                    goto oom_r;
                p = hit + pl;
            }
            if (!o.p && sb_add(&o, "", 0))
                goto oom_r;
            free(l->s[i]);
            l->s[i] = o.p;
            l->len[i] = o.n;
            continue;
        oom_r:
            free(o.p);
            return -1;
        }
        return 0;
    }
    case D_BYTEFALLBACK: {
        /* runs of <0xXX> tokens become their bytes read as UTF-8; an invalid run becomes
         * one U+FFFD per byte */
        size_t w = 0;
        sbuf run = {0};
        size_t nrun = 0;
        for (size_t i = 0; i <= l->n; i++) {
            unsigned char b;
            int is_b = i < l->n && byte_token(l->s[i], l->len[i], &b);
            if (is_b) {
                if (sb_add(&run, &b, 1)) {
                    free(run.p);
                    return -1;
                }
                nrun++;
                free(l->s[i]);
                l->s[i] = NULL;
                continue;
            }
            if (nrun) {
                sbuf o = {0};
                int bad;
                if (utf8_is_valid((const unsigned char *)run.p, run.n)) {
                    bad = sb_add(&o, run.p, run.n);
                } else {
                    bad = 0;
                    for (size_t j = 0; j < run.n && !bad; j++)
                        bad = sb_add(&o, "\xEF\xBF\xBD", 3);
                }
                if (bad) {
                    free(o.p);
                    free(run.p);
                    return -1;
                }
                /* the run's slots are free: use the first of them */
                l->s[w] = o.p;
                l->len[w] = o.n;
                w++;
                run.n = 0;
                nrun = 0;
            }
            if (i < l->n) {
                l->s[w] = l->s[i];
                l->len[w] = l->len[i];
                if (w != i)
                    l->s[i] = NULL;
                w++;
            }
        }
        free(run.p);
        l->n = w;
        return 0;
    }
    case D_FUSE: {
        sbuf o = {0};
        for (size_t i = 0; i < l->n; i++)
            if (sb_add(&o, l->s[i], l->len[i])) {
                free(o.p);
                return -1;
            }
        return tl_set_one(l, &o);
    }
    case D_STRIP: {
        size_t cl = strlen(d->a);
        for (size_t i = 0; i < l->n; i++) {
            char *s = l->s[i];
            size_t a = 0, z = l->len[i];
            for (int k = 0; k < d->start && z - a >= cl && memcmp(s + a, d->a, cl) == 0; k++)
                a += cl;
            for (int k = 0; k < d->stop && z - a >= cl && memcmp(s + z - cl, d->a, cl) == 0; k++)
                z -= cl;
            memmove(s, s + a, z - a);
            s[z - a] = '\0';
            l->len[i] = z - a;
        }
        return 0;
    }
    }
    return 0;
}

int hft_decode(const hft *t, const int *ids, size_t n, char **out, size_t *len,
               coh_err *err)
{
    if (out)
        *out = NULL;
    if (len)
        *len = 0;
    if (!t || !out || (!ids && n))
        return coh_fail(err, COH_EINVAL, "hft_decode: NULL argument");
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= t->nids || t->tok_len[ids[i]] == UINT32_MAX)
            return coh_fail(err, COH_ERANGE,
                            "id %d at position %zu is not a token of this tokenizer (ids are "
                            "0..%d)",
                            ids[i], i, t->nids - 1);
    tlist l = {0};
    l.s = calloc(n + 1, sizeof *l.s);
    l.len = calloc(n + 1, sizeof *l.len);
    if (!l.s || !l.len)
        goto oom;
    for (size_t i = 0; i < n; i++) {
        const char *s = t->pool + t->tok_off[ids[i]];
        size_t sl = t->tok_len[ids[i]];
        l.s[i] = malloc(sl + 1);
        if (!l.s[i])
            goto oom;
        memcpy(l.s[i], s, sl + 1);
        l.len[i] = sl;
        l.n = i + 1;
    }
    l.n = n;
    for (int k = 0; k < t->ndec; k++)
        if (dec_step_run(t, &t->dec[k], &l))
            goto oom;
    sbuf o = {0};
    for (size_t i = 0; i < l.n; i++) {
        if (!t->has_decoder && i > 0 && sb_add(&o, " ", 1))
            goto oom_o;
        if (sb_add(&o, l.s[i], l.len[i]))
            goto oom_o;
    }
    if (!o.p && sb_add(&o, "", 0))
        goto oom_o;
    tl_free(&l);
    *out = o.p;
    if (len)
        *len = o.n;
    return COH_OK;
oom_o:
    free(o.p);
oom:
    tl_free(&l);
    return coh_fail(err, COH_ENOMEM, "out of memory decoding %zu ids", n);
}
