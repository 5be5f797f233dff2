/* mathverify.h - the `math` verifier: GSM8K/MATH-style final answers compared numerically.
 *
 * `math` is a verifier-only task: it has no generator (task_create refuses it), its prompts
 * come from a prompt file whose lines carry the reference in "answer"
 * (deploy/gsm8k-to-prompts.py writes such a file from GSM8K), and the reward service
 * (scorer.c) routes task name "math" here. The module is pure: no allocation, no I/O, no
 * global state; safe from any thread.
 *
 * Extraction of the final answer from a completion, first rule that applies:
 *   1. "####": the number right after the LAST "####" that is followed by one (white space
 *      and markdown '*' skipped: "#### **72**"); whatever follows that number is ignored.
 *      A "####" followed by words, such as the markdown heading "#### Final Answer", is
 *      not an answer marker.
 *   2. "\boxed{...}": the content of the LAST \boxed{ whose braces balance (\{ and \} do not
 *      count). The content must be one number, optionally preceded by a variable name and
 *      '=' ("x = 5") and followed by unit text: no digits, no '^' or '_' but the degree
 *      sign ^\circ, no LaTeX command but \text, \textbf, \textrm, \textit, \mathrm, \mbox,
 *      \quad, \qquad, \circ, \degree and escapes such as \% (units, words: "18
 *      \text{dollars}", "90^\circ"). "2x+3" and "3\pi" are not numbers, and a box holding
 *      anything but a number is a wrong answer (the last number outside it is not tried).
 *   3. otherwise the last number anywhere in the text.
 * A "number" (the same grammar for answers and references):
 *   [sign] [currency] [sign] value [percent]
 *   sign      '-', '+' or U+2212; in rule 3 a sign counts only after a non-word character
 *             ("5-3" is 5 and 3, "x = -3" is -3)
 *   currency  '$', '\$', '€', '£' (ignored)
 *   value     decimal: digits with optional thousands separators ',' or '{,}' (groups of
 *             exactly three digits after a leading group of one to three: "1,234,567";
 *             "1,23" is 1 then 23) and an optional fractional part (".5", "1.50");
 *             or decimal/decimal without spaces ("3/4"; a zero denominator ends the number
 *             before the '/'); or \frac, \dfrac, \tfrac with two arguments, each {[sign]
 *             decimal} or a single digit ("\frac{3}{4}", "\frac12", "\frac{-1}{2}")
 *   percent   '%' or '\%', optionally after one space: a unit, ignored (see below)
 * Not read as one number: scientific notation ("2e3" is 2, then 3), mixed numbers ("1 1/2"
 * is 1, then 1/2), words ("seventy").
 *
 * Equivalence: exact, never through floating point. Two plain decimals are compared as
 * canonical digit strings (no leading zeros, no trailing fractional zeros: "1,234.50" ==
 * "1234.5", "-0" == "0"), so decimals of any length compare exactly (2^53 + 1 != 2^53);
 * anything else as reduced rationals with 64-bit numerator and denominator ("0.75" == "3/4"
 * == "\frac{3}{4}"; "3.14159" != "3.14"); a long decimal against a rational through the
 * rational's terminating expansion. Only a fraction whose reduced form needs more than 64
 * bits against another value cannot be compared: that is reported, and scores 0.
 * Percent rule: '%' is a unit like any other and is dropped: "50%" equals 50 (and 50%), not
 * 0.5. Currency symbols and trailing words are ignored the same way.
 *
 * The reference is read like a box's content: one number, then unit text ("18",
 * "$18 dollars", "\frac{1}{2}", "\boxed{18}" unwrapped); anything else is a text reference.
 * MATH-style non-numeric references ("\sqrt{2}", "(1,2)"): when the reference is not a
 * number, the content of the last balanced \boxed{} (rule 2), or else the rest of the line
 * after the last "####" followed by any text, is compared with it as text, both after
 * removing white space, '$', \left, \right, \!, \, \; \: and a final '.', and mapping
 * \dfrac and \tfrac to \frac. Rule 3 never matches such a reference.
 *
 * Scores: correct 1 or 0; format 1 when the answer came from "####" or \boxed{} and is a
 * number (or, for a text reference, is present), else 0. Every score carries a reason:
 *   "answer 18 (after ####) equals reference 18", "answer 17 (last number) != reference 18",
 *   "no number found", ...
 */
#ifndef COHORT_MATHVERIFY_H
#define COHORT_MATHVERIFY_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define MATHV_COMPLETION_MAX (1 << 20) /* longer completions score 0 without being read */
#define MATHV_REFERENCE_MAX 1024       /* longer references are refused (COH_EINVAL) */
#define MATHV_DIGITS_MAX 128           /* canonical decimal strings kept up to this size */
#define MATHV_DETAIL_MAX 256

/* ---- Numbers ------------------------------------------------------------------------------ */

typedef struct mathv_number {
    int neg;        /* 1 for a value below zero (never for zero) */
    int exact;      /* 1 when |value| == n/d exactly (reduced, d >= 1) */
    uint64_t n, d;
    int is_decimal; /* 1 when written as a plain decimal: digits[] holds it canonically */
    char digits[MATHV_DIGITS_MAX]; /* "1234.5" (no sign); "" when too long or not a decimal */
    int percent;    /* written with % or \% (informational: equivalence ignores it) */
} mathv_number;

/* Parse one number at the start of s[0..len) (no leading space skipped). Returns the number
 * of bytes consumed (> 0) with *out filled, or 0 when s does not start with a number
 * (*out is then zeroed). */
size_t mathv_parse_number(const char *s, size_t len, mathv_number *out);

/* 1 when a and b are the same value, 0 when they differ; -1 when they cannot be compared
 * exactly (a fraction beyond 64 bits against another value). */
int mathv_equal(const mathv_number *a, const mathv_number *b);

/* ---- Extraction --------------------------------------------------------------------------- */

typedef enum mathv_source {
    MATHV_NONE = 0,   /* no answer found */
    MATHV_HASH = 1,   /* after "####" */
    MATHV_BOXED = 2,  /* in the last \boxed{} */
    MATHV_LAST = 3    /* the last number in the text */
} mathv_source;

typedef struct mathv_answer {
    mathv_source source;
    size_t start, len;   /* the raw answer text in the completion (the whole rest of the
                            line for ####, the box content for \boxed, the number for LAST) */
    int has_number;      /* 1 when num holds the answer */
    size_t num_start, num_len; /* where the number is written in the completion */
    mathv_number num;
} mathv_answer;

/* Find the final answer of text[0..len) by the rules above. Never fails; linear time. */
void mathv_extract(const char *text, size_t len, mathv_answer *out);

/* "after ####", "in \boxed{}", "last number" or "none". */
const char *mathv_source_name(mathv_source s);

/* ---- Verification ------------------------------------------------------------------------- */

typedef struct mathv_score {
    double correct;               /* 1 or 0 */
    double format;                /* 1 for an explicit final answer (#### or \boxed{}) */
    char detail[MATHV_DETAIL_MAX]; /* the reason, printable ASCII */
} mathv_score;

/* Score completion against reference. Never fails on completion text (any bytes, any
 * length; NULL scores 0 "no completion"). Fails with COH_EINVAL (err set, *out zeroed) only
 * when the reference is NULL, empty (white space only) or longer than MATHV_REFERENCE_MAX. */
int mathv_verify(const char *completion, const char *reference, mathv_score *out,
                 coh_err *err);

#endif
