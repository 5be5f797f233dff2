/* tokenizer.c - the policy's tokenizer (see tokenizer.h): the built-in character kind here,
 * the Hugging Face kind delegated to hftok.c.
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
#include "hftok.h"

#define TOK_TYPE "cohort-char"
#define TOK_VERSION 1
#define TOK_NSPECIAL 3
#define TOK_MAX_CHARS 127 /* bytes 1..127 */

static const char *const k_specials[TOK_NSPECIAL] = {"<pad>", "<bos>", "<eos>"};

enum { TOKK_CHAR, TOKK_HF };

struct tokenizer {
    int kind;
    /* TOKK_HF */
    hft *hf;
    char *hf_text; /* the tokenizer.json as read, written back verbatim */
    size_t hf_len;
    char *cfg_text; /* the tokenizer_config.json as read (tok_load_dir), or NULL */
    size_t cfg_len;
    int bos, eos, add_bos, add_eos;
    /* TOKK_CHAR */
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

/* A file that is not valid JSON (say, truncated) cannot be asked for "model": it is a
 * Hugging Face one when one of that format's top-level keys shows in its first 4 KiB. */
static int looks_hf(const char *text, size_t len)
{
    static const char *const keys[] = {"\"added_tokens\"", "\"pre_tokenizer\"",
                                       "\"normalizer\"", "\"model\""};
    size_t n = len < 4096 ? len : 4096;
    for (int k = 0; k < 4; k++) {
        size_t kl = strlen(keys[k]);
        for (size_t i = 0; i + kl <= n; i++)
            if (memcmp(text + i, keys[k], kl) == 0)
                return 1;
    }
    return 0;
}

/* A Hugging Face tokenizer.json: keep the text, no BOS/EOS until a config says so. */
static int tok_from_hf(const char *text, size_t len, tokenizer **out, coh_err *err)
{
    *out = NULL;
    tokenizer *t = calloc(1, sizeof *t);
    if (!t || !(t->hf_text = malloc(len + 1))) {
        free(t);
        return coh_fail(err, COH_ENOMEM, "out of memory loading a tokenizer");
    }
    memcpy(t->hf_text, text, len);
    t->hf_text[len] = '\0';
    t->hf_len = len;
    t->kind = TOKK_HF;
    int rc = hft_create(text, len, &t->hf, err);
    if (rc != COH_OK) {
        free(t->hf_text);
        free(t);
        return rc;
    }
    t->bos = hft_template_bos(t->hf);
    t->add_bos = t->bos >= 0;
    t->eos = -1;
    *out = t;
    return COH_OK;
}

/* bos_token / eos_token of tokenizer_config.json: *_token_id, or the token's content. */
static int config_token(tokenizer *t, const cJSON *cfg, const char *key, int *id,
                        coh_err *err)
{
    char idkey[32];
    snprintf(idkey, sizeof idkey, "%s_id", key);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, idkey);
    int V = hft_vocab_size(t->hf);
    if (cJSON_IsNumber(v)) {
        if (v->valuedouble < 0 || v->valuedouble >= V || v->valuedouble != (double)v->valueint)
            return coh_fail(err, COH_EFORMAT, "\"%s\" %g is not an id of tokenizer.json (0..%d)",
                            idkey, v->valuedouble, V - 1);
        *id = v->valueint;
        return COH_OK;
    }
    v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (!v || cJSON_IsNull(v))
        return COH_OK;
    if (cJSON_IsObject(v))
        v = cJSON_GetObjectItemCaseSensitive(v, "content");
    if (!cJSON_IsString(v))
        return coh_fail(err, COH_EFORMAT,
                        "\"%s\" must be a string, an object with \"content\", or null", key);
    int found = hft_token_id(t->hf, v->valuestring);
    if (found < 0)
        return coh_fail(err, COH_EFORMAT, "\"%s\" \"%.64s\" is not a token of tokenizer.json",
                        key, v->valuestring);
    *id = found;
    return COH_OK;
}

static int config_bool(const cJSON *cfg, const char *key, int *out, coh_err *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (!v || cJSON_IsNull(v))
        return COH_OK;
    if (!cJSON_IsBool(v))
        return coh_fail(err, COH_EFORMAT, "\"%s\" must be true or false", key);
    *out = cJSON_IsTrue(v);
    return COH_OK;
}

static int apply_config(tokenizer *t, const char *path, coh_err *err)
{
    char *text = NULL;
    size_t len = 0;
    int rc = fs_read_all(path, &text, &len, err);
    if (rc != COH_OK)
        return rc;
    cJSON *cfg = cJSON_ParseWithLength(text, len);
    free(t->cfg_text);
    t->cfg_text = text; /* kept: tok_save_dir writes it back as it was */
    t->cfg_len = len;
    if (!cfg || !cJSON_IsObject(cfg)) {
        cJSON_Delete(cfg);
        return coh_fail(err, COH_EFORMAT, "'%s' is not a JSON object (is it truncated?)", path);
    }
    if ((rc = config_token(t, cfg, "bos_token", &t->bos, err)) == COH_OK &&
        (rc = config_token(t, cfg, "eos_token", &t->eos, err)) == COH_OK &&
        (rc = config_bool(cfg, "add_bos_token", &t->add_bos, err)) == COH_OK)
        rc = config_bool(cfg, "add_eos_token", &t->add_eos, err);
    cJSON_Delete(cfg);
    if (rc == COH_OK && t->add_bos && t->bos < 0)
        rc = coh_fail(err, COH_EFORMAT, "add_bos_token is true but there is no bos_token");
    if (rc == COH_OK && t->add_eos && t->eos < 0)
        rc = coh_fail(err, COH_EFORMAT, "add_eos_token is true but there is no eos_token");
    if (rc != COH_OK)
        return coh_wrap(err, rc, "'%s'", path);
    return COH_OK;
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
    rc = tok_from_text(text, len, out, err);
    free(text);
    if (rc != COH_OK)
        return coh_wrap(err, rc, "tokenizer '%s'", path);
    return COH_OK;
}

int tok_load_dir(const char *dir, tokenizer **out, coh_err *err)
{
    if (out)
        *out = NULL;
    if (!dir || !out)
        return coh_fail(err, COH_EINVAL, "tok_load_dir: NULL argument");
    size_t n = strlen(dir) + 32;
    char *path = malloc(n);
    if (!path)
        return coh_fail(err, COH_ENOMEM, "out of memory");
    snprintf(path, n, "%s/%s", dir, TOK_FILE);
    if (!fs_exists(path)) {
        int rc = coh_fail(err, COH_ENOTFOUND, "'%s' has no %s (a folder of a Hugging Face model "
                          "or a Cohort checkpoint holds one)", dir, TOK_FILE);
        free(path);
        return rc;
    }
    tokenizer *t = NULL;
    int rc = tok_load(path, &t, err);
    if (rc == COH_OK && t->kind == TOKK_HF) {
        snprintf(path, n, "%s/tokenizer_config.json", dir);
        if (fs_exists(path))
            rc = apply_config(t, path, err);
    }
    free(path);
    if (rc != COH_OK) {
        tok_destroy(t);
        return rc;
    }
    *out = t;
    return COH_OK;
}

int tok_save_dir(const tokenizer *t, const char *dir, coh_err *err)
{
    if (!t || !dir)
        return coh_fail(err, COH_EINVAL, "tok_save_dir: NULL argument");
    size_t n = strlen(dir) + 32;
    char *path = malloc(n);
    if (!path)
        return coh_fail(err, COH_ENOMEM, "out of memory");
    snprintf(path, n, "%s/%s", dir, TOK_FILE);
    int rc = tok_save(t, path, err);
    if (rc == COH_OK && t->cfg_text) {
        snprintf(path, n, "%s/tokenizer_config.json", dir);
        rc = fs_write_atomic(path, t->cfg_text, t->cfg_len, err);
    }
    free(path);
    return rc;
}

int tok_to_json(const tokenizer *t, char **out, coh_err *err)
{
    if (!t || !out)
        return coh_fail(err, COH_EINVAL, "tok_to_json: NULL argument");
    *out = NULL;
    if (t->kind == TOKK_HF) {
        *out = malloc(t->hf_len + 1);
        if (!*out)
            return coh_fail(err, COH_ENOMEM, "out of memory copying tokenizer.json");
        memcpy(*out, t->hf_text, t->hf_len + 1);
        return COH_OK;
    }
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
    if (!root) {
        /* a Hugging Face file names where it stops being JSON */
        if (looks_hf(text, len))
            return tok_from_hf(text, len, out, err);
        return coh_fail(err, COH_EFORMAT, "tokenizer.json text is not valid JSON");
    }
    int hf = cJSON_IsObject(root) && cJSON_GetObjectItemCaseSensitive(root, "model") &&
             !cJSON_GetObjectItemCaseSensitive(root, "type");
    int rc = hf ? COH_OK : tok_from_json(root, out, err);
    cJSON_Delete(root);
    if (hf)
        rc = tok_from_hf(text, len, out, err);
    return rc;
}

int tok_save(const tokenizer *t, const char *path, coh_err *err)
{
    if (!t || !path)
        return coh_fail(err, COH_EINVAL, "tok_save: NULL argument");
    if (t->kind == TOKK_HF)
        return fs_write_atomic(path, t->hf_text, t->hf_len, err);
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

void tok_destroy(tokenizer *t)
{
    if (!t)
        return;
    hft_destroy(t->hf);
    free(t->hf_text);
    free(t->cfg_text);
    free(t);
}

const char *tok_kind(const tokenizer *t)
{
    return t && t->kind == TOKK_HF ? "huggingface" : "cohort-char";
}

int tok_vocab_size(const tokenizer *t)
{
    if (!t)
        return 0;
    return t->kind == TOKK_HF ? hft_vocab_size(t->hf) : TOK_NSPECIAL + t->nchars;
}

int tok_bos_id(const tokenizer *t) { return !t ? -1 : t->kind == TOKK_HF ? t->bos : TOK_BOS; }
int tok_eos_id(const tokenizer *t) { return !t ? -1 : t->kind == TOKK_HF ? t->eos : TOK_EOS; }
int tok_add_bos(const tokenizer *t) { return !t ? 0 : t->kind == TOKK_HF ? t->add_bos : 1; }
int tok_add_eos(const tokenizer *t) { return t && t->kind == TOKK_HF ? t->add_eos : 0; }

static int hf_encode(const tokenizer *t, const char *text, int *ids, int max_ids, int *n,
                     coh_err *err)
{
    int *all = NULL;
    size_t k = 0;
    int rc = hft_encode(t->hf, text, strlen(text), &all, &k, err);
    if (rc != COH_OK)
        return rc;
    if (k > (size_t)max_ids) {
        free(all);
        return coh_fail(err, COH_ERANGE, "text needs %zu tokens, more than the %d there is room "
                        "for", k, max_ids);
    }
    if (k)
        memcpy(ids, all, k * sizeof *ids);
    free(all);
    *n = (int)k;
    return COH_OK;
}

static size_t hf_decode(const tokenizer *t, const int *ids, int n, char *out, size_t cap)
{
    int V = hft_vocab_size(t->hf), k = 0;
    int *ok = malloc(((size_t)(n > 0 ? n : 0) + 1) * sizeof *ok);
    if (!ok) {
        out[0] = '\0';
        return 0;
    }
    for (int i = 0; i < n; i++)
        if (ids[i] >= 0 && ids[i] < V && hft_token_str(t->hf, ids[i]))
            ok[k++] = ids[i];
    char *text = NULL;
    size_t len = 0;
    int rc = hft_decode(t->hf, ok, (size_t)k, &text, &len, NULL);
    free(ok);
    if (rc != COH_OK) {
        out[0] = '\0';
        return 0;
    }
    if (len > cap - 1) {
        len = cap - 1; /* cut before a partial character */
        while (len > 0 && ((unsigned char)text[len] & 0xC0) == 0x80)
            len--;
    }
    memcpy(out, text, len);
    out[len] = '\0';
    free(text);
    return len;
}

int tok_encode(const tokenizer *t, const char *text, int *ids, int max_ids, int *n,
               coh_err *err)
{
    if (n)
        *n = 0;
    if (!t || !text || !n || max_ids < 0 || (max_ids > 0 && !ids))
        return coh_fail(err, COH_EINVAL, "tok_encode: bad arguments");
    if (t->kind == TOKK_HF)
        return hf_encode(t, text, ids, max_ids, n, err);
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
    if (t && ids && t->kind == TOKK_HF)
        return hf_decode(t, ids, n, out, cap);
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
