/* test_checkpoint.c - config.json and checkpoint folders: bit-exact round trips (tied and
 * untied), F16/BF16 weights, and refusal of wrong, missing, extra or truncated tensors with
 * messages that name them. */
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

#include "checkpoint.h"
#include "fsutil.h"
#include "model.h"
#include "safetensors.h"
#include "tokenizer.h"

/* ---- fixture ------------------------------------------------------------------------ */

typedef struct fixture {
    char dir[64];  /* the temp root */
    char ckpt[96]; /* dir/ckpt: the checkpoint folder */
    char cfg[128];
    char weights[128];
    char tok[128];
} fixture;

static int setup_dir(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    strcpy(fx->dir, "/tmp/cohort-ckpt-XXXXXX");
    if (!mkdtemp(fx->dir)) {
        free(fx);
        return -1;
    }
    snprintf(fx->ckpt, sizeof fx->ckpt, "%s/ckpt", fx->dir);
    snprintf(fx->cfg, sizeof fx->cfg, "%s/%s", fx->ckpt, CKPT_CONFIG);
    snprintf(fx->weights, sizeof fx->weights, "%s/%s", fx->ckpt, CKPT_WEIGHTS);
    snprintf(fx->tok, sizeof fx->tok, "%s/%s", fx->ckpt, TOK_FILE);
    *state = fx;
    return 0;
}

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

/* ---- helpers ------------------------------------------------------------------------ */

static void write_text(const char *path, const char *text)
{
    coh_err err;
    assert_int_equal(fs_write_atomic(path, text, strlen(text), &err), COH_OK);
}

static model *make_model(int tied, uint64_t seed)
{
    model_config c = model_config_default(98);
    c.tie_embeddings = tied;
    model *m = NULL;
    coh_err err;
    int rc = model_create(&c, &m, &err);
    if (rc != COH_OK)
        print_error("model_create: %s\n", err.msg);
    assert_int_equal(rc, COH_OK);
    model_init_random(m, seed);
    return m;
}

static void assert_config_equal(const model_config *a, const model_config *b)
{
    assert_int_equal(a->vocab_size, b->vocab_size);
    assert_int_equal(a->dim, b->dim);
    assert_int_equal(a->hidden_dim, b->hidden_dim);
    assert_int_equal(a->n_layers, b->n_layers);
    assert_int_equal(a->n_heads, b->n_heads);
    assert_int_equal(a->n_kv_heads, b->n_kv_heads);
    assert_int_equal(a->max_seq, b->max_seq);
    assert_int_equal(a->tie_embeddings, b->tie_embeddings);
    assert_true(a->rms_eps == b->rms_eps);
    assert_true(a->rope_theta == b->rope_theta);
}

/* ckpt_load must fail with `code`, leave the outputs NULL and mention every word. */
static void expect_load_fails(const char *dir, int code, const char *w1, const char *w2)
{
    model *m = (model *)(uintptr_t)1;
    tokenizer *t = (tokenizer *)(uintptr_t)1;
    coh_err err;
    coh_err_clear(&err);
    int rc = ckpt_load(dir, &m, &t, &err);
    if (rc != code || !strstr(err.msg, w1) || (w2 && !strstr(err.msg, w2)))
        print_error("ckpt_load rc=%d (%s) msg='%s'; expected %d with '%s' '%s'\n", rc,
                    coh_err_name(rc), err.msg, code, w1, w2 ? w2 : "");
    assert_int_equal(rc, code);
    assert_null(m);
    assert_null(t);
    assert_non_null(strstr(err.msg, w1));
    if (w2)
        assert_non_null(strstr(err.msg, w2));
}

/* The model's tensors as F32 entries (what ckpt_save writes), for tests to tamper with.
 * Returns the count; e has room for model_num_tensors(m) + 1 entries. */
static int model_entries(const model *m, st_entry *e)
{
    const float *p = model_params_const(m);
    int n = model_num_tensors(m);
    for (int i = 0; i < n; i++) {
        const model_tensor *t = model_tensor_at(m, i);
        memset(&e[i], 0, sizeof e[i]);
        e[i].name = t->name;
        e[i].ndim = t->ndim;
        for (int d = 0; d < t->ndim; d++)
            e[i].shape[d] = t->shape[d];
        e[i].data = p + t->offset;
    }
    return n;
}

static int entry_index(const st_entry *e, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(e[i].name, name) == 0)
            return i;
    fail_msg("no entry %s", name);
    return -1;
}

/* ---- config.json -------------------------------------------------------------------- */

static void test_config_default_values(void **state)
{
    (void)state;
    model_config c = model_config_default(98);
    assert_int_equal(c.vocab_size, 98);
    assert_int_equal(c.dim, 64);
    assert_int_equal(c.hidden_dim, 176);
    assert_int_equal(c.n_layers, 2);
    assert_int_equal(c.n_heads, 4);
    assert_int_equal(c.n_kv_heads, 4);
    assert_int_equal(c.max_seq, 64);
    assert_int_equal(c.tie_embeddings, 0);
    assert_true(c.rms_eps == 1e-5f);
    assert_true(c.rope_theta == 10000.0f);
    coh_err err;
    assert_int_equal(model_config_validate(&c, &err), COH_OK);
}

static void test_config_roundtrip(void **state)
{
    fixture *fx = *state;
    coh_err err;
    assert_int_equal(fs_mkdirs(fx->ckpt, &err), COH_OK);
    model_config c = {.vocab_size = 300,
                      .dim = 48,
                      .hidden_dim = 100,
                      .n_layers = 3,
                      .n_heads = 6,
                      .n_kv_heads = 2,
                      .max_seq = 33,
                      .tie_embeddings = 1,
                      .rms_eps = 1e-6f,
                      .rope_theta = 500000.0f};
    assert_int_equal(model_config_save(fx->cfg, &c, &err), COH_OK);
    model_config r;
    memset(&r, 0xab, sizeof r);
    assert_int_equal(model_config_load(fx->cfg, &r, &err), COH_OK);
    assert_config_equal(&c, &r);

    char *text;
    size_t len;
    assert_int_equal(fs_read_all(fx->cfg, &text, &len, &err), COH_OK);
    const char *must[] = {"\"LlamaForCausalLM\"", "\"model_type\"", "\"llama\"",
                          "\"torch_dtype\"", "\"float32\"", "\"hidden_act\"", "\"silu\"",
                          "\"num_key_value_heads\"", "\"max_position_embeddings\"",
                          "\"tie_word_embeddings\"", "true", "1e-06", "500000.0"};
    for (size_t i = 0; i < sizeof must / sizeof must[0]; i++) {
        if (!strstr(text, must[i]))
            print_error("config.json lacks %s:\n%s\n", must[i], text);
        assert_non_null(strstr(text, must[i]));
    }
    free(text);

    /* default config too, with eps 1e-5 written as such */
    c = model_config_default(98);
    assert_int_equal(model_config_save(fx->cfg, &c, &err), COH_OK);
    assert_int_equal(model_config_load(fx->cfg, &r, &err), COH_OK);
    assert_config_equal(&c, &r);
    assert_int_equal(fs_read_all(fx->cfg, &text, &len, &err), COH_OK);
    assert_non_null(strstr(text, "1e-05"));
    assert_non_null(strstr(text, "10000.0"));
    assert_non_null(strstr(text, "false"));
    free(text);

    /* an invalid config is not written */
    c.n_heads = 5;
    assert_int_equal(model_config_save(fx->cfg, &c, &err), COH_EINVAL);
    assert_non_null(strstr(err.msg, "num_attention_heads"));
}

static void test_config_from_elsewhere(void **state)
{
    fixture *fx = *state;
    coh_err err;
    assert_int_equal(fs_mkdirs(fx->ckpt, &err), COH_OK);
    /* a Hugging Face style file: extra keys, optional keys missing */
    write_text(fx->cfg, "{\"architectures\": [\"LlamaForCausalLM\"], \"bos_token_id\": 1,"
                        " \"hidden_size\": 32, \"intermediate_size\": 64,"
                        " \"max_position_embeddings\": 128, \"model_type\": \"llama\","
                        " \"num_attention_heads\": 4, \"num_hidden_layers\": 1,"
                        " \"torch_dtype\": \"bfloat16\", \"transformers_version\": \"4.40.0\","
                        " \"attention_bias\": false, \"rope_scaling\": null,"
                        " \"head_dim\": 8, \"vocab_size\": 1000}");
    model_config r;
    assert_int_equal(model_config_load(fx->cfg, &r, &err), COH_OK);
    assert_int_equal(r.vocab_size, 1000);
    assert_int_equal(r.dim, 32);
    assert_int_equal(r.hidden_dim, 64);
    assert_int_equal(r.n_layers, 1);
    assert_int_equal(r.n_heads, 4);
    assert_int_equal(r.n_kv_heads, 4); /* defaults to n_heads */
    assert_int_equal(r.max_seq, 128);
    assert_int_equal(r.tie_embeddings, 0);
    assert_true(r.rms_eps == 1e-6f);
    assert_true(r.rope_theta == 10000.0f);
}

static void test_config_refused(void **state)
{
    fixture *fx = *state;
    coh_err err;
    assert_int_equal(fs_mkdirs(fx->ckpt, &err), COH_OK);
    static const char *required[] = {"vocab_size",          "hidden_size",
                                     "intermediate_size",   "num_hidden_layers",
                                     "num_attention_heads", "max_position_embeddings"};
    static const char *values[] = {"98", "64", "176", "2", "4", "64"};
    /* each required key, when missing, is named */
    for (int skip = 0; skip < 6; skip++) {
        char json[512] = "{";
        int first = 1;
        for (int k = 0; k < 6; k++) {
            if (k == skip)
                continue;
            char item[96];
            snprintf(item, sizeof item, "%s\"%s\": %s", first ? "" : ", ", required[k],
                     values[k]);
            strcat(json, item);
            first = 0;
        }
        strcat(json, "}");
        write_text(fx->cfg, json);
        model_config r;
        assert_int_equal(model_config_load(fx->cfg, &r, &err), COH_EFORMAT);
        assert_non_null(strstr(err.msg, required[skip]));
        assert_non_null(strstr(err.msg, "missing"));
        assert_non_null(strstr(err.msg, "config.json"));
    }

    /* broken and unsupported files: each case is a suffix after the required keys */
    const char *base = "{\"vocab_size\": 98, \"hidden_size\": 64, \"intermediate_size\": 176, "
                       "\"num_hidden_layers\": 2, \"max_position_embeddings\": 64";
    struct {
        const char *tail;
        int code;
        const char *word;
    } cases[] = {
        {", \"num_attention_heads\": 5}", COH_EINVAL, "num_attention_heads"},
        {", \"num_attention_heads\": 64}", COH_EINVAL, "even"},
        {", \"num_attention_heads\": 4, \"num_key_value_heads\": 3}", COH_EINVAL,
         "num_key_value_heads"},
        {", \"num_attention_heads\": 4, \"rms_norm_eps\": 0}", COH_ERANGE, "rms_norm_eps"},
        {", \"num_attention_heads\": 4, \"rope_theta\": -1}", COH_ERANGE, "rope_theta"},
        {", \"num_attention_heads\": 4, \"rope_theta\": 1e300}", COH_ERANGE, "rope_theta"},
        {", \"num_attention_heads\": \"4\"}", COH_EFORMAT, "num_attention_heads"},
        {", \"num_attention_heads\": 4.5}", COH_EFORMAT, "num_attention_heads"},
        {", \"num_attention_heads\": 0}", COH_ERANGE, "num_attention_heads"},
        {", \"num_attention_heads\": 4, \"tie_word_embeddings\": 1}", COH_EFORMAT,
         "tie_word_embeddings"},
        {", \"num_attention_heads\": 4, \"hidden_act\": \"gelu\"}", COH_EUNSUPPORTED, "gelu"},
        {", \"num_attention_heads\": 4, \"attention_bias\": true}", COH_EUNSUPPORTED,
         "attention_bias"},
        {", \"num_attention_heads\": 4, \"rope_scaling\": {\"type\": \"linear\"}}",
         COH_EUNSUPPORTED, "rope_scaling"},
        {", \"num_attention_heads\": 4, \"head_dim\": 32}", COH_EUNSUPPORTED, "head_dim"},
        {", \"num_attention_heads\": 4", COH_EFORMAT, "JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char json[512];
        snprintf(json, sizeof json, "%s%s", base, cases[i].tail);
        write_text(fx->cfg, json);
        model_config r;
        coh_err_clear(&err);
        int rc = model_config_load(fx->cfg, &r, &err);
        if (rc != cases[i].code || !strstr(err.msg, cases[i].word))
            print_error("case %zu: rc=%d msg='%s'\n", i, rc, err.msg);
        assert_int_equal(rc, cases[i].code);
        assert_non_null(strstr(err.msg, cases[i].word));
    }
    /* too large */
    model_config c = model_config_default(98);
    c.vocab_size = (1 << 20) + 1;
    assert_int_equal(model_config_validate(&c, &err), COH_ERANGE);
    assert_non_null(strstr(err.msg, "vocab_size"));
    c = model_config_default(98);
    c.n_layers = 0;
    assert_int_equal(model_config_validate(&c, &err), COH_ERANGE);
    assert_non_null(strstr(err.msg, "num_hidden_layers"));
}

/* ---- round trips -------------------------------------------------------------------- */

static void roundtrip(fixture *fx, int tied)
{
    model *m = make_model(tied, 1234 + (uint64_t)tied);
    tokenizer *tok = NULL;
    coh_err err;
    assert_int_equal(tok_create_default(&tok, &err), COH_OK);
    int rc = ckpt_save(fx->ckpt, m, tok, &err);
    if (rc != COH_OK)
        print_error("ckpt_save: %s\n", err.msg);
    assert_int_equal(rc, COH_OK);
    assert_true(fs_exists(fx->cfg));
    assert_true(fs_exists(fx->weights));
    assert_true(fs_exists(fx->tok));

    /* the file holds exactly the model's tensors; lm_head only when untied */
    st_file *f = NULL;
    assert_int_equal(st_open(fx->weights, &f, &err), COH_OK);
    assert_int_equal(st_count(f), model_num_tensors(m));
    assert_true((st_find(f, "lm_head.weight") != NULL) == !tied);
    assert_non_null(st_find(f, "model.embed_tokens.weight"));
    assert_non_null(st_find(f, "model.layers.1.mlp.down_proj.weight"));
    assert_non_null(st_metadata(f, "cohort_crc32"));
    st_close(f);

    model *m2 = NULL;
    tokenizer *tok2 = NULL;
    rc = ckpt_load(fx->ckpt, &m2, &tok2, &err);
    if (rc != COH_OK)
        print_error("ckpt_load: %s\n", err.msg);
    assert_int_equal(rc, COH_OK);
    assert_non_null(m2);
    assert_non_null(tok2);
    assert_int_equal(tok_vocab_size(tok2), tok_vocab_size(tok));
    assert_config_equal(model_get_config(m), model_get_config(m2));
    assert_int_equal(model_num_params(m2), model_num_params(m));
    assert_memory_equal(model_params_const(m2), model_params_const(m),
                        model_num_params(m) * sizeof(float));
    /* not all zero: the comparison means something */
    const float *p = model_params_const(m2);
    int nonzero = 0;
    for (size_t i = 0; i < model_num_params(m2); i++)
        nonzero += p[i] != 0.0f;
    assert_true(nonzero > 1000);

    /* saving over an existing checkpoint works and loads the same */
    assert_int_equal(ckpt_save(fx->ckpt, m2, tok2, &err), COH_OK);
    model *m3 = NULL;
    assert_int_equal(ckpt_load(fx->ckpt, &m3, NULL, &err), COH_OK);
    assert_memory_equal(model_params_const(m3), model_params_const(m),
                        model_num_params(m) * sizeof(float));
    model_destroy(m3);
    model_destroy(m2);
    tok_destroy(tok2);
    model_destroy(m);
    tok_destroy(tok);
}

static void test_roundtrip_untied(void **state) { roundtrip(*state, 0); }
static void test_roundtrip_tied(void **state) { roundtrip(*state, 1); }

static void test_no_tokenizer(void **state)
{
    fixture *fx = *state;
    model *m = make_model(0, 7);
    coh_err err;
    assert_int_equal(ckpt_save(fx->ckpt, m, NULL, &err), COH_OK);
    assert_false(fs_exists(fx->tok));
    model *m2 = NULL;
    tokenizer *tok = (tokenizer *)(uintptr_t)1;
    assert_int_equal(ckpt_load(fx->ckpt, &m2, &tok, &err), COH_OK);
    assert_null(tok);
    assert_memory_equal(model_params_const(m2), model_params_const(m),
                        model_num_params(m) * sizeof(float));
    model_destroy(m2);

    /* a tokenizer larger than the model's vocabulary does not belong to it */
    model_config c = model_config_default(50);
    model *small = NULL;
    assert_int_equal(model_create(&c, &small, &err), COH_OK);
    tokenizer *big = NULL;
    assert_int_equal(tok_create_default(&big, &err), COH_OK);
    assert_int_equal(ckpt_save(fx->ckpt, small, big, &err), COH_EINVAL);
    assert_non_null(strstr(err.msg, "vocab_size"));
    /* and a folder that pairs them is refused on load */
    assert_int_equal(ckpt_save(fx->ckpt, small, NULL, &err), COH_OK);
    assert_int_equal(tok_save(big, fx->tok, &err), COH_OK);
    expect_load_fails(fx->ckpt, COH_EFORMAT, "tokenizer.json", "vocab_size");
    /* without asking for the tokenizer the weights still load */
    assert_int_equal(ckpt_load(fx->ckpt, &m2, NULL, &err), COH_OK);
    model_destroy(m2);
    tok_destroy(big);
    model_destroy(small);
    model_destroy(m);
}

/* ---- refusals ----------------------------------------------------------------------- */

static void test_wrong_shape(void **state)
{
    fixture *fx = *state;
    model *m = make_model(0, 11);
    coh_err err;
    assert_int_equal(ckpt_save(fx->ckpt, m, NULL, &err), COH_OK);
    st_entry e[64];
    int n = model_entries(m, e);
    int i = entry_index(e, n, "model.layers.1.mlp.gate_proj.weight");
    e[i].shape[0] = 64; /* [176, 64] written as [64, 176]: same size, wrong shape */
    e[i].shape[1] = 176;
    assert_int_equal(st_write(fx->weights, e, n, NULL, &err), COH_OK);
    expect_load_fails(fx->ckpt, COH_ESHAPE, "model.layers.1.mlp.gate_proj.weight",
                      "[64, 176]");
    expect_load_fails(fx->ckpt, COH_ESHAPE, "[176, 64]", NULL);

    /* a norm vector written as a matrix */
    n = model_entries(m, e);
    i = entry_index(e, n, "model.norm.weight");
    e[i].ndim = 2;
    e[i].shape[0] = 1;
    e[i].shape[1] = 64;
    assert_int_equal(st_write(fx->weights, e, n, NULL, &err), COH_OK);
    expect_load_fails(fx->ckpt, COH_ESHAPE, "model.norm.weight", "[1, 64]");
    model_destroy(m);
}

static void test_wrong_name(void **state)
{
    fixture *fx = *state;
    model *m = make_model(0, 12);
    coh_err err;
    assert_int_equal(ckpt_save(fx->ckpt, m, NULL, &err), COH_OK);
    st_entry e[64];
    int n = model_entries(m, e);
    int i = entry_index(e, n, "model.layers.0.self_attn.k_proj.weight");
    e[i].name = "model.layers.0.self_attn.key.weight";
    assert_int_equal(st_write(fx->weights, e, n, NULL, &err), COH_OK);
    expect_load_fails(fx->ckpt, COH_EFORMAT, "model.layers.0.self_attn.key.weight",
                      "unexpected");

    /* an extra tensor next to the complete set is refused too */
    n = model_entries(m, e);
    float bias[64] = {0};
    e[n] = (st_entry){
        .name = "model.layers.0.self_attn.q_proj.bias", .ndim = 1, .shape = {64}, .data = bias};
    assert_int_equal(st_write(fx->weights, e, n + 1, NULL, &err), COH_OK);
    expect_load_fails(fx->ckpt, COH_EFORMAT, "model.layers.0.self_attn.q_proj.bias", NULL);
    model_destroy(m);
}

static void test_missing_tensor(void **state)
{
    fixture *fx = *state;
    model *m = make_model(0, 13);
    coh_err err;
    assert_int_equal(ckpt_save(fx->ckpt, m, NULL, &err), COH_OK);
    st_entry e[64];
    int n = model_entries(m, e);
    int i = entry_index(e, n, "model.layers.1.self_attn.v_proj.weight");
    e[i] = e[n - 1];
    assert_int_equal(st_write(fx->weights, e, n - 1, NULL, &err), COH_OK);
    expect_load_fails(fx->ckpt, COH_ENOTFOUND, "model.layers.1.self_attn.v_proj.weight",
                      "model.safetensors");

    /* untied config without lm_head: the message points at tie_word_embeddings */
    n = model_entries(m, e);
    i = entry_index(e, n, "lm_head.weight");
    assert_int_equal(i, n - 1);
    assert_int_equal(st_write(fx->weights, e, n - 1, NULL, &err), COH_OK);
    expect_load_fails(fx->ckpt, COH_ENOTFOUND, "lm_head.weight", "tie_word_embeddings");
    model_destroy(m);
}

static void test_tied_with_lm_head_refused(void **state)
{
    fixture *fx = *state;
    model *untied = make_model(0, 14);
    model *tied = make_model(1, 14);
    coh_err err;
    /* weights of the untied model (with lm_head) under the tied model's config */
    assert_int_equal(ckpt_save(fx->ckpt, untied, NULL, &err), COH_OK);
    assert_int_equal(model_config_save(fx->cfg, model_get_config(tied), &err), COH_OK);
    expect_load_fails(fx->ckpt, COH_EFORMAT, "lm_head.weight", "tie_word_embeddings");
    model_destroy(untied);
    model_destroy(tied);
}

static void test_truncated_and_corrupt_weights(void **state)
{
    fixture *fx = *state;
    model *m = make_model(0, 15);
    coh_err err;
    assert_int_equal(ckpt_save(fx->ckpt, m, NULL, &err), COH_OK);
    char *raw;
    size_t len;
    assert_int_equal(fs_read_all(fx->weights, &raw, &len, &err), COH_OK);
    /* cut in the data: the last tensor (lm_head) no longer fits */
    assert_int_equal(fs_write_atomic(fx->weights, raw, len - 10, &err), COH_OK);
    expect_load_fails(fx->ckpt, COH_EFORMAT, "lm_head.weight", "truncated");
    /* cut in the header */
    assert_int_equal(fs_write_atomic(fx->weights, raw, 100, &err), COH_OK);
    expect_load_fails(fx->ckpt, COH_EFORMAT, "model.safetensors", "header length");
    /* one flipped bit in the middle of the data */
    raw[len / 2] ^= 0x10;
    assert_int_equal(fs_write_atomic(fx->weights, raw, len, &err), COH_OK);
    expect_load_fails(fx->ckpt, COH_EFORMAT, "corrupt", "model.safetensors");
    free(raw);
    model_destroy(m);
}

static void test_missing_files(void **state)
{
    fixture *fx = *state;
    char nowhere[160];
    snprintf(nowhere, sizeof nowhere, "%s/no-such-dir", fx->dir);
    expect_load_fails(nowhere, COH_ENOTFOUND, "no-such-dir", "does not exist");

    model *m = make_model(1, 16);
    coh_err err;
    assert_int_equal(ckpt_save(fx->ckpt, m, NULL, &err), COH_OK);
    assert_int_equal(unlink(fx->weights), 0);
    expect_load_fails(fx->ckpt, COH_ENOTFOUND, "model.safetensors", fx->ckpt);
    assert_int_equal(ckpt_save(fx->ckpt, m, NULL, &err), COH_OK);
    assert_int_equal(unlink(fx->cfg), 0);
    expect_load_fails(fx->ckpt, COH_ENOTFOUND, "config.json", fx->ckpt);
    /* a bad config.json is reported with its path */
    write_text(fx->cfg, "{\"vocab_size\": 98}");
    expect_load_fails(fx->ckpt, COH_EFORMAT, "config.json", "hidden_size");
    model_destroy(m);
}

/* ---- F16 / BF16 checkpoints --------------------------------------------------------- */

static uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* float -> IEEE half, round to nearest even (finite inputs within half range). */
static uint16_t to_f16(float x)
{
    uint32_t b = f2u(x);
    uint32_t sign = (b >> 16) & 0x8000u;
    int exp = (int)((b >> 23) & 0xff) - 127 + 15;
    uint32_t mant = b & 0x7fffffu;
    if (exp >= 31)
        return (uint16_t)(sign | 0x7c00u);
    if (exp <= 0) {
        if (exp < -10)
            return (uint16_t)sign;
        mant |= 0x800000u;
        int shift = 14 - exp;
        uint32_t h = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1)))
            h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((uint32_t)exp << 10) | (mant >> 13), rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1)))
        h++;
    return (uint16_t)(sign | h);
}

/* IEEE half -> float, independently of the implementation under test. */
static float from_f16(uint16_t h)
{
    int e = (h >> 10) & 31, m = h & 1023;
    float s = (h & 0x8000) ? -1.0f : 1.0f;
    if (e == 0)
        return s * ldexpf((float)m, -24);
    return s * ldexpf((float)(1024 + m), e - 25);
}

static uint16_t to_bf16(float x)
{
    uint32_t b = f2u(x);
    return (uint16_t)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

/* Write the model's weights as F16 (bf16 = 0) or BF16 into path, in reverse table order so
 * that the reader cannot depend on order. */
static void write_half_weights(const char *path, const model *m, int bf16)
{
    int n = model_num_tensors(m);
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += model_tensor_at(m, i)->numel * 2;
    unsigned char *data = malloc(total);
    size_t hcap = 256 + (size_t)n * 200;
    char *hdr = malloc(hcap);
    assert_non_null(data);
    assert_non_null(hdr);
    size_t hl = (size_t)snprintf(hdr, hcap, "{\"__metadata__\":{\"format\":\"pt\"}");
    size_t off = 0;
    const float *p = model_params_const(m);
    for (int i = n - 1; i >= 0; i--) {
        const model_tensor *t = model_tensor_at(m, i);
        for (size_t k = 0; k < t->numel; k++) {
            float x = p[t->offset + k];
            uint16_t h = bf16 ? to_bf16(x) : to_f16(x);
            data[off + 2 * k] = (unsigned char)(h & 0xff);
            data[off + 2 * k + 1] = (unsigned char)(h >> 8);
        }
        char shape[48];
        if (t->ndim == 1)
            snprintf(shape, sizeof shape, "[%d]", t->shape[0]);
        else
            snprintf(shape, sizeof shape, "[%d,%d]", t->shape[0], t->shape[1]);
        hl += (size_t)snprintf(hdr + hl, hcap - hl,
                               ",\"%s\":{\"dtype\":\"%s\",\"shape\":%s,\"data_offsets\":[%zu,%zu]}",
                               t->name, bf16 ? "BF16" : "F16", shape, off, off + t->numel * 2);
        off += t->numel * 2;
        assert_true(hl < hcap);
    }
    hl += (size_t)snprintf(hdr + hl, hcap - hl, "}");
    unsigned char lenb[8];
    for (int i = 0; i < 8; i++)
        lenb[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    const void *parts[3] = {lenb, hdr, data};
    size_t lens[3] = {8, hl, total};
    coh_err err;
    assert_int_equal(fs_write_atomic_iov(path, parts, lens, 3, &err), COH_OK);
    free(hdr);
    free(data);
}

static void half_checkpoint(fixture *fx, int bf16, int tied)
{
    model *m = make_model(tied, 99);
    coh_err err;
    assert_int_equal(ckpt_save(fx->ckpt, m, NULL, &err), COH_OK);
    write_half_weights(fx->weights, m, bf16);
    model *m2 = NULL;
    int rc = ckpt_load(fx->ckpt, &m2, NULL, &err);
    if (rc != COH_OK)
        print_error("ckpt_load: %s\n", err.msg);
    assert_int_equal(rc, COH_OK);
    const float *a = model_params_const(m), *b = model_params_const(m2);
    size_t n = model_num_params(m), changed = 0, subnormal = 0;
    float rel_bound = bf16 ? ldexpf(1.0f, -8) : ldexpf(1.0f, -11);
    for (size_t i = 0; i < n; i++) {
        float want = bf16 ? u2f((uint32_t)to_bf16(a[i]) << 16) : from_f16(to_f16(a[i]));
        if (f2u(b[i]) != f2u(want))
            print_error("param %zu: %.9g -> got %.9g want %.9g\n", i, (double)a[i],
                        (double)b[i], (double)want);
        assert_int_equal(f2u(b[i]), f2u(want));
        changed += b[i] != a[i];
        if (!bf16 && fabsf(a[i]) < ldexpf(1.0f, -14)) {
            subnormal++;
            assert_true(fabsf(b[i] - a[i]) <= ldexpf(1.0f, -25));
        } else {
            assert_true(fabsf(b[i] - a[i]) <= rel_bound * fabsf(a[i]));
        }
    }
    assert_true(changed > n / 2); /* rounding really happened */
    if (!bf16)
        assert_true(subnormal > 0); /* N(0, 0.02) weights reach F16's subnormal range */
    model_destroy(m2);
    model_destroy(m);
}

static void test_f16_checkpoint(void **state) { half_checkpoint(*state, 0, 0); }
static void test_bf16_checkpoint(void **state) { half_checkpoint(*state, 1, 1); }

/* In-memory form (weight broadcast): bit-exact round trip; a flipped byte, a truncation
 * or a config that does not match the weights is refused with a message. */
static void test_buffer_roundtrip_and_corruption(void **state)
{
    (void)state;
    for (int tied = 0; tied <= 1; tied++) {
        model *m = make_model(tied, 31 + (uint64_t)tied);
        char *cfg = NULL;
        void *w = NULL;
        size_t wlen = 0;
        coh_err err;
        assert_int_equal(ckpt_to_buffer(m, &cfg, &w, &wlen, &err), COH_OK);
        assert_non_null(strstr(cfg, "LlamaForCausalLM"));
        model *back = NULL;
        if (ckpt_from_buffer(cfg, strlen(cfg), w, wlen, &back, &err))
            fail_msg("%s", err.msg);
        assert_int_equal(model_num_params(back), model_num_params(m));
        assert_memory_equal(model_params(back), model_params(m),
                            model_num_params(m) * sizeof(float));
        model_destroy(back);

        unsigned char *b = w;
        b[wlen - 5] ^= 0x40; /* a data byte */
        assert_int_not_equal(ckpt_from_buffer(cfg, strlen(cfg), w, wlen, &back, &err), COH_OK);
        assert_null(back);
        assert_non_null(strstr(err.msg, "received weights"));
        b[wlen - 5] ^= 0x40;
        assert_int_not_equal(ckpt_from_buffer(cfg, strlen(cfg), w, wlen - 100, &back, &err),
                             COH_OK);
        assert_null(back);
        /* a config of another shape does not accept these weights */
        model_config c = *model_get_config(m);
        c.hidden_dim += 8;
        char *other = NULL;
        assert_int_equal(model_config_to_json(&c, &other, &err), COH_OK);
        assert_int_not_equal(ckpt_from_buffer(other, strlen(other), w, wlen, &back, &err),
                             COH_OK);
        assert_non_null(strstr(err.msg, "mlp"));
        assert_int_equal(ckpt_from_buffer("{not json", 9, w, wlen, &back, &err), COH_EFORMAT);
        free(other);
        free(cfg);
        free(w);
        model_destroy(m);
    }
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup_dir, teardown_dir)
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_default_values),
        T(test_config_roundtrip),
        T(test_config_from_elsewhere),
        T(test_config_refused),
        T(test_roundtrip_untied),
        T(test_roundtrip_tied),
        T(test_no_tokenizer),
        T(test_wrong_shape),
        T(test_wrong_name),
        T(test_missing_tensor),
        T(test_tied_with_lm_head_refused),
        T(test_truncated_and_corrupt_weights),
        T(test_missing_files),
        T(test_f16_checkpoint),
        T(test_bf16_checkpoint),
        cmocka_unit_test(test_buffer_roundtrip_and_corruption),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
