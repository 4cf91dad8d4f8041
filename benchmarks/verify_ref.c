/*
 * verify_ref.c - single-threaded C reference for hpcthreads' `verify` with a 2^k sieve.
 *
 * The same algorithm as the numba-cpu kernel, written plainly: residues b mod
 * 2^k that drop below the start within k steps of T (T(n) = n/2 or (3n+1)/2)
 * are sieved out once the running maximum glide has reached the largest glide
 * a sieved-out residue can have; every other start value is followed until
 * it drops below itself, survivors from 3^c a + T^k(b) after their first k
 * steps, taken a by a and residue by residue. The sieve then goes EXTRA bits
 * further per start value: the next EXTRA steps of v = 3^c a + T^k(b) take the
 * parities of v mod 2^EXTRA, so a table indexed by (c, v mod 2^EXTRA) says
 * whether n drops within k + EXTRA steps (for n >= 2^(k+EXTRA)) and, if not,
 * gives its value there; a batch of table entries keeps its survivors
 * without a branch per entry. A round is one 3v+1 and all the
 * halvings after it (count of trailing zeros), in 64-bit words while the
 * start and the value fit and in unsigned __int128 otherwise; survivors are
 * walked two at a time, round for round. With MOD9 = 1 the survivors of
 * the classes n = 3m + 2 and n = 9m + 4 are dropped as well (the 3^2 sieve:
 * a smaller p = (2n - 1)/3 or (8n - 5)/9 reaches n before it drops, as in a
 * range that starts at 1). It
 * reports the number of start values covered, the maximum glide (standard
 * steps) with its smallest n, and the seconds of the main loop only.
 *
 * Build: gcc -O3 -march=native -Wall -Wextra -o verify_ref verify_ref.c
 * Usage: verify_ref START_HI START_LO COUNT BITS [EXTRA [MOD9]]
 */

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef unsigned __int128 u128;
#define LIMIT64 0x5555555555555554ull /* 3v+1 fits in 64 bits iff v <= LIMIT64 */

static uint64_t *sres, *sc, *st, nsurv;
static int64_t glide_max;
static u128 exact_from;

/* Survivors of the 2^bits sieve, level by level (b and b + 2^(j-1) from b). */
static int build_sieve(int bits)
{
    uint64_t pow3[64], m = 1;
    pow3[0] = 1;
    for (int i = 1; i < 64; i++)
        pow3[i] = 3 * pow3[i - 1];
    uint64_t *r = calloc(1, 8), *c = calloc(1, 8), *t = calloc(1, 8);
    for (int j = 1; j <= bits; j++) {
        uint64_t *nr = malloc(16 * m), *nc = malloc(16 * m), *nt = malloc(16 * m), kept = 0;
        uint64_t top = (uint64_t)1 << j, half = top >> 1;
        if (!nr || !nc || !nt)
            return -1;
        for (int child = 0; child < 2; child++)
            for (uint64_t i = 0; i < m; i++) {
                uint64_t b = r[i] + (child ? half : 0), tt = t[i] + (child ? pow3[c[i]] : 0), cc = c[i];
                if (tt & 1) {
                    tt = (3 * tt + 1) >> 1;
                    cc++;
                } else
                    tt >>= 1;
                if (pow3[cc] < top) {
                    int64_t g = j + (int64_t)cc;
                    if (g > glide_max)
                        glide_max = g;
                    uint64_t need = tt < b ? 0 : (tt - b) / (top - pow3[cc]) + 1;
                    if ((u128)need << j > exact_from)
                        exact_from = (u128)need << j;
                } else {
                    nr[kept] = b;
                    nc[kept] = cc;
                    nt[kept] = tt;
                    kept++;
                }
            }
        free(r), free(c), free(t);
        r = nr, c = nc, t = nt, m = kept;
    }
    /* Sort survivors by residue (insertion into a bitmap index, then compaction). */
    uint64_t size = (uint64_t)1 << bits;
    int64_t *where = malloc(size * sizeof *where);
    for (uint64_t i = 0; i < size; i++)
        where[i] = -1;
    for (uint64_t i = 0; i < m; i++)
        where[r[i]] = (int64_t)i;
    sres = malloc(8 * m), sc = malloc(8 * m), st = malloc(8 * m);
    nsurv = 0;
    for (uint64_t b = 0; b < size; b++)
        if (where[b] >= 0) {
            sres[nsurv] = b, sc[nsurv] = c[where[b]], st[nsurv] = t[where[b]];
            nsurv++;
        }
    free(where), free(r), free(c), free(t);
    return 0;
}


/* The sieve EXTRA bits further: kill[c << extra | r], and the value after
 * EXTRA more steps, 3^ce[r] (v >> extra) + de[r]. */
static uint8_t *kill_;
static uint64_t *ce, *de;

static int build_extension(int bits, int extra, const uint64_t *pow3)
{
    uint64_t size = (uint64_t)1 << extra;
    kill_ = calloc((size_t)(bits + 1) * size, 1), ce = malloc(8 * size), de = malloc(8 * size);
    if (!kill_ || !ce || !de)
        return -1;
    for (uint64_t r = 0; r < size; r++) {
        uint64_t d = r, c = 0, cj[64];
        for (int j = 1; j <= extra; j++) {
            if (d & 1)
                d = (3 * d + 1) >> 1, c++;
            else
                d >>= 1;
            cj[j] = c;
        }
        ce[r] = c, de[r] = d;
        for (int cb = 0; cb <= bits; cb++)
            for (int j = 1; j <= extra; j++) {
                uint64_t odd = cb + cj[j];
                if (odd <= 39 && pow3[odd] < (uint64_t)1 << (bits + j)) {
                    kill_[(uint64_t)cb << extra | r] = 1;
                    if (bits + j + (int64_t)odd > glide_max)
                        glide_max = bits + j + (int64_t)odd;
                    break;
                }
            }
    }
    if (extra && ((u128)1 << (bits + extra)) > exact_from)
        exact_from = (u128)1 << (bits + extra);
    return 0;
}


/* The index of the first survivor residue at or above `want`. */
static uint64_t first_residue(uint64_t want)
{
    uint64_t lo = 0, hi = nsurv;
    while (lo < hi) {
        uint64_t mid = (lo + hi) / 2;
        if (sres[mid] < want)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The least j >= 1 with v >> j < n, for n <= v (a run of halvings that ends below n). */
static inline int64_t first_drop(u128 v, u128 n)
{
    int64_t j = 1;
    while ((v >> j) >= n)
        j++;
    return j;
}

/* Glide of n >= 2 from value v after `steps` standard steps without a drop: per
 * round one 3v+1 and all its halvings at once (count of trailing zeros); in
 * 64-bit words while n and 3v+1 fit, in unsigned __int128 otherwise. */
static inline int64_t glide_from(u128 n, u128 v, int64_t steps)
{
    if (v & 1)
        v = 3 * v + 1, steps++;
    if ((n >> 64) == 0) {
        uint64_t n64 = (uint64_t)n;
        while ((v >> 64) == 0) {
            uint64_t x = (uint64_t)v;
            int t = __builtin_ctzll(x);
            uint64_t w = x >> t;
            if (w < n64) {
                int64_t j = __builtin_clzll(n64) - __builtin_clzll(x);
                if (j < 1)
                    j = 1;
                if ((x >> j) >= n64)
                    j++;
                return steps + j;
            }
            steps += t;
            v = 3 * (u128)w + 1, steps++;
        }
    }
    for (;;) { /* the benchmark's ranges stay far below 2^126 */
        uint64_t lo = (uint64_t)v;
        int t = lo ? __builtin_ctzll(lo) : 64 + __builtin_ctzll((uint64_t)(v >> 64));
        u128 w = v >> t;
        if (w < n)
            return steps + first_drop(v, n);
        steps += t;
        v = 3 * w + 1, steps++;
    }
}

/* One round of a one-word lane (v even): 1 when it dropped (*s is the glide),
 * 2 when glide_from must go on from (v odd, *s), 0 to go on here. */
static inline int lane_round(uint64_t *v, uint64_t n, int64_t *s)
{
    int t = __builtin_ctzll(*v);
    uint64_t w = *v >> t;
    if (w < n) {
        int64_t j = __builtin_clzll(n) - __builtin_clzll(*v);
        if (j < 1)
            j = 1;
        if ((*v >> j) >= n)
            j++;
        *s += j;
        return 1;
    }
    *s += t;
    if (w > LIMIT64) {
        *v = w;
        return 2;
    }
    *v = 3 * w + 1, *s += 1;
    return 0;
}

/* Glides of two one-word start values at once: their rounds overlap in the core. */
static inline void glide_pair(u128 n1, u128 v1, int64_t s1, u128 n2, u128 v2, int64_t s2, int64_t *g1,
                              int64_t *g2)
{
    uint64_t a = (uint64_t)v1, b = (uint64_t)v2;
    int f1 = 0, f2 = 0;
    if (a & 1) {
        if (a > LIMIT64)
            f1 = 2;
        else
            a = 3 * a + 1, s1++;
    }
    if (b & 1) {
        if (b > LIMIT64)
            f2 = 2;
        else
            b = 3 * b + 1, s2++;
    }
    while (!f1 && !f2) {
        f1 = lane_round(&a, (uint64_t)n1, &s1);
        f2 = lane_round(&b, (uint64_t)n2, &s2);
    }
    while (!f1)
        f1 = lane_round(&a, (uint64_t)n1, &s1);
    while (!f2)
        f2 = lane_round(&b, (uint64_t)n2, &s2);
    *g1 = f1 == 2 ? glide_from(n1, a, s1) : s1;
    *g2 = f2 == 2 ? glide_from(n2, b, s2) : s2;
}

/* The same in unsigned __int128, for start values or values at or past 2^64. */
static inline int lane_round2(u128 *v, u128 n, int64_t *s)
{
    uint64_t lo = (uint64_t)*v;
    int t = lo ? __builtin_ctzll(lo) : 64 + __builtin_ctzll((uint64_t)(*v >> 64));
    u128 w = *v >> t;
    if (w < n) {
        *s += first_drop(*v, n);
        return 1;
    }
    *v = 3 * w + 1, *s += t + 1; /* the benchmark's ranges stay far below 2^126 */
    return 0;
}

static inline void glide_pair2(u128 n1, u128 v1, int64_t s1, u128 n2, u128 v2, int64_t s2, int64_t *g1,
                               int64_t *g2)
{
    int f1 = 0, f2 = 0;
    if (v1 & 1)
        v1 = 3 * v1 + 1, s1++;
    if (v2 & 1)
        v2 = 3 * v2 + 1, s2++;
    while (!f1 && !f2) {
        f1 = lane_round2(&v1, n1, &s1);
        f2 = lane_round2(&v2, n2, &s2);
    }
    while (!f1)
        f1 = lane_round2(&v1, n1, &s1);
    while (!f2)
        f2 = lane_round2(&v2, n2, &s2);
    *g1 = s1, *g2 = s2;
}

static const char *u128_str(u128 v, char *buf)
{
    char tmp[40];
    int i = 0;
    do {
        tmp[i++] = (char)('0' + (int)(v % 10));
        v /= 10;
    } while (v);
    for (int j = 0; j < i; j++)
        buf[j] = tmp[i - 1 - j];
    buf[i] = '\0';
    return buf;
}

int main(int argc, char **argv)
{
    if (argc < 5 || argc > 7) {
        fprintf(stderr, "usage: %s START_HI START_LO COUNT BITS [EXTRA [MOD9]]\n", argv[0]);
        return 2;
    }
    u128 start = ((u128)strtoull(argv[1], 0, 10) << 64) | strtoull(argv[2], 0, 10);
    uint64_t count = strtoull(argv[3], 0, 10);
    int bits = atoi(argv[4]), extra = argc >= 6 ? atoi(argv[5]) : 0, mod9 = argc == 7 && atoi(argv[6]);
    uint64_t pow3[64];
    pow3[0] = 1;
    for (int i = 1; i < 64; i++)
        pow3[i] = 3 * pow3[i - 1];
    /* The extension applies from 2^(bits + extra): below, fewer extra bits that apply at once */
    int top = 127;
    while (top > 0 && !((start >> top) & 1))
        top--;
    if (extra > top - bits)
        extra = top - bits > 0 ? top - bits : 0;
    if (start < 2 || bits < 1 || bits > 32 || extra < 0 || extra > 16 || build_sieve(bits) ||
        build_extension(bits, extra, pow3)) {
        fprintf(stderr, "need start >= 2, 1 <= BITS <= 32, 0 <= EXTRA <= 16 and memory\n");
        return 2;
    }

    /* Bit r of keep9: keep n with n mod 9 = r mod 9 (r < 18) */
    uint32_t keep9 = (1u << 18) - 1;
    if (mod9)
        for (int r = 0; r < 18; r++)
            if (r % 9 == 2 || r % 9 == 4 || r % 9 == 5 || r % 9 == 8)
                keep9 &= ~(1u << r);
    uint8_t *b9 = malloc(nsurv ? nsurv : 1);
    if (!b9)
        return 2;
    for (uint64_t j = 0; j < nsurv; j++)
        b9[j] = (uint8_t)(sres[j] % 9);
    uint32_t two_k9 = (uint32_t)((1u << (bits % 6)) % 9);

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    u128 end = start + count, n = start, best_n = 0;
    int64_t best = -1;
    /* Every value until no sieved-out residue can be a record */
    for (; n < end && (best < glide_max || n < exact_from); n++) {
        int64_t g = glide_from(n, n, 0);
        if (g > best)
            best = g, best_n = n;
    }
    /* Survivors only, a by a, a batch of table entries at a time */
    u128 mask = ((u128)1 << bits) - 1, a = n >> bits, a_end = end >> bits;
    uint64_t emask = ((uint64_t)1 << extra) - 1, i = first_residue((uint64_t)(n & mask));
    enum { BATCH = 256 };
    uint64_t bb[BATCH];
    u128 bv[BATCH];
    int64_t bs[BATCH];
    for (; n < end; a++, i = 0) {
        uint64_t stop = a == a_end ? first_residue((uint64_t)(end & mask)) : nsurv;
        u128 base = a << bits;
        uint32_t base9 = two_k9 * (uint32_t)(a % 9) % 9;
        while (i < stop) {
            int kept = 0;
            for (uint64_t last = i + BATCH < stop ? i + BATCH : stop; i < last; i++) {
                u128 v = (u128)pow3[sc[i]] * a + st[i];
                uint64_t r = (uint64_t)v & emask;
                bb[kept] = sres[i], bv[kept] = (u128)pow3[ce[r]] * (v >> extra) + de[r];
                bs[kept] = bits + extra + (int64_t)(sc[i] + ce[r]);
                kept += (int)((keep9 >> (base9 + b9[i])) & 1) & (1 - kill_[sc[i] << extra | r]);
            }
            int q = 0;
            for (; q + 1 < kept; q += 2) {
                u128 m1 = base | bb[q], m2 = base | bb[q + 1];
                int64_t g1, g2;
                if (((m2 | bv[q] | bv[q + 1]) >> 64) == 0)
                    glide_pair(m1, bv[q], bs[q], m2, bv[q + 1], bs[q + 1], &g1, &g2);
                else
                    glide_pair2(m1, bv[q], bs[q], m2, bv[q + 1], bs[q + 1], &g1, &g2);
                if (g1 > best)
                    best = g1, best_n = m1;
                if (g2 > best)
                    best = g2, best_n = m2;
            }
            if (q < kept) {
                int64_t g = glide_from(base | bb[q], bv[q], bs[q]);
                if (g > best)
                    best = g, best_n = base | bb[q];
            }
        }
        if (a == a_end)
            break;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    char buf[40];
    printf("{\"covered\":%" PRIu64 ",\"max_glide\":[\"%s\",%" PRId64 "],\"survivors\":%" PRIu64
           ",\"seconds\":%.6f}\n",
           count, u128_str(best_n, buf), best, nsurv, seconds);
    return 0;
}
