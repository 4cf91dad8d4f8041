/* Per-number Collatz arithmetic in two 64-bit words, shared by the CUDA
 * kernels (compiled by NVRTC for the cupy backend) and by the CPU build of
 * the same kernels that the tests compile with gcc.
 *
 * Every function mirrors hpcthreads/backends/cpukernels.py step for step:
 * same statuses, same overflow check before each 3v+1, so results are
 * bit-identical to the numba-cpu backend. No headers: NVRTC has none.
 */
#ifndef HPCTHREADS_COLLATZ_CUH
#define HPCTHREADS_COLLATZ_CUH

typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;

#ifdef __CUDACC__
#define HD __device__ __forceinline__
#define CTZ64(x) ((u64)(__ffsll((long long)(x)) - 1))
#else
#define HD static inline
#define CTZ64(x) ((u64)__builtin_ctzll(x))
#endif

/* Statuses of a trajectory; ST_ABSENT marks padding past the chunk's end */
#define ST_OK 0
#define ST_OVERFLOW 1
#define ST_TOO_LONG 2
#define ST_ABSENT 3

/* 3v+1 fits in 64 bits iff v <= LIMIT64; in 128 bits iff (hi, lo) <= LIMIT128 */
#define LIMIT64 0x5555555555555554ULL
#define LIMIT128_HI 0x5555555555555555ULL
#define LIMIT128_LO 0x5555555555555554ULL

HD int less128(u64 ahi, u64 alo, u64 bhi, u64 blo) { return ahi < bhi || (ahi == bhi && alo < blo); }

HD int too_big_for_odd_step(u64 hi, u64 lo) {
    return hi > LIMIT128_HI || (hi == LIMIT128_HI && lo > LIMIT128_LO);
}

/* 3v+1 in two words; the caller has checked that it fits */
HD void triple_plus_one(u64 *hi, u64 *lo) {
    u64 dlo = *lo << 1, dhi = (*hi << 1) | (*lo >> 63);
    u64 slo = dlo + *lo;
    u64 shi = dhi + *hi + (slo < *lo ? 1ULL : 0ULL);
    slo += 1;
    if (slo == 0) shi += 1;
    *hi = shi;
    *lo = slo;
}

HD void halve(u64 *hi, u64 *lo) {
    *lo = (*lo >> 1) | (*hi << 63);
    *hi >>= 1;
}

/* Divide a nonzero value by its largest power of two 2^k; returns k */
HD u64 shift_out_zeros(u64 *hi, u64 *lo) {
    if (*lo == 0) {
        u64 k = CTZ64(*hi);
        *lo = *hi >> k;
        *hi = 0;
        return k + 64;
    }
    u64 k = CTZ64(*lo);
    if (k == 0) return 0;
    *lo = (*lo >> k) | (*hi << (64 - k));
    *hi >>= k;
    return k;
}

/* Delay, glide and peak of the start value (nhi, nlo); tables hold every start below tsize.
 * Phase 1 walks until the value drops below the start (the glide); phase 2 strips runs
 * of halvings until the value is inside the tables, which give the rest. */
HD int collatz_number(u64 nhi, u64 nlo, const u16 *tdelay, const u64 *tpeak, const u16 *tglide, u64 tsize,
                      u64 *delay, u64 *glide, u64 *peak_hi, u64 *peak_lo) {
    if (nhi == 0 && nlo < tsize) {
        *delay = tdelay[nlo];
        *glide = tglide[nlo];
        *peak_hi = 0;
        *peak_lo = tpeak[nlo];
        return ST_OK;
    }
    u64 vhi = nhi, vlo = nlo, phi = nhi, plo = nlo, steps = 0;
    for (;;) {
        if ((vlo & 1) == 0) {
            halve(&vhi, &vlo);
            steps += 1;
            if (less128(vhi, vlo, nhi, nlo)) break;
        } else if (vhi == 0 && vlo <= LIMIT64) {
            /* An odd step and the halving that always follows it */
            vlo = vlo * 3 + 1;
            if (phi == 0 && vlo > plo) plo = vlo;
            vlo >>= 1;
            steps += 2;
        } else {
            if (too_big_for_odd_step(vhi, vlo)) return ST_OVERFLOW;
            triple_plus_one(&vhi, &vlo);
            if (less128(phi, plo, vhi, vlo)) { phi = vhi; plo = vlo; }
            halve(&vhi, &vlo);
            steps += 2;
        }
    }
    *glide = steps;
    while (vhi != 0 || vlo >= tsize) {
        if (vlo & 1) {
            if (vhi == 0 && vlo <= LIMIT64) {
                vlo = vlo * 3 + 1;
                if (phi == 0 && vlo > plo) plo = vlo;
            } else {
                if (too_big_for_odd_step(vhi, vlo)) return ST_OVERFLOW;
                triple_plus_one(&vhi, &vlo);
                if (less128(phi, plo, vhi, vlo)) { phi = vhi; plo = vlo; }
            }
            steps += 1;
        }
        steps += shift_out_zeros(&vhi, &vlo);
    }
    *delay = steps + tdelay[vlo];
    if (phi == 0 && tpeak[vlo] > plo) plo = tpeak[vlo];
    *peak_hi = phi;
    *peak_lo = plo;
    return ST_OK;
}

/* Steps until the value drops below the start, at most max_steps */
HD int glide_number(u64 nhi, u64 nlo, u64 max_steps, u64 *glide) {
    *glide = 0;
    if (nhi == 0 && nlo == 1) return ST_OK;
    u64 vhi = nhi, vlo = nlo, steps = 0;
    /* One word while the start and the value fit (the same steps, half the arithmetic); two from the
     * first 3v+1 that leaves it */
    while (nhi == 0 && steps < max_steps) {
        if ((vlo & 1) == 0) {
            vlo >>= 1;
            steps += 1;
            if (vlo < nlo) {
                *glide = steps;
                return ST_OK;
            }
        } else if (vlo <= LIMIT64) {
            vlo = vlo * 3 + 1;
            steps += 1;
        } else {
            break;
        }
    }
    while (steps < max_steps) {
        if ((vlo & 1) == 0) {
            halve(&vhi, &vlo);
            steps += 1;
            if (less128(vhi, vlo, nhi, nlo)) {
                *glide = steps;
                return ST_OK;
            }
        } else {
            if (too_big_for_odd_step(vhi, vlo)) return ST_OVERFLOW;
            triple_plus_one(&vhi, &vlo);
            steps += 1;
        }
    }
    return ST_TOO_LONG;
}

/* The sieve table's packed entries: c (odd steps) above bit 56, d below (sieve.py) */
#define PACK_SHIFT 56
#define PACK_MASK ((1ULL << 56) - 1)
/* Bit r set: n with n mod 9 = r is walked; the 3^2 sieve skips 2, 4, 5 and 8 */
#define KEEP_MOD9 ((1ULL << 0) | (1ULL << 1) | (1ULL << 3) | (1ULL << 6) | (1ULL << 7))

/* The start value of survivor item `item` (entry (idx0 + item) mod nsurv of the table, block
 * a = a0 + (idx0 + item) / nsurv, n = 2^sbits a + b: increasing n, as sieve.scan_survivors takes
 * them); returns 1 when the extension and the 3^2 sieve let it live */
HD int sieve_item(u64 item, u64 a0hi, u64 a0lo, u64 idx0, u64 sbits, const u64 *sres, const u64 *spacked,
                  const u64 *pow3, const u8 *kill, u64 extra, u64 skip_ahi, u64 skip_alo, u64 nsurv, u64 *nhi,
                  u64 *nlo) {
    u64 q = idx0 + item, arel = q / nsurv, j = q - arel * nsurv;
    u64 alo = a0lo + arel, ahi = a0hi + (alo < a0lo ? 1ULL : 0ULL);
    *nhi = (ahi << sbits) | (alo >> (64 - sbits));
    *nlo = (alo << sbits) | sres[j];
    u64 entry = spacked[j], c = entry >> PACK_SHIFT;
    /* (3^c a + d) mod 2^extra needs only the low words */
    u64 r = (pow3[c] * alo + (entry & PACK_MASK)) & ((1ULL << extra) - 1);
    if (kill[(c << extra) | r]) return 0;
    if (ahi > skip_ahi || (ahi == skip_ahi && alo >= skip_alo)) {
        u64 n9 = (*nhi % 9 * 7 + *nlo % 9) % 9; /* 2^64 = 7 (mod 9) */
        return (int)((KEEP_MOD9 >> n9) & 1);
    }
    return 1;
}

/* The first max_depth steps of one thread into a zeroed row; returns ST_OVERFLOW if it left 128 bits */
HD int thread_path(u64 nhi, u64 nlo, u64 max_depth, u64 *row_lo, u64 *row_hi, u32 *depth, u64 *final_lo,
                   u64 *final_hi) {
    u64 vhi = nhi, vlo = nlo, steps = 0;
    int status = ST_OK;
    row_lo[0] = vlo;
    row_hi[0] = vhi;
    while (steps < max_depth && !(vhi == 0 && vlo == 1)) {
        if ((vlo & 1) == 0) {
            halve(&vhi, &vlo);
        } else if (too_big_for_odd_step(vhi, vlo)) {
            status = ST_OVERFLOW;
            break;
        } else {
            triple_plus_one(&vhi, &vlo);
        }
        steps += 1;
        row_lo[steps] = vlo;
        row_hi[steps] = vhi;
    }
    *depth = (u32)steps;
    *final_lo = vlo;
    *final_hi = vhi;
    return status;
}

HD void add_offset(u64 shi, u64 slo, u64 off, u64 *hi, u64 *lo) {
    *lo = slo + off;
    *hi = shi + (*lo < slo ? 1ULL : 0ULL);
}

/* The residue-slice verify (slicesieve.py; kernels slice_build and slice_walk) */
#ifdef __CUDACC__
#define MULHI64(a, b) __umul64hi((a), (b))
#else
#define MULHI64(a, b) ((u64)(((unsigned __int128)(a) * (b)) >> 64))
#endif

/* (hi, lo) * m + d modulo 2^128, as wideops.mul_add */
HD void mul_add128(u64 *hi, u64 *lo, u64 m, u64 d) {
    u64 rhi = MULHI64(*lo, m) + *hi * m, rlo = *lo * m + d;
    *hi = rhi + (rlo < d ? 1ULL : 0ULL);
    *lo = rlo;
}

/* (hi, lo) >> k for 0 < k < 64 */
HD void shift_right128(u64 *hi, u64 *lo, u64 k) {
    *lo = (*lo >> k) | (*hi << (64 - k));
    *hi >>= k;
}

/* The least A with 2^K A + B >= t (0 when t <= B), as slicesieve.a_bound */
HD u64 slice_a_bound(u64 thi, u64 tlo, u64 b, u64 kshift) {
    if (thi == 0 && tlo <= b) return 0;
    u64 dlo = tlo - b - 1, dhi = thi - (tlo < b + 1 ? 1ULL : 0ULL);
    if ((dhi >> kshift) != 0) return ~0ULL;
    return ((dlo >> kshift) | (dhi << (64 - kshift))) + 1;
}

/* T^bits(b) and its odd steps, step by step (slicesieve.steps_of_residue) */
HD u64 residue_steps(u64 b, u64 bits, u64 *hi, u64 *lo) {
    u64 c = 0;
    *hi = 0;
    *lo = b;
    for (u64 s = 0; s < bits; ++s) {
        if (*lo & 1) {
            mul_add128(hi, lo, 3, 1);
            c += 1;
        }
        halve(hi, lo);
    }
    return c;
}

/* The 3^2 sieve's classes: n mod 9 in 2, 4, 5, 8 */
#define BAD_MOD9 ((1ULL << 2) | (1ULL << 4) | (1ULL << 5) | (1ULL << 8))
/* The walk table: 2^WALK_BITS packed entries 3^c | d << 20 | steps << 40 (gpuslice.walk_entries) */
#define WALK_BITS 11
#define WALK_SIZE (1 << WALK_BITS)
#define FIELD20 ((1ULL << 20) - 1)
#define STOPPED_BIT (1ULL << 63)

/* The walk from v, k2 steps per lookup: returns 1 when it stopped short (step bound, v near 2^128),
 * 0 when v dropped below n; *steps bounds the glide (slicesieve.walk_bound) */
HD int slice_walk_value(u64 nhi, u64 nlo, u64 vhi, u64 vlo, u64 *steps, u64 max_steps, const u64 *table,
                        u64 limit_hi) {
    for (;;) {
        if (vhi >= limit_hi || *steps >= max_steps) return 1;
        u64 e = table[vlo & (WALK_SIZE - 1)];
        shift_right128(&vhi, &vlo, WALK_BITS);
        mul_add128(&vhi, &vlo, e & FIELD20, (e >> 20) & FIELD20);
        *steps += e >> 40;
        if (less128(vhi, vlo, nhi, nlo)) return 0;
    }
}

/* The exact glide of n from v, `steps` standard steps after n, one step at a time, knowing that v drops
 * below n by step `bound` (slice_walk_value); 0 where a step would leave 128 bits. The values a sieve
 * keeps stay at or above n for their first steps, so the first drop from v is n's glide */
HD u64 slice_exact_glide(u64 nhi, u64 nlo, u64 vhi, u64 vlo, u64 steps, u64 bound) {
    while (steps < bound) {
        if (vlo & 1) {
            if (too_big_for_odd_step(vhi, vlo)) return 0;
            triple_plus_one(&vhi, &vlo);
        } else {
            halve(&vhi, &vlo);
            if (less128(vhi, vlo, nhi, nlo)) return steps + 1;
        }
        steps += 1;
    }
    return 0;
}

#endif
