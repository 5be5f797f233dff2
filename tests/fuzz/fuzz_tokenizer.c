/* fuzz_tokenizer.c - libFuzzer harness: tokenizer files (Cohort's own format and Hugging Face
 * tokenizer.json, both through tok_from_text) and, when one loads, a round of encoding and
 * decoding the input itself as text. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    coh_err err;
    tokenizer *t = NULL;
    if (tok_from_text((const char *)data, size, &t, &err) == COH_OK) {
        char text[256];
        size_t n = size < sizeof text - 1 ? size : sizeof text - 1;
        memcpy(text, data, n);
        text[n] = 0;
        int ids[512], k = 0;
        if (tok_encode(t, text, ids, 512, &k, &err) == COH_OK) {
            char out[4096];
            (void)tok_decode(t, ids, k, out, sizeof out);
        }
        tok_destroy(t);
    }
    return 0;
}
