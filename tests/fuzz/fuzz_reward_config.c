/* fuzz_reward_config.c - libFuzzer harness: reward.json text through scorer_create (every
 * key, range and verifier entry checked), and, when it is accepted, one built-in item scored
 * with the input itself as the completion (no verifier is called: remote is NULL, so routed
 * tasks fail cleanly). */
#define _GNU_SOURCE /* memmem */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "scorer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* the code verifier's sandbox pool forks: not inside the fuzzer (its own tests cover it) */
    if (memmem(data, size, "\"code\"", 6))
        return 0;
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = 0;
    coh_err err;
    scorer *s = NULL;
    if (scorer_create(text, NULL, NULL, &s, &err) == COH_OK) {
        scorer_item it;
        memset(&it, 0, sizeof it);
        it.task = "addition";
        it.prompt = "12+30=";
        it.completion = text;
        it.answer = "42";
        it.metadata_json = "";
        scorer_result r;
        if (scorer_score(s, &it, &r, &err) == COH_OK && r.status == SCORE_OK &&
            !(r.reward == r.reward && r.reward - r.reward == 0))
            abort(); /* an OK reward must be finite */
        scorer_destroy(s);
    }
    free(text);
    return 0;
}
