/* rng.h - seeded pseudo-random numbers (xoshiro256** seeded by splitmix64).
 *
 * The state is a plain caller-owned struct so that it can be saved in a checkpoint and
 * restored bit for bit (rng_state_* below). Same seed, same sequence, on every machine.
 */
#ifndef COHORT_RNG_H
#define COHORT_RNG_H

#include <stdint.h>

typedef struct rng {
    uint64_t s[4]; /* private: generator state; copy the struct to snapshot it */
} rng;

/* Seed the generator; any seed (including 0) is valid. */
void rng_init(rng *r, uint64_t seed);
/* Next 64 random bits. */
uint64_t rng_u64(rng *r);
/* Uniform double in [0, 1). */
double rng_uniform(rng *r);
/* Uniform integer in [0, n); n must be > 0. */
uint64_t rng_below(rng *r, uint64_t n);
/* Standard normal sample (Box-Muller, no cached spare, so the state alone defines the stream). */
double rng_normal(rng *r);
/* Stateless 64-bit mix (splitmix64 finaliser): derive independent seeds from (seed, index). */
uint64_t rng_mix(uint64_t x);

#endif
