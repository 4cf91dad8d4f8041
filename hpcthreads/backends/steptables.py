"""Tables of the numba-cpu kernels: small results, and k steps at once.

Write T for the map n -> n/2 (n even), (3n+1)/2 (n odd): one T step is one
standard step, or two when it is odd (3n+1 is always even). For a start
n = 2^k a + b with 0 <= b < 2^k and j <= k, the first j T steps of n take the
parities of the first j T steps of b (the term 3^c 2^(k-j) a stays even), so

    T^j(n) = 3^c_j 2^(k-j) a + T^j(b),   c_j = odd steps among the first j,

a linear function alpha_j a + beta_j of a whose coefficients depend on b
only. A block table holds, for every residue b, what k T steps at once need:

- hot[2b]   = T^k(b) | c_k << 32: the value after the block is 3^c_k a + T^k(b)
  and the block is k + c_k standard steps.
- hot[2b+1] = alpha* | beta* << 32: the largest value inside the block. Every
  value of a block is at most the 3v+1 that precedes a halving, and 3v+1 =
  2 T(v), so the candidates are 2 T^j(n) after each odd T step j. Among these
  linear functions the one with the largest (alpha, beta) is the largest for
  every a >= `peak_from` (returned by the builder: the largest a at which
  another candidate still wins, plus one), so blocks are only taken there.
- cold[2b]  = min alpha | min beta << 32: a lower bound min(alpha) a +
  min(beta) of every value T^1..T^k of the block (the values after 3v+1 are
  larger than the value before them), to skip blocks that cannot drop below
  the start.
- cold[2b+1] = A | g << 56: the glide sieve. Let j be the first T step with
  3^c_j < 2^j. Before j, T^i(n) = (3^c_i n + r_i) / 2^i > n for every n
  (r_i >= 0), so n cannot drop earlier; at j it drops iff
  alpha_j a + beta_j < 2^k a + b, that is iff a >= A; its glide is then
  g = j + c_j standard steps. g = 0 when no such j <= k exists.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hpcthreads.backends import kernelcache
from hpcthreads.backends.wideops import ONE, THREE, U64, ZERO

kernelcache.configure()

MAX_BLOCK_BITS = 19  # every packed field stays below 2^32


@njit(cache=True)
def build_tables(size):
    """Delay, peak and glide of every start value below `size` (entry 0 unused).

    Each value is followed until it drops below itself; the rest of its
    trajectory is then read from the entries already built.
    """
    tdelay = np.zeros(size, np.uint16)
    tpeak = np.zeros(size, np.uint64)
    tglide = np.zeros(size, np.uint16)
    tpeak[1] = ONE
    for n in range(2, size):
        start = U64(n)
        v = start
        peak = start
        steps = 0
        while v >= start:
            if v & ONE:
                v = v * THREE + ONE
                if v > peak:
                    peak = v
            else:
                v >>= ONE
            steps += 1
        tglide[n] = steps
        tdelay[n] = steps + tdelay[v]
        tpeak[n] = max(peak, tpeak[v])
    return tdelay, tpeak, tglide


@njit(cache=True)
def powers_of_three(count):
    pow3 = np.ones(count, np.uint64)
    for i in range(1, count):
        pow3[i] = pow3[i - 1] * THREE
    return pow3


@njit(cache=True)
def peak_threshold(cand_a, cand_b, ncand):
    """(index, a0): the candidate with the largest (alpha, beta), largest for all a >= a0."""
    best = 0
    for i in range(1, ncand):
        if cand_a[i] > cand_a[best] or (cand_a[i] == cand_a[best] and cand_b[i] > cand_b[best]):
            best = i
    a0 = ZERO
    for i in range(ncand):
        if cand_a[i] < cand_a[best] and cand_b[i] > cand_b[best]:
            # alpha_i a + beta_i <= alpha* a + beta* iff a >= ceil(dbeta / dalpha)
            da = cand_a[best] - cand_a[i]
            need = (cand_b[i] - cand_b[best] + da - ONE) // da
            a0 = max(a0, need)
    return best, a0


@njit(cache=True)
def build_block_table(bits):
    """(hot, cold, peak_from) for blocks of `bits` T steps; see the module docstring."""
    size = 1 << bits
    top = U64(size)
    pow3 = powers_of_three(bits + 1)
    hot = np.zeros(2 * size, np.uint64)
    cold = np.zeros(2 * size, np.uint64)
    cand_a = np.zeros(bits, np.uint64)
    cand_b = np.zeros(bits, np.uint64)
    peak_from = ZERO
    for b in range(size):
        start = U64(b)
        t = start
        c = 0
        ncand = np.int64(0)
        sieve = ZERO
        amin = top
        bmin = ~ZERO
        for j in range(1, bits + 1):
            if t & ONE:
                t = (t * THREE + ONE) >> ONE
                c += 1
                cand_a[ncand] = pow3[c] << U64(bits - j + 1)
                cand_b[ncand] = t << ONE
                ncand += 1
            else:
                t >>= ONE
            alpha = pow3[c] << U64(bits - j)
            amin = min(amin, alpha)
            bmin = min(bmin, t)
            if sieve == ZERO and alpha < top:
                need = ZERO if t < start else (t - start) // (top - alpha) + ONE
                sieve = need | (U64(j + c) << U64(56))
        hot[2 * b] = t | (U64(c) << U64(32))
        if ncand:
            best, a0 = peak_threshold(cand_a, cand_b, ncand)
            hot[2 * b + 1] = cand_a[best] | (cand_b[best] << U64(32))
            peak_from = max(peak_from, a0)
        cold[2 * b] = amin | (bmin << U64(32))
        cold[2 * b + 1] = sieve
    return hot, cold, peak_from


@njit(cache=True)
def build_sieve(bits):
    """(residues, packed, glide_max, exact_from): the 2^bits sieve of verification.

    Residues b mod 2^j that stay alive are refined level by level into b and
    b + 2^(j-1), whose T^(j-1) values differ by 3^c. A residue is sieved out at
    the first level j with 3^c_j < 2^j: every n >= A 2^j of that residue drops
    below itself there, after g = j + c_j standard steps (see the module
    docstring). `glide_max` is the largest such g and `exact_from` the largest
    A 2^j, so for n >= exact_from every sieved-out n has glide <= glide_max.
    The survivors are returned in increasing order with packed[i] =
    T^bits(b) | c << 56, so that n = 2^bits a + b reaches 3^c a + T^bits(b).
    """
    pow3 = powers_of_three(bits + 1)
    res = np.zeros(1, np.uint64)
    cs = np.zeros(1, np.uint64)
    ts = np.zeros(1, np.uint64)
    glide_max = 0
    exact_from = ZERO
    for j in range(1, bits + 1):
        top = U64(1) << U64(j)
        half = U64(1) << U64(j - 1)
        nres = np.zeros(2 * res.shape[0], np.uint64)
        ncs = np.zeros(2 * res.shape[0], np.uint64)
        nts = np.zeros(2 * res.shape[0], np.uint64)
        kept = 0
        for child in range(2):
            for idx in range(res.shape[0]):
                c = cs[idx]
                b = res[idx] + (half if child else ZERO)
                t = ts[idx] + (pow3[c] if child else ZERO)
                if t & ONE:
                    t = (t * THREE + ONE) >> ONE
                    c += ONE
                else:
                    t >>= ONE
                if pow3[c] < top:
                    glide_max = max(glide_max, j + np.int64(c))
                    need = ZERO if t < b else (t - b) // (top - pow3[c]) + ONE
                    exact_from = max(exact_from, need << U64(j))
                else:
                    nres[kept] = b
                    ncs[kept] = c
                    nts[kept] = t
                    kept += 1
        res, cs, ts = nres[:kept], ncs[:kept], nts[:kept]
    order = np.argsort(res)
    packed = ts[order] | (cs[order] << U64(56))
    return res[order].copy(), packed, glide_max, exact_from


@njit(cache=True)
def build_sieve_extension(bits, extra, cs_present):
    """(kill, ce, de, glide_max): the 2^bits sieve taken `extra` bits further, per start value.

    A survivor n = 2^bits a + b of the table reaches v = 3^c a + T^bits(b)
    after `bits` T steps. Its next `extra` steps take the parities of
    r = v mod 2^extra (the rest of v is 2^extra times an integer), so with
    c_j the odd steps among the first j of r, n is sieved out at the first
    depth i = bits + j with 3^(c + c_j) < 2^i, j <= extra:
    kill[c * 2^extra + r] is 1. Such an n drops below itself by then: with C
    odd steps among its first i, T^i(n) = (3^C n + s) / 2^i where
    s = sum over its odd steps m = 0..C-1 (at step p_m) of 3^(C-1-m) 2^p_m,
    and every shorter prefix survived (3^m >= 2^p_m), so s <= C 3^(C-1);
    for n >= 2^i, n (2^i - 3^C) >= 2^i (2^i - 3^C) > C 3^(C-1) >= s (an
    inequality of i alone, checked for every depth the configuration allows
    in tests/unit/test_verify_sieve.py), so n >= 2^(bits+extra) suffices. It
    takes at most g = i + C standard steps; `glide_max` is the largest g over
    the c in `cs_present` (the table's odd-step counts). A pair that is not
    killed does not drop within bits + extra steps, and its value there is
    3^ce[r] (v >> extra) + de[r], with de[r] = T^extra(r) taken alone.
    """
    size = 1 << extra
    pow3 = powers_of_three(np.int64(40))
    kill = np.zeros((bits + 1) * size, np.uint8)
    ce = np.zeros(size, np.uint64)
    de = np.zeros(size, np.uint64)
    cj = np.zeros(extra + 1, np.int64)
    glide_max = 0
    for r in range(size):
        d = U64(r)
        c = 0
        for j in range(1, extra + 1):
            if d & ONE:
                d = (d * THREE + ONE) >> ONE
                c += 1
            else:
                d >>= ONE
            cj[j] = c
        ce[r] = U64(c)
        de[r] = d
        for cb in range(bits + 1):
            for j in range(1, extra + 1):
                odd = cb + cj[j]
                # 3^odd < 2^depth, exactly: depth <= 63 and 3^40 > 2^63
                if odd <= 39 and pow3[odd] < U64(1) << U64(bits + j):
                    kill[cb * size + r] = 1
                    if cs_present[cb]:
                        glide_max = max(glide_max, bits + j + odd)
                    break
    return kill, ce, de, glide_max
