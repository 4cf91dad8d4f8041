/*
 * collatz_ref.c - single-threaded C reference for hpcthreads' range analysis.
 *
 * For every n in [start, start + count) it computes, on the standard map
 * (n -> n/2 if even, 3n+1 if odd):
 *   delay: steps to reach 1              (delay(1) = 0, delay(27) = 111)
 *   peak:  largest trajectory value, n included          (peak(27) = 9232)
 *   glide: steps until the value first drops below n  (glide(1) = 0, glide(27) = 96)
 * and accumulates the count, the sum of delays, and the maximum delay, peak
 * and glide, each with the smallest n that reaches it. Values are
 * unsigned __int128; an n whose trajectory would need 3v+1 > 2^128 - 1 is
 * counted as "overflow" and left out of every other statistic.
 *
 * Trajectories are finished with a table of delays and peaks of all values
 * below TABLE_SIZE (built at start-up, not timed) once the value has dropped
 * below the table and the glide is known.
 *
 * Build: gcc -O3 -march=native -Wall -Wextra -o collatz_ref collatz_ref.c
 * Usage: collatz_ref START_HI START_LO COUNT   (start = START_HI * 2^64 + START_LO)
 * Output: one line of JSON, "seconds" being the time of the main loop only.
 */

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef unsigned __int128 u128;

#define TABLE_BITS 20
#define TABLE_SIZE ((uint64_t)1 << TABLE_BITS)

/* 3v+1 fits in 128 bits iff v <= (2^128 - 2) / 3 = 0x5555...5554 */
#define LIMIT_HI UINT64_C(0x5555555555555555)
#define LIMIT_LO UINT64_C(0x5555555555555554)

static uint32_t *table_delay;
static uint64_t *table_peak;

/* Delays and peaks of every value below TABLE_SIZE: each value walks until it
 * drops below itself, then borrows the (already known) entry of that value.
 * Peaks of values below 2^20 stay far below 2^64. */
static int build_table(void)
{
    table_delay = malloc(TABLE_SIZE * sizeof *table_delay);
    table_peak = malloc(TABLE_SIZE * sizeof *table_peak);
    if (!table_delay || !table_peak)
        return -1;
    table_delay[0] = 0;
    table_peak[0] = 0;
    table_delay[1] = 0;
    table_peak[1] = 1;
    for (uint64_t n = 2; n < TABLE_SIZE; n++) {
        uint64_t v = n, peak = n;
        uint32_t steps = 0;
        while (v >= n) {
            if (v & 1) {
                v = 3 * v + 1;
                if (v > peak)
                    peak = v;
                v >>= 1;
                steps += 2;
            } else {
                v >>= 1;
                steps += 1;
            }
        }
        table_delay[n] = steps + table_delay[v];
        table_peak[n] = peak > table_peak[v] ? peak : table_peak[v];
    }
    return 0;
}

static inline int too_big_for_odd_step(u128 v)
{
    const u128 limit = ((u128)LIMIT_HI << 64) | LIMIT_LO;
    return v > limit;
}

/* Number of trailing zero bits of a non-zero value. */
static inline unsigned ctz128(u128 v)
{
    uint64_t lo = (uint64_t)v;
    if (lo)
        return (unsigned)__builtin_ctzll(lo);
    return 64u + (unsigned)__builtin_ctzll((uint64_t)(v >> 64));
}

/* Analyse one start value n >= 1. Returns 0, or 1 if the trajectory leaves
 * 128 bits (the outputs are then meaningless). */
static inline int trajectory(u128 n, uint32_t *delay_out, uint32_t *glide_out, u128 *peak_out)
{
    if (n == 1) {
        *delay_out = 0;
        *glide_out = 0;
        *peak_out = 1;
        return 0;
    }
    u128 v = n, peak = n;
    uint32_t steps = 0, glide;

    /* Phase 1: until the value first drops below n (only halvings drop it;
     * an odd step is always followed by a halving, taken together here). */
    for (;;) {
        if (v & 1) {
            if (too_big_for_odd_step(v))
                return 1;
            v = 3 * v + 1;
            if (v > peak)
                peak = v;
            v >>= 1;
            steps += 2;
        } else {
            v >>= 1;
            steps += 1;
            if (v < n)
                break;
        }
    }
    glide = steps;

    /* Phase 2: until the value is inside the table; runs of halvings at once. */
    while (v >= TABLE_SIZE) {
        if (v & 1) {
            if (too_big_for_odd_step(v))
                return 1;
            v = 3 * v + 1;
            if (v > peak)
                peak = v;
            steps += 1;
        }
        unsigned tz = ctz128(v);
        v >>= tz;
        steps += tz;
    }

    uint64_t t = (uint64_t)v;
    *delay_out = steps + table_delay[t];
    *glide_out = glide;
    *peak_out = peak > table_peak[t] ? peak : (u128)table_peak[t];
    return 0;
}

/* Decimal text of a 128-bit value into buf (at least 40 bytes). */
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

static int parse_u64(const char *text, uint64_t *out)
{
    char *end;
    if (text[0] == '-')
        return -1;
    errno = 0;
    unsigned long long value = strtoull(text, &end, 10);
    if (errno || end == text || *end != '\0')
        return -1;
    *out = (uint64_t)value;
    return 0;
}

int main(int argc, char **argv)
{
    uint64_t start_hi, start_lo, count;
    if (argc != 4 || parse_u64(argv[1], &start_hi) || parse_u64(argv[2], &start_lo) ||
        parse_u64(argv[3], &count)) {
        fprintf(stderr, "usage: %s START_HI START_LO COUNT\n", argv[0]);
        return 2;
    }
    u128 start = ((u128)start_hi << 64) | start_lo;
    if (start == 0 || (count > 0 && start + (count - 1) < start)) {
        fprintf(stderr, "the range must lie within [1, 2^128)\n");
        return 2;
    }
    if (build_table()) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }

    uint64_t done = 0, sum_delay = 0, overflow = 0;
    uint32_t best_delay = 0, best_glide = 0;
    u128 best_peak = 0, best_delay_n = 0, best_glide_n = 0, best_peak_n = 0;
    int have_any = 0;

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    u128 n = start;
    for (uint64_t i = 0; i < count; i++, n++) {
        uint32_t delay, glide;
        u128 peak;
        if (trajectory(n, &delay, &glide, &peak)) {
            overflow++;
            continue;
        }
        done++;
        sum_delay += delay;
        if (!have_any || delay > best_delay) {
            best_delay = delay;
            best_delay_n = n;
        }
        if (!have_any || glide > best_glide) {
            best_glide = glide;
            best_glide_n = n;
        }
        if (!have_any || peak > best_peak) {
            best_peak = peak;
            best_peak_n = n;
        }
        have_any = 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);

    char a[40], b[40], c[40], d[40];
    printf("{\"count\":%" PRIu64 ",\"sum_delay\":%" PRIu64 ",\"max_delay\":[\"%s\",%" PRIu32 "],"
           "\"max_peak\":[\"%s\",\"%s\"],\"max_glide\":[\"%s\",%" PRIu32 "],\"overflow\":%" PRIu64
           ",\"seconds\":%.6f}\n",
           done, sum_delay, u128_str(best_delay_n, a), best_delay, u128_str(best_peak_n, b),
           u128_str(best_peak, c), u128_str(best_glide_n, d), best_glide, overflow, seconds);
    free(table_delay);
    free(table_peak);
    return 0;
}
