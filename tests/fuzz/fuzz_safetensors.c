/* fuzz_safetensors.c - libFuzzer harness: a safetensors blob (the weight file, and the blob
 * the learner broadcasts) through st_open_buffer and every tensor's F32 read, then the
 * checkpoint builder (ckpt_from_buffer) with a small fixed config. Anything accepted must be
 * readable without a sanitizer report; anything else refused with a message. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "model.h"
#include "safetensors.h"

static const char k_config[] =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"vocab_size\": 8, \"hidden_size\": 8, "
    "\"intermediate_size\": 16, \"num_hidden_layers\": 1, \"num_attention_heads\": 2, "
    "\"num_key_value_heads\": 1, \"max_position_embeddings\": 16, \"tie_word_embeddings\": true}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    coh_err err;
    st_file *f = NULL;
    if (st_open_buffer(data, size, "fuzz", &f, &err) == COH_OK) {
        for (int i = 0; i < st_count(f); i++) {
            const st_tensor_info *e = st_info(f, i);
            if (!e || e->numel > (1u << 20))
                continue;
            float *dst = malloc((e->numel ? e->numel : 1) * sizeof *dst);
            if (dst) {
                (void)st_read_f32(f, e->name, dst, e->numel, &err);
                free(dst);
            }
        }
        st_close(f);
    }
    model *m = NULL;
    if (ckpt_from_buffer(k_config, sizeof k_config - 1, data, size, &m, &err) == COH_OK)
        model_destroy(m);
    return 0;
}
