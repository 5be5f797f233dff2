/* cli.h - checked parsing of command-line values, shared by every Cohort binary.
 *
 * One rule for every flag of every binary: a value is accepted only if the whole string is a
 * number of the right kind (no trailing text, no empty string), finite, and inside the flag's
 * range; otherwise the call fails with a message that names the flag, the value given and
 * what was expected, e.g.
 *   "--beta: 'abc' is not a number (expected a real number in [0, 100])"
 *   "--lr: -1 is out of range (expected a real number in (0, 1])"
 * so a caller only prints "<program>: <err.msg>" and exits with status 2.
 *
 * Ranges are inclusive unless the _open variants say otherwise. Nothing here prints or exits.
 */
#ifndef COHORT_CLI_H
#define COHORT_CLI_H

#include <stdint.h>

#include "err.h"

/* A whole decimal integer in [lo, hi]. COH_EINVAL (not an integer) or COH_ERANGE. */
int cli_parse_int(const char *flag, const char *s, int lo, int hi, int *out, coh_err *err);
int cli_parse_long(const char *flag, const char *s, long lo, long hi, long *out, coh_err *err);
/* A whole unsigned decimal integer in [lo, hi] ("-1" is refused, never wrapped). */
int cli_parse_u64(const char *flag, const char *s, uint64_t lo, uint64_t hi, uint64_t *out,
                  coh_err *err);
/* A finite real number in [lo, hi]; lo_open / hi_open make that end exclusive. */
int cli_parse_double(const char *flag, const char *s, double lo, double hi, int lo_open,
                     int hi_open, double *out, coh_err *err);
/* The same, stored as float (the range is checked on the double value). */
int cli_parse_float(const char *flag, const char *s, double lo, double hi, int lo_open,
                    int hi_open, float *out, coh_err *err);
/* One of the NULL-terminated names; *out gets its index. COH_EINVAL lists the choices. */
int cli_parse_choice(const char *flag, const char *s, const char *const *names, int *out,
                     coh_err *err);

/* A network address "HOST:PORT" ("[v6addr]:PORT", ":PORT" for every address), optionally with
 * a gRPC scheme ("dns:///", "dns:", "ipv4:", "ipv6:"), or "unix:PATH". The port must be a whole
 * decimal number in [min_port, 65535] (min_port 0 lets a server take any free port); the host
 * is not resolved here. COH_EINVAL names the flag and says what was expected, e.g.
 *   "--listen: '127.0.0.1:99999': port 99999 is out of range (expected HOST:PORT with a port
 *    in [0, 65535])". */
int cli_check_address(const char *flag, const char *s, int min_port, coh_err *err);

#endif
