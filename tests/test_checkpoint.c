/* test_checkpoint.c - config.json and checkpoint folders: bit-exact round trips (tied and
 * untied), F16/BF16 weights, and refusal of wrong, missing, extra or truncated tensors with
 * messages that name them; model families (Qwen2, Llama 3 rope_scaling and head_dim,
 * Mistral), eos_token_id lists from config.json and generation_config.json, and configs
 * refused with the field named (unknown architecture or rope_type, sliding window, ...). */
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
#include <sys/stat.h>
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
    assert_int_equal(a->family, b->family);
    assert_int_equal(model_config_head_dim(a), model_config_head_dim(b));
    assert_int_equal(a->qkv_bias, b->qkv_bias);
    assert_int_equal(a->o_bias, b->o_bias);
    assert_int_equal(a->rope_type, b->rope_type);
    if (a->rope_type == MODEL_ROPE_LLAMA3) {
        assert_true(a->rope_factor == b->rope_factor);
        assert_true(a->rope_low_freq_factor == b->rope_low_freq_factor);
        assert_true(a->rope_high_freq_factor == b->rope_high_freq_factor);
        assert_int_equal(a->rope_orig_max_pos, b->rope_orig_max_pos);
    }
    assert_int_equal(a->n_eos, b->n_eos);
    for (int i = 0; i < a->n_eos; i++)
        assert_int_equal(a->eos_ids[i], b->eos_ids[i]);
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
        {", \"num_attention_heads\": 4, \"mlp_bias\": true}", COH_EUNSUPPORTED, "mlp_bias"},
        {", \"num_attention_heads\": 4, \"attention_bias\": 1}", COH_EFORMAT,
         "attention_bias"},
        {", \"num_attention_heads\": 4, \"rope_scaling\": {\"type\": \"linear\"}}",
         COH_EUNSUPPORTED, "rope_scaling.type is \"linear\""},
        {", \"num_attention_heads\": 4, \"head_dim\": 7}", COH_EINVAL, "head_dim"},
        {", \"num_attention_heads\": 4, \"head_dim\": 0}", COH_ERANGE, "head_dim"},
        /* the hidden size must divide only when no head_dim is given */
        {", \"num_attention_heads\": 6}", COH_EINVAL, "hidden_size = 64 is not divisible"},
        /* RoPE scaling other than llama3, named */
        {", \"num_attention_heads\": 4, \"rope_scaling\": {\"rope_type\": \"yarn\", "
         "\"factor\": 4.0}}",
         COH_EUNSUPPORTED, "rope_scaling.rope_type is \"yarn\""},
        {", \"num_attention_heads\": 4, \"rope_scaling\": {\"rope_type\": \"dynamic\", "
         "\"factor\": 2.0}}",
         COH_EUNSUPPORTED, "dynamic"},
        {", \"num_attention_heads\": 4, \"rope_scaling\": {\"factor\": 2.0}}", COH_EFORMAT,
         "rope_scaling.rope_type"},
        {", \"num_attention_heads\": 4, \"rope_scaling\": {\"rope_type\": \"llama3\", "
         "\"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0}}",
         COH_EFORMAT, "rope_scaling.original_max_position_embeddings"},
        {", \"num_attention_heads\": 4, \"rope_scaling\": {\"rope_type\": \"llama3\", "
         "\"factor\": 8.0, \"low_freq_factor\": 4.0, \"high_freq_factor\": 4.0, "
         "\"original_max_position_embeddings\": 8192}}",
         COH_ERANGE, "high_freq_factor"},
        {", \"num_attention_heads\": 4, \"partial_rotary_factor\": 0.5}", COH_EUNSUPPORTED,
         "partial_rotary_factor"},
        /* architectures and model_type */
        {", \"num_attention_heads\": 4, \"architectures\": [\"GPT2LMHeadModel\"]}",
         COH_EUNSUPPORTED, "architectures[0] is \"GPT2LMHeadModel\""},
        {", \"num_attention_heads\": 4, \"architectures\": [\"Phi3ForCausalLM\"]}",
         COH_EUNSUPPORTED, "Phi3ForCausalLM"},
        {", \"num_attention_heads\": 4, \"architectures\": \"LlamaForCausalLM\"}",
         COH_EFORMAT, "architectures"},
        {", \"num_attention_heads\": 4, \"model_type\": \"gemma\"}", COH_EUNSUPPORTED,
         "model_type is \"gemma\""},
        {", \"num_attention_heads\": 4, \"architectures\": [\"Qwen2ForCausalLM\"], "
         "\"model_type\": \"llama\"}",
         COH_EUNSUPPORTED, "model_type"},
        /* a sliding window narrower than the context */
        {", \"num_attention_heads\": 4, \"architectures\": [\"MistralForCausalLM\"], "
         "\"sliding_window\": 16}",
         COH_EUNSUPPORTED, "sliding_window = 16"},
        {", \"num_attention_heads\": 4, \"architectures\": [\"Qwen2ForCausalLM\"], "
         "\"use_sliding_window\": true, \"sliding_window\": 32}",
         COH_EUNSUPPORTED, "use_sliding_window"},
        /* eos_token_id */
        {", \"num_attention_heads\": 4, \"eos_token_id\": \"</s>\"}", COH_EFORMAT,
         "eos_token_id"},
        {", \"num_attention_heads\": 4, \"eos_token_id\": [2, -1]}", COH_EFORMAT,
         "eos_token_id"},
        {", \"num_attention_heads\": 4, \"eos_token_id\": 98}", COH_ERANGE, "eos_token_id"},
        {", \"num_attention_heads\": 4, \"eos_token_id\": [1,2,3,4,5,6,7,8,9]}", COH_ERANGE,
         "eos_token_id"},
        {", \"num_attention_heads\": 4", COH_EFORMAT, "JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char json[1024];
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

/* ---- model families ------------------------------------------------------------------- */

/* Hugging Face style configs of each family load with the right fields, and every field
 * survives model_config_save / model_config_load. */
static void test_config_families(void **state)
{
    fixture *fx = *state;
    coh_err err;
    assert_int_equal(fs_mkdirs(fx->ckpt, &err), COH_OK);
    const char *common = "\"vocab_size\": 200, \"hidden_size\": 48, \"intermediate_size\": 96, "
                         "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, "
                         "\"max_position_embeddings\": 64";
    char json[1024];
    model_config r, back;

    /* Qwen2: implicit q/k/v biases (no attention_bias key), GQA, tied, an unused window */
    snprintf(json, sizeof json,
             "{\"architectures\": [\"Qwen2ForCausalLM\"], \"model_type\": \"qwen2\", %s, "
             "\"num_key_value_heads\": 2, \"tie_word_embeddings\": true, "
             "\"use_sliding_window\": false, \"sliding_window\": 32, \"max_window_layers\": 2, "
             "\"eos_token_id\": 151643, \"vocab_size\": 151936}",
             common);
    /* vocab_size given twice: cJSON reads the first (200), so 151643 is out of range */
    write_text(fx->cfg, json);
    assert_int_equal(model_config_load(fx->cfg, &r, &err), COH_ERANGE);
    assert_non_null(strstr(err.msg, "eos_token_id 151643"));
    snprintf(json, sizeof json,
             "{\"architectures\": [\"Qwen2ForCausalLM\"], \"model_type\": \"qwen2\", %s, "
             "\"num_key_value_heads\": 2, \"tie_word_embeddings\": true, "
             "\"use_sliding_window\": false, \"sliding_window\": 32, \"max_window_layers\": 2, "
             "\"eos_token_id\": 7}",
             common);
    write_text(fx->cfg, json);
    if (model_config_load(fx->cfg, &r, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(r.family, MODEL_FAMILY_QWEN2);
    assert_int_equal(r.qkv_bias, 1);
    assert_int_equal(r.o_bias, 0);
    assert_int_equal(r.n_kv_heads, 2);
    assert_int_equal(r.tie_embeddings, 1);
    assert_int_equal(r.n_eos, 1);
    assert_int_equal(r.eos_ids[0], 7);
    assert_int_equal(model_config_head_dim(&r), 12);
    assert_string_equal(model_family_arch(r.family), "Qwen2ForCausalLM");
    assert_int_equal(model_config_save(fx->cfg, &r, &err), COH_OK);
    assert_int_equal(model_config_load(fx->cfg, &back, &err), COH_OK);
    assert_config_equal(&r, &back);

    /* Llama 3.x: rope_scaling llama3, explicit head_dim that is not hidden / heads, eos list */
    snprintf(json, sizeof json,
             "{\"architectures\": [\"LlamaForCausalLM\"], %s, \"head_dim\": 16, "
             "\"num_key_value_heads\": 1, \"rope_theta\": 500000.0, "
             "\"eos_token_id\": [128, 129, 130], \"attention_bias\": false, "
             "\"rope_scaling\": {\"factor\": 32.0, \"high_freq_factor\": 4.0, "
             "\"low_freq_factor\": 1.0, \"original_max_position_embeddings\": 8192, "
             "\"rope_type\": \"llama3\"}}",
             common);
    write_text(fx->cfg, json);
    if (model_config_load(fx->cfg, &r, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(r.family, MODEL_FAMILY_LLAMA);
    assert_int_equal(r.head_dim, 16);
    assert_int_equal(model_config_head_dim(&r), 16);
    assert_int_equal(r.qkv_bias + r.o_bias, 0);
    assert_int_equal(r.rope_type, MODEL_ROPE_LLAMA3);
    assert_true(r.rope_factor == 32.0f && r.rope_low_freq_factor == 1.0f &&
                r.rope_high_freq_factor == 4.0f);
    assert_int_equal(r.rope_orig_max_pos, 8192);
    assert_int_equal(r.n_eos, 3);
    assert_int_equal(r.eos_ids[2], 130);
    assert_int_equal(model_config_save(fx->cfg, &r, &err), COH_OK);
    assert_int_equal(model_config_load(fx->cfg, &back, &err), COH_OK);
    assert_config_equal(&r, &back);
    char *text;
    size_t len;
    assert_int_equal(fs_read_all(fx->cfg, &text, &len, &err), COH_OK);
    assert_non_null(strstr(text, "\"llama3\""));
    assert_non_null(strstr(text, "\"head_dim\""));
    free(text);
    /* the older "type" spelling and "default" */
    snprintf(json, sizeof json,
             "{%s, \"rope_scaling\": {\"type\": \"llama3\", \"factor\": 8.0, "
             "\"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, "
             "\"original_max_position_embeddings\": 8192}}",
             common);
    assert_int_equal(model_config_parse(json, strlen(json), &r, &err), COH_OK);
    assert_int_equal(r.rope_type, MODEL_ROPE_LLAMA3);
    snprintf(json, sizeof json, "{%s, \"rope_scaling\": {\"rope_type\": \"default\"}}", common);
    assert_int_equal(model_config_parse(json, strlen(json), &r, &err), COH_OK);
    assert_int_equal(r.rope_type, MODEL_ROPE_DEFAULT);

    /* Llama attention_bias: biases on q/k/v/o */
    snprintf(json, sizeof json, "{\"model_type\": \"llama\", %s, \"attention_bias\": true}",
             common);
    assert_int_equal(model_config_parse(json, strlen(json), &r, &err), COH_OK);
    assert_int_equal(r.qkv_bias, 1);
    assert_int_equal(r.o_bias, 1);
    assert_int_equal(model_config_save(fx->cfg, &r, &err), COH_OK);
    assert_int_equal(model_config_load(fx->cfg, &back, &err), COH_OK);
    assert_config_equal(&r, &back);

    /* Mistral: no window, or one at least as wide as the context; head_dim null */
    const char *windows[] = {"null", "64", "4096"};
    for (int i = 0; i < 3; i++) {
        snprintf(json, sizeof json,
                 "{\"architectures\": [\"MistralForCausalLM\"], \"model_type\": \"mistral\", "
                 "%s, \"num_key_value_heads\": 1, \"head_dim\": null, \"sliding_window\": %s, "
                 "\"attention_bias\": true}",
                 common, windows[i]);
        if (model_config_parse(json, strlen(json), &r, &err))
            fail_msg("sliding_window %s: %s", windows[i], err.msg);
        assert_int_equal(r.family, MODEL_FAMILY_MISTRAL);
        assert_int_equal(r.qkv_bias + r.o_bias, 0); /* MistralAttention has no biases */
        assert_int_equal(model_config_head_dim(&r), 12);
    }
    assert_int_equal(model_config_save(fx->cfg, &r, &err), COH_OK);
    assert_int_equal(model_config_load(fx->cfg, &back, &err), COH_OK);
    assert_config_equal(&r, &back);
    snprintf(json, sizeof json,
             "{\"architectures\": [\"MistralForCausalLM\"], %s, \"sliding_window\": 63}", common);
    assert_int_equal(model_config_parse(json, strlen(json), &r, &err), COH_EUNSUPPORTED);
    assert_non_null(strstr(err.msg, "sliding_window = 63"));

    /* a reward model of a family reads as that family */
    snprintf(json, sizeof json, "{\"architectures\": [\"Qwen2ForSequenceClassification\"], %s}",
             common);
    assert_int_equal(model_config_parse(json, strlen(json), &r, &err), COH_OK);
    assert_int_equal(r.family, MODEL_FAMILY_QWEN2);

    /* combinations a family cannot express are refused by validation */
    model_config c = model_config_default(98);
    c.qkv_bias = 1;
    assert_int_equal(model_config_validate(&c, &err), COH_EINVAL);
    assert_non_null(strstr(err.msg, "attention_bias"));
    c.family = MODEL_FAMILY_MISTRAL;
    assert_int_equal(model_config_validate(&c, &err), COH_EINVAL);
    c.family = 7;
    assert_int_equal(model_config_validate(&c, &err), COH_EINVAL);
    c = model_config_default(98);
    c.dim = 30; /* 4 heads do not divide 30, but an explicit head_dim makes it valid */
    assert_int_equal(model_config_validate(&c, &err), COH_EINVAL);
    assert_non_null(strstr(err.msg, "hidden_size"));
    c.head_dim = 8;
    assert_int_equal(model_config_validate(&c, &err), COH_OK);
}

/* A Qwen2 model with llama3 RoPE and head_dim 12 (4 heads on hidden 32): its bias tensors
 * are saved and loaded bit-exactly, through a folder and through the broadcast buffer; a
 * file without them, or a plain Llama config given them, is refused naming the tensor. */
static void test_family_checkpoint(void **state)
{
    fixture *fx = *state;
    model_config c = model_config_default(98);
    c.dim = 32;
    c.head_dim = 12;
    c.n_kv_heads = 2;
    c.family = MODEL_FAMILY_QWEN2;
    c.qkv_bias = 1;
    c.rope_type = MODEL_ROPE_LLAMA3;
    c.rope_factor = 8.0f;
    c.rope_low_freq_factor = 1.0f;
    c.rope_high_freq_factor = 4.0f;
    c.rope_orig_max_pos = 32;
    c.n_eos = 2;
    c.eos_ids[0] = 2;
    c.eos_ids[1] = 5;
    model *m = NULL;
    coh_err err;
    assert_int_equal(model_create(&c, &m, &err), COH_OK);
    model_init_random(m, 17);
    const model_tensor *bq = model_find_tensor(m, "model.layers.1.self_attn.q_proj.bias");
    assert_non_null(bq);
    assert_int_equal(bq->numel, 48);
    for (size_t i = 0; i < bq->numel; i++) /* init leaves biases zero, as transformers does */
        assert_true(model_params(m)[bq->offset + i] == 0.0f);
    float *p = model_params(m);
    for (int i = 0; i < model_num_tensors(m); i++) {
        const model_tensor *t = model_tensor_at(m, i);
        if (strstr(t->name, ".bias"))
            for (size_t j = 0; j < t->numel; j++)
                p[t->offset + j] = 0.01f * (float)(j + 1) - 0.1f;
    }
    assert_int_equal(ckpt_save(fx->ckpt, m, NULL, &err), COH_OK);
    model *m2 = NULL;
    if (ckpt_load(fx->ckpt, &m2, NULL, &err))
        fail_msg("%s", err.msg);
    assert_config_equal(model_get_config(m), model_get_config(m2));
    assert_memory_equal(model_params_const(m2), model_params_const(m),
                        model_num_params(m) * sizeof(float));
    model_destroy(m2);

    char *cfg = NULL;
    void *w = NULL;
    size_t wlen = 0;
    assert_int_equal(ckpt_to_buffer(m, &cfg, &w, &wlen, &err), COH_OK);
    assert_non_null(strstr(cfg, "Qwen2ForCausalLM"));
    assert_int_equal(ckpt_from_buffer(cfg, strlen(cfg), w, wlen, &m2, &err), COH_OK);
    assert_config_equal(model_get_config(m), model_get_config(m2));
    assert_memory_equal(model_params_const(m2), model_params_const(m),
                        model_num_params(m) * sizeof(float));
    model_destroy(m2);
    free(cfg);
    free(w);

    /* the weights without one bias tensor */
    st_entry *e = calloc((size_t)model_num_tensors(m) + 1, sizeof *e);
    int n = model_entries(m, e);
    int k = entry_index(e, n, "model.layers.0.self_attn.k_proj.bias");
    e[k] = e[n - 1];
    assert_int_equal(st_write(fx->weights, e, n - 1, NULL, &err), COH_OK);
    expect_load_fails(fx->ckpt, COH_ENOTFOUND, "model.layers.0.self_attn.k_proj.bias", NULL);
    /* all of them, but config.json says plain Llama */
    n = model_entries(m, e);
    assert_int_equal(st_write(fx->weights, e, n, NULL, &err), COH_OK);
    model_config plain = c;
    plain.family = MODEL_FAMILY_LLAMA;
    plain.qkv_bias = 0;
    assert_int_equal(model_config_save(fx->cfg, &plain, &err), COH_OK);
    expect_load_fails(fx->ckpt, COH_EFORMAT, "_proj.bias", "attention_bias");
    free(e);
    model_destroy(m);
}

/* generation_config.json's eos_token_id (an int or a list) replaces config.json's. */
static void test_generation_config(void **state)
{
    fixture *fx = *state;
    model_config c = model_config_default(98);
    c.n_eos = 1;
    c.eos_ids[0] = 2;
    model *m = NULL;
    coh_err err;
    assert_int_equal(model_create(&c, &m, &err), COH_OK);
    model_init_random(m, 3);
    assert_int_equal(ckpt_save(fx->ckpt, m, NULL, &err), COH_OK);
    char gen[160];
    snprintf(gen, sizeof gen, "%s/%s", fx->ckpt, CKPT_GENERATION);

    model *m2 = NULL;
    assert_int_equal(ckpt_load(fx->ckpt, &m2, NULL, &err), COH_OK);
    assert_int_equal(model_get_config(m2)->n_eos, 1); /* config.json's alone */
    assert_int_equal(model_get_config(m2)->eos_ids[0], 2);
    model_destroy(m2);

    write_text(gen, "{\"bos_token_id\": 1, \"eos_token_id\": [3, 4, 9], \"do_sample\": true}");
    assert_int_equal(ckpt_load(fx->ckpt, &m2, NULL, &err), COH_OK);
    const model_config *g = model_get_config(m2);
    assert_int_equal(g->n_eos, 3);
    assert_int_equal(g->eos_ids[0], 3);
    assert_int_equal(g->eos_ids[1], 4);
    assert_int_equal(g->eos_ids[2], 9);
    model_destroy(m2);

    write_text(gen, "{\"eos_token_id\": 5}");
    assert_int_equal(ckpt_load(fx->ckpt, &m2, NULL, &err), COH_OK);
    assert_int_equal(model_get_config(m2)->n_eos, 1);
    assert_int_equal(model_get_config(m2)->eos_ids[0], 5);
    model_destroy(m2);

    write_text(gen, "{\"temperature\": 0.6}"); /* no eos_token_id: config.json's stays */
    assert_int_equal(ckpt_load(fx->ckpt, &m2, NULL, &err), COH_OK);
    assert_int_equal(model_get_config(m2)->eos_ids[0], 2);
    model_destroy(m2);

    write_text(gen, "{\"eos_token_id\": \"</s>\"}");
    expect_load_fails(fx->ckpt, COH_EFORMAT, "eos_token_id", CKPT_GENERATION);
    write_text(gen, "{\"eos_token_id\": [2, 400]}");
    expect_load_fails(fx->ckpt, COH_ERANGE, "eos_token_id 400", CKPT_GENERATION);
    write_text(gen, "[1, 2]");
    expect_load_fails(fx->ckpt, COH_EFORMAT, CKPT_GENERATION, NULL);
    model_destroy(m);
}

/* A FIFO (or device) given where a file is expected is refused at once, never waited on
 * (issue 12: a FIFO as config.json blocked forever). The test would hang, not pass, if the
 * read waited for a writer. */
static void test_not_regular_file_refused(void **state)
{
    fixture *fx = *state;
    char fifo[600];
    snprintf(fifo, sizeof fifo, "%s/config-fifo", fx->dir);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    char *buf = NULL;
    size_t len = 0;
    coh_err err;
    assert_int_equal(fs_read_all(fifo, &buf, &len, &err), COH_EIO);
    assert_null(buf);
    assert_non_null(strstr(err.msg, "not a regular file (a FIFO)"));
    model_config c;
    assert_int_not_equal(model_config_load(fifo, &c, &err), COH_OK);
    assert_non_null(strstr(err.msg, "FIFO"));
    assert_int_equal(fs_read_all("/dev/zero", &buf, &len, &err), COH_EIO);
    assert_non_null(strstr(err.msg, "character device"));
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
        T(test_config_families),
        T(test_family_checkpoint),
        T(test_generation_config),
        T(test_not_regular_file_refused),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
