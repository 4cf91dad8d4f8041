/* Kernels of the cupy backend; the numba-cuda backend (cudakernels.py) has the same ones.
 *
 * Every kernel takes the number of threads it needs as `nthreads` and uses no
 * barriers, only global atomics; slice_walk alone copies its table to shared
 * memory behind one barrier, under __CUDACC__ only. That is what lets the
 * tests compile this very file with gcc (without __CUDACC__) and run each
 * kernel on the CPU as a loop over its threads. Scalars are all u64 so that
 * the launch code converts them one way.
 *
 * A segment is `seg_len` consecutive start values handled by one thread; the
 * host finds records from per-segment maxima (see gpubase.py).
 */
#include "collatz.cuh"

#ifdef __CUDACC__
#define KERNEL extern "C" __global__ void
#define FOR_EACH_THREAD(t, n) \
    u64 t = (u64)blockIdx.x * blockDim.x + threadIdx.x; \
    if (t < (n))
#define ATOMIC_ADD(p, v) atomicAdd((p), (u64)(v))
#else
#define KERNEL void
#define FOR_EACH_THREAD(t, n) for (u64 t = 0; t < (n); ++t)
static u64 emulated_add(u64 *p, u64 v) { u64 old = *p; *p += v; return old; }
#define ATOMIC_ADD(p, v) emulated_add((p), (u64)(v))
#endif

/* Append an offset to a list of capacity `cap`; count[0] keeps counting past it */
#define APPEND(list, count, cap, off) \
    { u64 at_ = ATOMIC_ADD((count), 1); if (at_ < (cap)) (list)[at_] = (off); }

/* Range analysis, one segment per thread: sum of delays and histogram by atomics, and each
 * segment's maxima encoded as value+1 (0: no number of the segment finished in 128 bits).
 * sums: [sum_delay, overflows, delays past the histogram, too_long (unused)] */
KERNEL collatz_segments(u64 nthreads, u64 shi, u64 slo, u64 count, u64 seg_len, const u16 *tdelay,
                        const u64 *tpeak, const u16 *tglide, u64 tsize, u64 *hist, u64 hist_len, u64 *sums,
                        u32 *seg_delay, u32 *seg_glide, u64 *seg_phi, u64 *seg_plo, u64 *over, u64 cap) {
    FOR_EACH_THREAD(t, nthreads) {
        u64 first = t * seg_len, last = first + seg_len < count ? first + seg_len : count;
        u64 sum = 0, bd = 0, bg = 0, bphi = 0, bplo = 0;
        for (u64 off = first; off < last; ++off) {
            u64 nhi, nlo, delay, glide, phi, plo;
            add_offset(shi, slo, off, &nhi, &nlo);
            if (collatz_number(nhi, nlo, tdelay, tpeak, tglide, tsize, &delay, &glide, &phi, &plo) != ST_OK) {
                APPEND(over, &sums[1], cap, off);
                continue;
            }
            sum += delay;
            if (delay < hist_len) ATOMIC_ADD(&hist[delay], 1);
            else ATOMIC_ADD(&sums[2], 1);
            if (delay + 1 > bd) bd = delay + 1;
            if (glide + 1 > bg) bg = glide + 1;
            if (less128(bphi, bplo, phi, plo)) { bphi = phi; bplo = plo; }
        }
        ATOMIC_ADD(&sums[0], sum);
        seg_delay[t] = (u32)bd;
        seg_glide[t] = (u32)bg;
        seg_phi[t] = bphi;
        seg_plo[t] = bplo;
    }
}

/* Per-number results of the listed segments (all of a chunk: segs = {0}, seg_len = count) */
KERNEL collatz_numbers(u64 nthreads, u64 shi, u64 slo, u64 count, const u64 *segs, u64 seg_len,
                       const u16 *tdelay, const u64 *tpeak, const u16 *tglide, u64 tsize, u32 *delay,
                       u32 *glide, u64 *peak_hi, u64 *peak_lo, u8 *status) {
    FOR_EACH_THREAD(t, nthreads) {
        u64 off = segs[t / seg_len] * seg_len + t % seg_len, nhi, nlo, d = 0, g = 0, phi = 0, plo = 0;
        if (off >= count) {
            status[t] = ST_ABSENT;
        } else {
            add_offset(shi, slo, off, &nhi, &nlo);
            status[t] = (u8)collatz_number(nhi, nlo, tdelay, tpeak, tglide, tsize, &d, &g, &phi, &plo);
            /* Only finished numbers carry results, as on the CPU */
            if (status[t] != ST_OK) d = g = phi = plo = 0;
        }
        delay[t] = (u32)d;
        glide[t] = (u32)g;
        peak_hi[t] = phi;
        peak_lo[t] = plo;
    }
}

/* Convergence check, one segment per thread; sums: [-, overflows, -, too_long] */
KERNEL verify_segments(u64 nthreads, u64 shi, u64 slo, u64 count, u64 seg_len, u64 max_steps, u64 *sums,
                       u32 *seg_glide, u64 *over, u64 *too_long, u64 cap) {
    FOR_EACH_THREAD(t, nthreads) {
        u64 first = t * seg_len, last = first + seg_len < count ? first + seg_len : count, bg = 0;
        for (u64 off = first; off < last; ++off) {
            u64 nhi, nlo, glide;
            add_offset(shi, slo, off, &nhi, &nlo);
            int status = glide_number(nhi, nlo, max_steps, &glide);
            if (status == ST_OK) {
                if (glide + 1 > bg) bg = glide + 1;
            } else if (status == ST_TOO_LONG) {
                APPEND(too_long, &sums[3], cap, off);
            } else {
                APPEND(over, &sums[1], cap, off);
            }
        }
        seg_glide[t] = (u32)bg;
    }
}

KERNEL verify_numbers(u64 nthreads, u64 shi, u64 slo, u64 count, const u64 *segs, u64 seg_len, u64 max_steps,
                      u32 *glide, u8 *status) {
    FOR_EACH_THREAD(t, nthreads) {
        u64 off = segs[t / seg_len] * seg_len + t % seg_len, nhi, nlo, g = 0;
        if (off >= count) {
            status[t] = ST_ABSENT;
        } else {
            add_offset(shi, slo, off, &nhi, &nlo);
            status[t] = (u8)glide_number(nhi, nlo, max_steps, &g);
        }
        glide[t] = (u32)g;
    }
}

/* verify_segments over the sieve's items (sieve_item): only survivors are walked, sums[0] counts them */
KERNEL verify_sieve_segments(u64 nthreads, u64 shi, u64 slo, u64 a0hi, u64 a0lo, u64 idx0, u64 nitems,
                             u64 seg_len, u64 sbits, const u64 *sres, const u64 *spacked, const u64 *pow3,
                             const u8 *kill, u64 extra, u64 skip_ahi, u64 skip_alo, u64 nsurv, u64 max_steps,
                             u64 *sums, u32 *seg_glide, u64 *over, u64 *too_long, u64 cap) {
    (void)shi;
    FOR_EACH_THREAD(t, nthreads) {
        u64 first = t * seg_len, last = first + seg_len < nitems ? first + seg_len : nitems, bg = 0, walked = 0;
        for (u64 item = first; item < last; ++item) {
            u64 nhi, nlo, glide;
            if (!sieve_item(item, a0hi, a0lo, idx0, sbits, sres, spacked, pow3, kill, extra, skip_ahi, skip_alo,
                            nsurv, &nhi, &nlo))
                continue;
            walked += 1;
            int status = glide_number(nhi, nlo, max_steps, &glide);
            if (status == ST_OK) {
                if (glide + 1 > bg) bg = glide + 1;
            } else if (status == ST_TOO_LONG) {
                APPEND(too_long, &sums[3], cap, nlo - slo);
            } else {
                APPEND(over, &sums[1], cap, nlo - slo);
            }
        }
        ATOMIC_ADD(&sums[0], walked);
        seg_glide[t] = (u32)bg;
    }
}

/* verify_numbers over the sieve's items; an item the sieve settles is ST_ABSENT */
KERNEL verify_sieve_numbers(u64 nthreads, u64 shi, u64 slo, u64 a0hi, u64 a0lo, u64 idx0, u64 nitems,
                            const u64 *segs, u64 seg_len, u64 sbits, const u64 *sres, const u64 *spacked,
                            const u64 *pow3, const u8 *kill, u64 extra, u64 skip_ahi, u64 skip_alo, u64 nsurv,
                            u64 max_steps, u32 *glide, u8 *status) {
    (void)shi;
    (void)slo;
    FOR_EACH_THREAD(t, nthreads) {
        u64 item = segs[t / seg_len] * seg_len + t % seg_len, nhi, nlo, g = 0;
        status[t] = ST_ABSENT;
        if (item < nitems && sieve_item(item, a0hi, a0lo, idx0, sbits, sres, spacked, pow3, kill, extra,
                                        skip_ahi, skip_alo, nsurv, &nhi, &nlo))
            status[t] = (u8)glide_number(nhi, nlo, max_steps, &g);
        glide[t] = (u32)g;
    }
}

/* One thread per trajectory; rows of the path arrays are zero on entry */
KERNEL thread_paths(u64 nthreads, u64 shi, u64 slo, u64 max_depth, u64 *paths_lo, u64 *paths_hi, u32 *depth,
                    u64 *final_lo, u64 *final_hi, u8 *status) {
    FOR_EACH_THREAD(t, nthreads) {
        u64 nhi, nlo, row = t * (max_depth + 1);
        add_offset(shi, slo, t, &nhi, &nlo);
        status[t] = (u8)thread_path(nhi, nlo, max_depth, paths_lo + row, paths_hi + row, &depth[t],
                                    &final_lo[t], &final_hi[t]);
    }
}

/* Whether the slice keeps B = 2^k1 h + b (b: stored survivor j): the extension tables, then the join
 * rule; a kept B gets its odd steps *c and T^K(B) in (*dhi, *dlo) */
HD int slice_residue(u64 h, u64 j, u64 K, u64 k1, u64 e1, u64 e2, u64 join, const u64 *sres, const u64 *spacked,
                     const u8 *kill1, const u64 *ce1, const u64 *de1, const u8 *kill2, const u64 *ce2,
                     const u64 *de2, const u64 *p3lo, u64 *b, u64 *c, u64 *dhi, u64 *dlo) {
    u64 entry = spacked[j], c1 = entry >> PACK_SHIFT, t1 = entry & PACK_MASK;
    /* Parities of the next e1 + e2 steps: the value mod 2^(e1 + e2) suffices (words wrap) */
    u64 x = p3lo[c1] * h + t1, r1 = x & ((1ULL << e1) - 1);
    if (kill1[(c1 << e1) | r1]) return 0;
    u64 ca = ce1[r1], x2 = (x >> e1) * p3lo[ca] + de1[r1], r2 = x2 & ((1ULL << e2) - 1), cb = 0;
    if (e2 && kill2[((c1 + ca) << e2) | r2]) return 0;
    *b = (h << k1) | sres[j];
    *dhi = 0;
    *dlo = h;
    mul_add128(dhi, dlo, p3lo[c1], t1);
    shift_right128(dhi, dlo, e1);
    mul_add128(dhi, dlo, p3lo[ca], de1[r1]);
    if (e2) {
        cb = ce2[r2];
        shift_right128(dhi, dlo, e2);
        mul_add128(dhi, dlo, p3lo[cb], de2[r2]);
    }
    *c = c1 + ca + cb;
    if (join) {
        /* deltaN = 1: B - 1 joins B after K steps with the same increases */
        u64 jhi, jlo, jc = residue_steps(*b - 1, K, &jhi, &jlo);
        if (jhi == *dhi && jlo == *dlo && jc == *c) return 0;
    }
    return 1;
}

/* Residue-slice verify, step 1: one thread per stored 2^k1 survivor (entry j) and high part h of
 * B = 2^k1 h + b, item jfirst + t of h = hfirst, ...; a kept B becomes a row (B, c, T^K(B) hi, lo)
 * of `kept`, counted by count[0] */
KERNEL slice_build(u64 nthreads, u64 hfirst, u64 jfirst, u64 nsurv, u64 K, u64 k1, u64 e1, u64 e2, u64 join,
                   const u64 *sres, const u64 *spacked, const u8 *kill1, const u64 *ce1, const u64 *de1,
                   const u8 *kill2, const u64 *ce2, const u64 *de2, const u64 *p3lo, u64 *count, u64 *kept) {
    FOR_EACH_THREAD(t, nthreads) {
        u64 q = jfirst + t, hrel = q / nsurv, b, c, dhi, dlo;
        if (slice_residue(hfirst + hrel, q - hrel * nsurv, K, k1, e1, e2, join, sres, spacked, kill1, ce1, de1,
                          kill2, ce2, de2, p3lo, &b, &c, &dhi, &dlo)) {
            u64 at = ATOMIC_ADD(count, 1);
            kept[4 * at] = b;
            kept[4 * at + 1] = c;
            kept[4 * at + 2] = dhi;
            kept[4 * at + 3] = dlo;
        }
    }
}

/* Residue-slice verify, step 2: tasks (group g of the kept residues, sorted by B, of `gsize` each; A),
 * `ntasks` = ngroups x span of them in a grid-stride loop of `nthreads` threads, the walk table in
 * shared memory. A task takes its group's residues in order of B, as numba-cpu takes them for one A:
 * the values that the 3^2 sieve and the per-value sieve leave are counted (sums[0]) and walked; a
 * value is reported as a row (i, A, steps | stopped << 63) when its walk stopped short or its bound
 * beats the task's best glide so far (from `floor`, raised by the exact glide of each value reported),
 * a superset of the values numba-cpu settles; sums[1] counts the rows, past `cap` too */
KERNEL slice_walk(u64 nthreads, u64 ntasks, u64 span, u64 gsize, u64 nkept, u64 K, u64 a0, u64 a1, u64 b0,
                  u64 b1, u64 bfirst, u64 ifirst, u64 blast, u64 iend, const u64 *kept, u64 max_steps, u64 floor,
                  const u64 *walk, u64 limit_hi, const u8 *killx, u64 ex, const u64 *p3hi, const u64 *p3lo,
                  u64 two_k9, u64 mod9, u64 from_hi, u64 from_lo, u64 below_hi, u64 below_lo, u64 *sums,
                  u64 *report, u64 cap) {
#ifdef __CUDACC__
    __shared__ u64 table[WALK_SIZE];
    for (u64 i = threadIdx.x; i < WALK_SIZE; i += blockDim.x) table[i] = walk[i];
    __syncthreads();
#else
    const u64 *table = walk;
#endif
    FOR_EACH_THREAD(t, nthreads) {
        u64 walked = 0, emask = (1ULL << ex) - 1;
        for (u64 task = t; task < ntasks; task += nthreads) {
            u64 g = task / span, a = a0 + (task - g * span), best = floor;
            u64 last = (g + 1) * gsize < nkept ? (g + 1) * gsize : nkept;
            for (u64 i = g * gsize; i < last; ++i) {
                u64 b = kept[4 * i];
                u64 first = a0 + (b < b0 ? 1ULL : 0ULL), end = a1 + (b < b1 ? 1ULL : 0ULL);
                if (b == bfirst) first += ifirst;
                if (b == blast) end = a0 + (b < b0 ? 1ULL : 0ULL) + iend;
                if (a < first || a >= end) continue;
                u64 c = kept[4 * i + 1], vhi = 0, vlo = a;
                mul_add128(&vhi, &vlo, p3lo[c], kept[4 * i + 3]);
                vhi += p3hi[c] * a + kept[4 * i + 2];
                if (mod9 && ((BAD_MOD9 >> ((two_k9 * (a % 9) + b % 9) % 9)) & 1) &&
                    (a < slice_a_bound(below_hi, below_lo, b, K) || a >= slice_a_bound(from_hi, from_lo, b, K)))
                    continue;
                if (killx[(c << ex) | (vlo & emask)]) continue;
                walked += 1;
                u64 nhi = a >> (64 - K), nlo = (a << K) | b, steps = K + c;
                int stopped = slice_walk_value(nhi, nlo, vhi, vlo, &steps, max_steps, table, limit_hi);
                if (!stopped && steps <= best) continue;
                u64 at = ATOMIC_ADD(&sums[1], 1);
                if (at < cap) {
                    report[3 * at] = i;
                    report[3 * at + 1] = a;
                    report[3 * at + 2] = steps | (stopped ? STOPPED_BIT : 0ULL);
                }
                if (!stopped) {
                    /* The exact glide (0: not found in 128 bits) raises this task's best */
                    u64 glide = slice_exact_glide(nhi, nlo, vhi, vlo, K + c, steps);
                    if (glide <= max_steps && glide > best) best = glide;
                }
            }
        }
        ATOMIC_ADD(&sums[0], walked);
    }
}
