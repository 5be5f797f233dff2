/* tokenizer.h - the policy's tokenizer: Cohort's built-in character tokenizer, or a Hugging
 * Face tokenizer.json read exactly as the `tokenizers` library reads it (see hftok.h).
 *
 * Both kinds live in a checkpoint folder as tokenizer.json; tok_load and tok_from_text tell
 * them apart by content (a Hugging Face file is an object with "model"). A Hugging Face
 * tokenizer is saved back verbatim (the original text is kept). tok_load_dir also reads
 * tokenizer_config.json next to it for bos_token / eos_token and add_bos_token /
 * add_eos_token.
 *
 * The character kind: ids 0, 1, 2 are <pad>, <bos>, <eos>; every later id is one character. The default
 * vocabulary is the three specials followed by printable ASCII 32..126 (98 ids). A checkpoint
 * folder stores it as tokenizer.json:
 *   {"type": "cohort-char", "version": 1, "specials": ["<pad>","<bos>","<eos>"],
 *    "chars": " !\"#...~"}
 * where chars[i] has id 3 + i. Encoding never adds <bos>; callers prepend tok_bos_id() when
 * tok_add_bos() says so (always, for this kind).
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

/* ---- lifecycle ---------------------------------------------------------------------- */

int tok_create_default(tokenizer **out, coh_err *err);
/* Load a tokenizer.json of either kind; refuses unknown types, duplicate chars, non-ASCII
 * (character kind), unsupported Hugging Face models, types and options (named), with a
 * message that names the file. Without tokenizer_config.json a Hugging Face tokenizer has
 * no BOS/EOS unless its TemplateProcessing post_processor starts with a special token. */
int tok_load(const char *path, tokenizer **out, coh_err *err);
/* Load DIR/tokenizer.json and, for a Hugging Face tokenizer, DIR/tokenizer_config.json
 * when present: bos_token / eos_token (a string, or an object with "content"; or
 * bos_token_id / eos_token_id), add_bos_token, add_eos_token. A token that is not in the
 * tokenizer is refused naming it. */
int tok_load_dir(const char *dir, tokenizer **out, coh_err *err);
/* Atomic write (temp file, fsync, rename); a Hugging Face tokenizer.json is written back
 * byte for byte as it was read. */
int tok_save(const tokenizer *t, const char *path, coh_err *err);
/* DIR/tokenizer.json (as tok_save) and, for a tokenizer read by tok_load_dir from a folder
 * with one, DIR/tokenizer_config.json byte for byte as it was read (chat template, special
 * tokens), so that a checkpoint of a Hugging Face policy loads as its source folder did. */
int tok_save_dir(const tokenizer *t, const char *dir, coh_err *err);
/* The same JSON in memory (a weight manifest): *out is malloc'd text; tok_from_text parses
 * such text with every check tok_load makes. */
int tok_to_json(const tokenizer *t, char **out, coh_err *err);
int tok_from_text(const char *text, size_t len, tokenizer **out, coh_err *err);
void tok_destroy(tokenizer *t);

/* ---- queries ------------------------------------------------------------------------ */

/* "cohort-char" or "huggingface". */
const char *tok_kind(const tokenizer *t);
int tok_vocab_size(const tokenizer *t);
/* BOS / EOS ids: TOK_BOS / TOK_EOS for the character kind; for a Hugging Face tokenizer
 * what tokenizer_config.json (or the post_processor) says, or -1 when it has none. */
int tok_bos_id(const tokenizer *t);
int tok_eos_id(const tokenizer *t);
/* Whether a model's prompt starts with tok_bos_id() (always for the character kind;
 * add_bos_token for a Hugging Face one) / ends with tok_eos_id() (add_eos_token). */
int tok_add_bos(const tokenizer *t);
int tok_add_eos(const tokenizer *t);

/* ---- encoding and decoding ---------------------------------------------------------- */

/* Encode text into ids[0..*n), never adding BOS/EOS. Fails with COH_EINVAL naming the first
 * character (and its position) that is not in the vocabulary (character kind) or the byte
 * offset of invalid UTF-8 (Hugging Face kind), or COH_ERANGE when more than max_ids are
 * needed. */
int tok_encode(const tokenizer *t, const char *text, int *ids, int max_ids, int *n,
               coh_err *err);
/* Decode ids into out (always NUL-terminated, truncated to cap - 1 bytes, at a character
 * boundary for the Hugging Face kind). Out-of-range ids are skipped; special ids are skipped
 * by the character kind and kept (as their text) by the Hugging Face kind, which decodes as
 * the tokenizers library does. Returns the number of bytes written. */
size_t tok_decode(const tokenizer *t, const int *ids, int n, char *out, size_t cap);

#endif
