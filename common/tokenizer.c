/* tokenizer.c - the built-in character tokenizer and its tokenizer.json (see tokenizer.h).
 *
 * Every character is one byte of 7-bit ASCII (1..127), so encoding is a 256-entry lookup
 * table and decoding an array index. The file format is fixed by tokenizer.h; loading checks
 * type, version, the three specials, and that chars is non-empty, ASCII and free of
 * duplicates, and names the offending field otherwise.
 */
#include "tokenizer.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsutil.h"

#define TOK_TYPE "cohort-char"
#define TOK_VERSION 1
#define TOK_NSPECIAL 3
#define TOK_MAX_CHARS 127 /* bytes 1..127 */

static const char *const k_specials[TOK_NSPECIAL] = {"<pad>", "<bos>", "<eos>"};

struct tokenizer {
    int nchars;                    /* vocab size = TOK_NSPECIAL + nchars */
    char chars[TOK_MAX_CHARS + 1]; /* chars[i] has id TOK_NSPECIAL + i; NUL-terminated */
    int id_of[256];                /* byte -> id, or -1 */
};

/* ---- private helpers ---------------------------------------------------------------- */

/* Describe byte c for a message: 'x' when printable, otherwise its code. */
static void describe_byte(unsigned char c, char *out, size_t cap)
{
    if (c >= 32 && c < 127)
        snprintf(out, cap, "'%c'", (char)c);
    else
        snprintf(out, cap, "byte 0x%02x", (unsigned)c);
}

/* Build a tokenizer from a chars string, checking ASCII and uniqueness. */
static int tok_from_chars(const char *chars, tokenizer **out, coh_err *err)
{
    *out = NULL;
    size_t n = strlen(chars);
    if (n == 0)
        return coh_fail(err, COH_EFORMAT, "tokenizer \"chars\" is empty");
    if (n > TOK_MAX_CHARS)
        return coh_fail(err, COH_EFORMAT, "tokenizer \"chars\" has %zu characters (at most %d)",
                        n, TOK_MAX_CHARS);
    tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return coh_fail(err, COH_ENOMEM, "out of memory creating the tokenizer");
    for (int b = 0; b < 256; b++)
        t->id_of[b] = -1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)chars[i];
        char what[24];
        describe_byte(c, what, sizeof what);
        if (c >= 128) {
            free(t);
            return coh_fail(err, COH_EFORMAT,
                            "tokenizer \"chars\" has non-ASCII %s at position %zu (only 7-bit "
                            "ASCII characters are supported)",
                            what, i);
        }
        if (t->id_of[c] >= 0) {
            int first = t->id_of[c] - TOK_NSPECIAL;
            free(t);
            return coh_fail(err, COH_EFORMAT,
                            "tokenizer \"chars\" has duplicate character %s at positions %d "
                            "and %zu",
                            what, first, i);
        }
        t->id_of[c] = TOK_NSPECIAL + (int)i;
        t->chars[i] = (char)c;
    }
    t->chars[n] = '\0';
    t->nchars = (int)n;
    *out = t;
    return COH_OK;
}

/* Validate the parsed tokenizer.json and build the tokenizer. */
static int tok_from_json(const cJSON *root, tokenizer **out, coh_err *err)
{
    if (!cJSON_IsObject(root))
        return coh_fail(err, COH_EFORMAT, "not a JSON object");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "type");
    if (!cJSON_IsString(type))
        return coh_fail(err, COH_EFORMAT, "missing \"type\" string (expected \"%s\")",
                        TOK_TYPE);
    if (strcmp(type->valuestring, TOK_TYPE) != 0)
        return coh_fail(err, COH_EUNSUPPORTED,
                        "tokenizer type \"%.64s\" is not supported (Cohort reads \"%s\")",
                        type->valuestring, TOK_TYPE);
    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(root, "version");
    if (!cJSON_IsNumber(ver))
        return coh_fail(err, COH_EFORMAT, "missing \"version\" number (expected %d)",
                        TOK_VERSION);
    if (ver->valuedouble != (double)TOK_VERSION)
        return coh_fail(err, COH_EUNSUPPORTED, "tokenizer version %g is not supported "
                        "(expected %d)", ver->valuedouble, TOK_VERSION);
    const cJSON *sp = cJSON_GetObjectItemCaseSensitive(root, "specials");
    if (!cJSON_IsArray(sp) || cJSON_GetArraySize(sp) != TOK_NSPECIAL)
        return coh_fail(err, COH_EFORMAT,
                        "\"specials\" must be the array [\"<pad>\", \"<bos>\", \"<eos>\"]");
    for (int i = 0; i < TOK_NSPECIAL; i++) {
        const cJSON *s = cJSON_GetArrayItem(sp, i);
        if (!cJSON_IsString(s) || strcmp(s->valuestring, k_specials[i]) != 0)
            return coh_fail(err, COH_EFORMAT,
                            "\"specials\"[%d] must be \"%s\" (ids 0, 1, 2 are <pad>, <bos>, "
                            "<eos>)",
                            i, k_specials[i]);
    }
    const cJSON *chars = cJSON_GetObjectItemCaseSensitive(root, "chars");
    if (!cJSON_IsString(chars))
        return coh_fail(err, COH_EFORMAT, "missing \"chars\" string");
    return tok_from_chars(chars->valuestring, out, err);
}

/* ---- public API --------------------------------------------------------------------- */

int tok_create_default(tokenizer **out, coh_err *err)
{
    if (!out)
        return coh_fail(err, COH_EINVAL, "tok_create_default: NULL argument");
    char chars[127 - 32 + 1];
    for (int c = 32; c <= 126; c++)
        chars[c - 32] = (char)c;
    chars[127 - 32] = '\0';
    return tok_from_chars(chars, out, err);
}

int tok_load(const char *path, tokenizer **out, coh_err *err)
{
    if (out)
        *out = NULL;
    if (!path || !out)
        return coh_fail(err, COH_EINVAL, "tok_load: NULL argument");
    char *text = NULL;
    size_t len = 0;
    int rc = fs_read_all(path, &text, &len, err);
    if (rc != COH_OK)
        return rc;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root)
        return coh_fail(err, COH_EFORMAT, "tokenizer '%s' is not valid JSON", path);
    rc = tok_from_json(root, out, err);
    cJSON_Delete(root);
    if (rc != COH_OK)
        return coh_wrap(err, rc, "tokenizer '%s'", path);
    return COH_OK;
}

int tok_to_json(const tokenizer *t, char **out, coh_err *err)
{
    if (!t || !out)
        return coh_fail(err, COH_EINVAL, "tok_to_json: NULL argument");
    *out = NULL;
    cJSON *root = cJSON_CreateObject();
    int ok = root && cJSON_AddStringToObject(root, "type", TOK_TYPE) &&
             cJSON_AddNumberToObject(root, "version", TOK_VERSION);
    if (ok) {
        cJSON *sp = cJSON_CreateStringArray(k_specials, TOK_NSPECIAL);
        if (!sp || !cJSON_AddItemToObject(root, "specials", sp)) {
            cJSON_Delete(sp);
            ok = 0;
        }
    }
    ok = ok && cJSON_AddStringToObject(root, "chars", t->chars);
    char *text = ok ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (text) {
        *out = strdup(text);
        cJSON_free(text);
    }
    if (!*out)
        return coh_fail(err, COH_ENOMEM, "out of memory formatting tokenizer.json");
    return COH_OK;
}

int tok_from_text(const char *text, size_t len, tokenizer **out, coh_err *err)
{
    if (out)
        *out = NULL;
    if (!text || !out)
        return coh_fail(err, COH_EINVAL, "tok_from_text: NULL argument");
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!root)
        return coh_fail(err, COH_EFORMAT, "tokenizer.json text is not valid JSON");
    int rc = tok_from_json(root, out, err);
    cJSON_Delete(root);
    return rc;
}

int tok_save(const tokenizer *t, const char *path, coh_err *err)
{
    if (!t || !path)
        return coh_fail(err, COH_EINVAL, "tok_save: NULL argument");
    char *text = NULL;
    int rc = tok_to_json(t, &text, err);
    if (rc != COH_OK)
        return coh_wrap(err, rc, "writing tokenizer '%s'", path);
    size_t n = strlen(text);
    const void *parts[2] = {text, "\n"};
    size_t lens[2] = {n, 1};
    rc = fs_write_atomic_iov(path, parts, lens, 2, err);
    free(text);
    return rc;
}

void tok_destroy(tokenizer *t) { free(t); }

int tok_vocab_size(const tokenizer *t) { return t ? TOK_NSPECIAL + t->nchars : 0; }

int tok_encode(const tokenizer *t, const char *text, int *ids, int max_ids, int *n,
               coh_err *err)
{
    if (n)
        *n = 0;
    if (!t || !text || !n || max_ids < 0 || (max_ids > 0 && !ids))
        return coh_fail(err, COH_EINVAL, "tok_encode: bad arguments");
    int k = 0;
    for (size_t i = 0; text[i]; i++) {
        unsigned char c = (unsigned char)text[i];
        int id = t->id_of[c];
        if (id < 0) {
            char what[24];
            describe_byte(c, what, sizeof what);
            return coh_fail(err, COH_EINVAL,
                            "character %s at position %zu is not in the tokenizer's vocabulary",
                            what, i);
        }
        if (k >= max_ids)
            return coh_fail(err, COH_ERANGE,
                            "text needs more than %d tokens (it has %zu or more characters)",
                            max_ids, i + 1);
        ids[k++] = id;
    }
    *n = k;
    return COH_OK;
}

size_t tok_decode(const tokenizer *t, const int *ids, int n, char *out, size_t cap)
{
    if (!out || cap == 0)
        return 0;
    size_t w = 0;
    if (t && ids) {
        for (int i = 0; i < n && w + 1 < cap; i++) {
            int id = ids[i];
            if (id < TOK_NSPECIAL || id >= TOK_NSPECIAL + t->nchars)
                continue;
            out[w++] = t->chars[id - TOK_NSPECIAL];
        }
    }
    out[w] = '\0';
    return w;
}
