/* hftok.h - Hugging Face tokenizer.json (BPE models) read exactly as the `tokenizers` library
 * reads it.
 *
 * What is understood (anything else is refused at load time with a message naming it):
 *   model          "BPE": vocab, merges ("a b" strings or ["a", "b"] pairs), unk_token,
 *                  fuse_unk, byte_fallback (<0xXX> tokens), ignore_merges; dropout,
 *                  continuing_subword_prefix and end_of_word_suffix must be null;
 *   added_tokens   id, content, special, normalized, lstrip, rstrip, single_word: matched
 *                  leftmost-longest before anything else (normalized: false ones in the raw
 *                  text, normalized: true ones in the normalized text between those);
 *   normalizer     null, NFC, NFD, NFKC, NFKD (utf8proc), Prepend, Replace (String pattern),
 *                  Sequence;
 *   pre_tokenizer  null, ByteLevel (GPT-2's regex when use_regex; add_prefix_space), Split
 *                  (Regex or String pattern; Isolated, Removed, MergedWithPrevious,
 *                  MergedWithNext, Contiguous; invert), Digits, Sequence. Regexes are
 *                  Oniguruma's flavour, translated for PCRE2 (UTF, UCP, JIT): \s is Unicode
 *                  White_Space, \w is L|M|Nd|Pc, \h is a hex digit, $ and ^ work per line;
 *   post_processor null, ByteLevel (offsets only), TemplateProcessing (only read for the
 *                  special token it puts first: hft_template_bos);
 *   decoder        null (tokens joined by spaces), ByteLevel, Replace (String), ByteFallback,
 *                  Fuse, Strip, Sequence.
 *
 * Encoding never adds special tokens around the text. All functions take a const handle and
 * keep no per-call state in it: one hft may be used by several threads at once. The one
 * thing encoding writes into a handle is its bounded word cache (ids of short words, 512 KiB
 * per handle), shared by those threads without locks: every entry is a seqlock of C11
 * atomics, a reader uses an entry only when no writer touched it meanwhile, and an entry
 * only ever holds the ids the word encodes to, so the cache changes speed, never results.
 */
#ifndef COHORT_HFTOK_H
#define COHORT_HFTOK_H

#include <stddef.h>

#include "err.h"

typedef struct hft hft; /* opaque */

/* ---- lifecycle ---------------------------------------------------------------------- */

/* Parse the text of a tokenizer.json (len bytes, need not be NUL-terminated). On failure
 * *out is NULL and the message names the field at fault (COH_EFORMAT for malformed or
 * inconsistent files, COH_EUNSUPPORTED for a kind, type or option this reader does not
 * implement). */
int hft_create(const char *json, size_t len, hft **out, coh_err *err);
/* Accepts NULL. */
void hft_destroy(hft *t);

/* ---- queries ------------------------------------------------------------------------ */

/* 1 + the largest id of the vocabulary and the added tokens. */
int hft_vocab_size(const hft *t);
/* The id of token string s (added tokens first, then the model's vocabulary), or -1. */
int hft_token_id(const hft *t, const char *s);
/* The string of id (added token content or vocabulary entry), NULL when id has none. The
 * pointer lives as long as t. */
const char *hft_token_str(const hft *t, int id);
/* 1 when id is an added token marked special. */
int hft_is_special(const hft *t, int id);
/* The id of the special token a TemplateProcessing post_processor puts before a single
 * sequence, or -1 (no such post_processor, or it starts with the sequence itself). */
int hft_template_bos(const hft *t);

/* ---- encoding and decoding ---------------------------------------------------------- */

/* Encode len bytes of UTF-8 text into *ids (malloc'd, *n entries; *ids may be NULL when
 * *n == 0). Invalid UTF-8 fails with COH_EINVAL naming the byte offset. */
int hft_encode(const hft *t, const char *text, size_t len, int **ids, size_t *n,
               coh_err *err);
/* Decode ids as the tokenizers library does (special tokens kept, no clean-up of spaces)
 * into *out (malloc'd, NUL-terminated, *len bytes without the NUL). An id outside
 * [0, vocab size) or without a token fails with COH_ERANGE naming its position. */
int hft_decode(const hft *t, const int *ids, size_t n, char **out, size_t *len,
               coh_err *err);

#endif
