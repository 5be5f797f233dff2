/* tokenizer.h - the built-in character tokenizer.
 *
 * Ids 0, 1, 2 are <pad>, <bos>, <eos>; every later id is one character. The default
 * vocabulary is the three specials followed by printable ASCII 32..126 (98 ids). A checkpoint
 * folder stores it as tokenizer.json:
 *   {"type": "cohort-char", "version": 1, "specials": ["<pad>","<bos>","<eos>"],
 *    "chars": " !\"#...~"}
 * where chars[i] has id 3 + i. Encoding never adds <bos>; callers prepend tok_bos().
 */
#ifndef COHORT_TOKENIZER_H
#define COHORT_TOKENIZER_H

#include <stddef.h>

#include "err.h"

#define TOK_PAD 0
#define TOK_BOS 1
#define TOK_EOS 2
#define TOK_FILE "tokenizer.json"

typedef struct tokenizer tokenizer; /* opaque */

int tok_create_default(tokenizer **out, coh_err *err);
/* Load a tokenizer.json; refuses unknown types, duplicate chars, non-ASCII with a message. */
int tok_load(const char *path, tokenizer **out, coh_err *err);
/* Atomic write (temp file, fsync, rename). */
int tok_save(const tokenizer *t, const char *path, coh_err *err);
/* The same JSON in memory (a weight manifest): *out is malloc'd text; tok_from_text parses
 * such text with every check tok_load makes. */
int tok_to_json(const tokenizer *t, char **out, coh_err *err);
int tok_from_text(const char *text, size_t len, tokenizer **out, coh_err *err);
void tok_destroy(tokenizer *t);

int tok_vocab_size(const tokenizer *t);

/* Encode text into ids[0..*n). Fails with COH_EINVAL naming the first character (and its
 * position) that is not in the vocabulary, or COH_ERANGE when more than max_ids are needed. */
int tok_encode(const tokenizer *t, const char *text, int *ids, int max_ids, int *n,
               coh_err *err);
/* Decode ids into out (always NUL-terminated, truncated to cap - 1 chars). Special ids and
 * out-of-range ids are skipped. Returns the number of chars written. */
size_t tok_decode(const tokenizer *t, const int *ids, int n, char *out, size_t cap);

#endif
