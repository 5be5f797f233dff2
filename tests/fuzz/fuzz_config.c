/* fuzz_config.c - libFuzzer harness: config.json text through model_config_parse; a config it
 * accepts must also validate, serialise and parse back to the same fields, and a model of
 * it is created only when small (no harness-side out-of-memory). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    coh_err err;
    model_config c;
    if (model_config_parse((const char *)data, size, &c, &err) != COH_OK)
        return 0;
    if (model_config_validate(&c, &err) != COH_OK)
        abort(); /* parse accepted what validate refuses */
    char *json = NULL;
    if (model_config_to_json(&c, &json, &err) == COH_OK) {
        model_config back;
        if (model_config_parse(json, strlen(json), &back, &err) != COH_OK)
            abort(); /* what we write, we must read */
        if (back.dim != c.dim || back.n_layers != c.n_layers || back.vocab_size != c.vocab_size ||
            back.n_heads != c.n_heads || back.head_dim != c.head_dim)
            abort();
        free(json);
    }
    double params = (double)c.vocab_size * c.dim * 2 +
                    (double)c.n_layers * c.dim * (4.0 * c.dim + 3.0 * c.hidden_dim);
    if (params < 2e6 && c.max_seq <= 4096) {
        model *m = NULL;
        if (model_create(&c, &m, &err) == COH_OK)
            model_destroy(m);
    }
    return 0;
}
