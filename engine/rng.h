/* Seeded random numbers: the same seed gives the same stream on every machine (xoshiro256**
 * seeded through splitmix64; normals by Box-Muller). Used for parameter init, tasks and sampling. */
#ifndef PF_RNG_H
#define PF_RNG_H

#include <stdint.h>

typedef struct pf_rng {
    uint64_t s[4];
} pf_rng;

void     pf_rng_seed(pf_rng *r, uint64_t seed);
uint64_t pf_rng_next(pf_rng *r);
/* uniform in [0, 1) */
double   pf_rng_uniform(pf_rng *r);
/* uniform integer in [0, n) ; n > 0 */
uint32_t pf_rng_below(pf_rng *r, uint32_t n);
double   pf_rng_normal(pf_rng *r);
/* shuffle n ints in place */
void     pf_rng_shuffle(pf_rng *r, int *a, int n);

#endif
