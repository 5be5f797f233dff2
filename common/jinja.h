/* jinja.h - a Jinja template engine for chat templates, rendering as Python jinja2 does.
 *
 * Scope: the subset of Jinja that Hugging Face chat templates use, with the settings
 * transformers uses (trim_blocks, lstrip_blocks, no autoescape, the template's single final
 * newline dropped, the loopcontrols extension, default Undefined):
 *   statements  for (loop.*, else, `if` filter, break/continue, tuple targets), if/elif/else,
 *               set (names, namespace attributes, tuple targets, block set with filters),
 *               macro (positional and keyword arguments, defaults, recursion), filter blocks;
 *   expressions literals, lists, tuples, dicts, attribute/item access, slicing, calls with
 *               keyword arguments, filters, `is` tests, not/and/or, comparisons, in/not in,
 *               + - * / // % **, ~, conditional expressions;
 *   values      Python semantics: None, bools, ints, floats, strings (indexed and measured
 *               in code points), lists, ordered dicts, namespace(); str()/repr() as Python
 *               prints them; Undefined is empty when printed, falsy, iterates as empty, and
 *               is an error when its attribute or item is taken or it takes part in
 *               arithmetic;
 *   globals     raise_exception(msg), strftime_now(fmt), namespace(...), range(...), dict(...).
 * Filters and tests: see FILTERS and TESTS in jinja.c. `tojson` is transformers' version
 * (keys in their given order, non-ASCII unescaped, optional indent).
 *
 * Anything else (include/extends/import/call blocks, unknown filters or tests, syntax
 * errors) is refused at compile time with the line number and the construct named.
 * Known differences from Python: upper/lower/title/capitalize change ASCII letters only;
 * JSON numbers without a fraction come in as ints (1.0 prints as 1).
 */
#ifndef COHORT_JINJA_H
#define COHORT_JINJA_H

#include <time.h>

#include <cjson/cJSON.h>

#include "err.h"

typedef struct jinja_tpl jinja_tpl; /* opaque: a compiled template, read-only once built */

/* Compile template source (UTF-8). On success *out owns a template to release with
 * jinja_free. On failure returns COH_EFORMAT (syntax error, unknown statement, filter or
 * test; the message names the line and the construct) or COH_ENOMEM, and *out is NULL. */
int jinja_compile(const char *src, jinja_tpl **out, coh_err *err);

/* Release a compiled template; NULL is fine. */
void jinja_free(jinja_tpl *tpl);

/* Per-render settings. Zero-initialise for the defaults. */
typedef struct jinja_opts {
    /* The time strftime_now() formats. NULL: the current local time. */
    const struct tm *now;
    /* Upper bound on loop iterations plus macro calls in one render, against runaway
     * templates; 0 = 10 million. */
    long max_steps;
} jinja_opts;

/* Render tpl with the variables of the cJSON object vars (may be NULL; its values are
 * converted to Jinja values: objects keep their key order). A compiled template may be
 * rendered any number of times, from several threads at once.
 * On success *out is a NUL-terminated malloc'd string the caller frees. On failure returns
 * COH_EINVAL (raise_exception: the message is the template's own text), COH_EFORMAT (a
 * runtime error: undefined attribute, bad operand types, ...; the message names the line),
 * or COH_ENOMEM, and *out is NULL. */
int jinja_render(const jinja_tpl *tpl, const cJSON *vars, const jinja_opts *opts, char **out,
                 coh_err *err);

#endif
