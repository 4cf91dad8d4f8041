/*
 * slice_ref.c - single-threaded C reference of hpcthreads' residue-slice verify kernel.
 *
 * The same algorithm as backends/slicesieve.py, written plainly: for each residue
 * B of [B0, B0 + W) that does not drop within K steps of T (T(n) = n/2 or (3n+1)/2;
 * a residue drops at the first depth j with 3^c_j < 2^j), and for each A of
 * [A0, A0 + NA): n = 2^K A + B reaches v = 3^c A + T^K(B) after K steps (the next
 * A is one addition further). A table indexed by (c, v mod 2^EX) drops the values
 * that fall within EX more steps; with MOD9 = 1 the values n = 3m + 2 and n = 9m + 4
 * are skipped (their predecessor is taken as verified). The rest are walked K2 steps
 * of T per lookup in a table of 2^K2 entries (3^c, T^K2(r)) until below n; a value
 * whose bound beats the best glide so far is walked again step by step for its
 * exact glide. The residues are checked one by one here (no stored sieve).
 * It reports integers covered, values walked, the maximum glide with its n, and
 * the seconds of the main loop. A value whose walk would leave 2^120 is counted as
 * overflowing and left out of the maximum (hpcthreads finishes it exactly).
 *
 * Build: gcc -O3 -march=native -Wall -Wextra -o slice_ref slice_ref.c
 * Usage: slice_ref K B0 W A0 NA EX K2 MOD9
 */

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef unsigned __int128 u128;

static u128 pow3(int c)
{
    u128 p = 1;
    while (c--)
        p *= 3;
    return p;
}

/* T^k(b), its odd steps, and whether some depth j <= k has 3^c_j < 2^j. */
static int steps(u128 b, int k, u128 *t, int *c)
{
    int odd = 0;
    for (int j = 1; j <= k; j++) {
        if (b & 1) {
            b = (3 * b + 1) >> 1;
            odd++;
        } else
            b >>= 1;
        if (pow3(odd) < ((u128)1 << j))
            return 1;
    }
    *t = b;
    *c = odd;
    return 0;
}

/* The exact glide (standard steps) of n from v, `s` steps after it. */
static int64_t exact_glide(u128 n, u128 v, int64_t s)
{
    while (v >= n) {
        if (v & 1) {
            v = 3 * v + 1;
            s++;
        }
        v >>= 1;
        s++;
    }
    return s;
}

int main(int argc, char **argv)
{
    if (argc != 9) {
        fprintf(stderr, "usage: %s K B0 W A0 NA EX K2 MOD9\n", argv[0]);
        return 2;
    }
    int K = atoi(argv[1]), EX = atoi(argv[6]), K2 = atoi(argv[7]), MOD9 = atoi(argv[8]);
    uint64_t B0 = strtoull(argv[2], 0, 10), W = strtoull(argv[3], 0, 10);
    uint64_t A0 = strtoull(argv[4], 0, 10), NA = strtoull(argv[5], 0, 10);
    /* Per-value extension: kill[c][r] = 1 when K + j steps drop (3^(c + c_j) < 2^(K + j)), j <= EX */
    uint8_t *kill = calloc((size_t)(K + 1) << EX, 1);
    for (uint64_t r = 0; r < ((uint64_t)1 << EX); r++) {
        u128 d = r;
        int cj = 0;
        for (int j = 1; j <= EX; j++) {
            if (d & 1) {
                d = (3 * d + 1) >> 1;
                cj++;
            } else
                d >>= 1;
            for (int c = 0; c <= K; c++)
                if (!kill[((uint64_t)c << EX) | r] && pow3(c + cj) < ((u128)1 << (K + j)))
                    kill[((uint64_t)c << EX) | r] = 1;
        }
    }
    /* The walk's table: 3^c and T^K2(r) | steps << 32 */
    uint64_t *tab = malloc(16u << K2);
    for (uint64_t r = 0; r < ((uint64_t)1 << K2); r++) {
        uint64_t d = r, c = 0;
        for (int j = 0; j < K2; j++)
            d = (d & 1) ? (c++, (3 * d + 1) >> 1) : d >> 1;
        tab[2 * r] = (uint64_t)pow3((int)c);
        tab[2 * r + 1] = d | ((K2 + c) << 32);
    }
    uint64_t mask = ((uint64_t)1 << K2) - 1, emask = ((uint64_t)1 << EX) - 1, walked = 0, overflows = 0;
    const u128 limit = (u128)1 << 120;
    int64_t best = -1;
    u128 best_n = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (uint64_t B = B0; B < B0 + W; B++) {
        u128 d;
        int c;
        if (steps(B, K, &d, &c))
            continue;
        u128 p = pow3(c), v = p * A0 + d, n = ((u128)A0 << K) + B;
        unsigned n9 = (unsigned)(n % 9), step9 = (unsigned)((((u128)1 << K)) % 9);
        for (uint64_t a = 0; a < NA; a++, v += p, n += (u128)1 << K, n9 = (n9 + step9) % 9) {
            if (MOD9 && (n9 == 2 || n9 == 4 || n9 == 5 || n9 == 8))
                continue;
            if (kill[((uint64_t)c << EX) | ((uint64_t)v & emask)])
                continue;
            walked++;
            u128 w = v;
            int64_t s = K + c;
            do {
                uint64_t r = (uint64_t)w & mask;
                w = (w >> K2) * tab[2 * r] + (tab[2 * r + 1] & 0xFFFFFFFF);
                s += (int64_t)(tab[2 * r + 1] >> 32);
            } while (w >= n && w < limit);
            if (w >= limit)
                overflows++;
            else if (s > best) {
                int64_t g = exact_glide(n, v, K + c);
                if (g > best) {
                    best = g;
                    best_n = n;
                }
            }
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    printf("{\"integers\": %" PRIu64 ", \"walked\": %" PRIu64 ", \"overflows\": %" PRIu64 ", \"max_glide\": [\"%" PRIu64 "%019" PRIu64
           "\", %" PRId64 "], \"seconds\": %.6f}\n",
           W * NA, walked, overflows, (uint64_t)(best_n / 10000000000000000000ull),
           (uint64_t)(best_n % 10000000000000000000ull), best, seconds);
    return 0;
}
