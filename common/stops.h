/* stops.h - stop strings: where a sampled completion ends besides its EOS ids.
 *
 * A run may name up to STOPS_MAX stop strings (--stop TEXT; SamplingParams.stop on the wire),
 * each 1..STOPS_MAX_LEN bytes of valid UTF-8. A completion ends right after the first token t
 * such that the decoded text of its tokens [0..t] contains one of them. The cut is token-
 * aligned and exact: the token that completes the string is kept (so is any text it carries
 * past the string's end), nothing after it, and nothing is re-tokenized. The cut is made on
 * the token ids and their behaviour log-probabilities alike; a completion cut here ended on
 * purpose (it is not "truncated"), and its text is the decoded kept tokens, which end with
 * (or run just past) the stop string.
 *
 * The learner side (cohort-train's own sampling, evaluation) and the actor side use the same
 * stops_cut, so both cut a completion at the same token.
 */
#ifndef COHORT_STOPS_H
#define COHORT_STOPS_H

#include "err.h"
#include "tokenizer.h"

#define STOPS_MAX 8      /* stop strings per run */
#define STOPS_MAX_LEN 64 /* bytes per stop string */

/* A set of stop strings, a plain value (copy it with =). Zero-initialised = none. */
typedef struct stops_list {
    int n;                                   /* 0..STOPS_MAX */
    char text[STOPS_MAX][STOPS_MAX_LEN + 1]; /* text[0..n): NUL-terminated, 1..64 bytes */
} stops_list;

/* ---- building a list ----------------------------------------------------------------- */

/* 0 when s can be a stop string: 1..STOPS_MAX_LEN bytes of valid UTF-8 (no overlong forms,
 * surrogates or code points above U+10FFFF). Else COH_EINVAL (NULL, empty, invalid UTF-8:
 * the message gives the byte offset) or COH_ERANGE (too long); callers prefix the field. */
int stops_check(const char *s, coh_err *err);
/* Append s (checked as stops_check) to l; COH_ERANGE when l already holds STOPS_MAX
 * strings. On failure l is unchanged. */
int stops_add(stops_list *l, const char *s, coh_err *err);
/* 1 when a and b hold the same strings in the same order. */
int stops_equal(const stops_list *a, const stops_list *b);

/* ---- the cut ------------------------------------------------------------------------- */

/* Where completion ids[0..n) ends at the stop strings of l, decoding with tok (tok_decode):
 * returns the smallest k in [1, n] such that tok_decode(ids[0..k)) contains one of l's
 * strings, and sets *which (may be NULL) to the index in l of the first string (in l's
 * order) that text contains; or returns n with *which = -1 when no prefix contains one
 * (always so for l->n == 0 or n == 0). Negative COH_E* code on failure: COH_EINVAL for
 * n < 0 or a NULL argument, COH_ENOMEM. Reads nothing past ids[n - 1].
 *
 * Cost. The Hugging Face kind is searched prefix by prefix (up to n decodes of up to n ids,
 * stopping at the first hit): its decoded text is not monotone in k (an incomplete UTF-8
 * sequence decodes as U+FFFD, and byte-fallback tokens that turn a run invalid replace the
 * whole run's text), so no prefix can be skipped without changing the answer. The character
 * kind decodes each id to one character or nothing, so its text only grows and a binary
 * search (O(log n) decodes) gives the same answer. */
int stops_cut(const tokenizer *tok, const int *ids, int n, const stops_list *l, int *which,
              coh_err *err);

#endif
