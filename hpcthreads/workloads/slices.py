"""How a large verify job is cut by residue: which integers each of its items stands for.

A job [S, S + C) of `verify` has C items, one per start value, and the
runtime (chunks, ledger, resume, progress) only ever sees item offsets. In
slice order the items are laid out so that a run of items is a run of
residues B mod 2^K, each across every A of the job (n = 2^K A + B), which
is what lets the slice sieve (backends.slicesieve) build each residue once
for all its A:

- items [0, P): the prefix [S, S + P), in order of n, walked whole by the
  range kernel. It ends at the witness w = S + P - 1, the first start value
  whose glide reaches the sieve's glide_max (`floor`): from there on no value
  the sieve drops (glide <= glide_max <= glide(w)) can be a glide record;
- items [P, C): the body [N0, N1) = [S + P, S + C), residue-major: residue B
  has the values A in [a0 + (B < b0), a1 + (B < b1)), where
  N0 = 2^K a0 + b0 and N1 = 2^K a1 + b1, and its items come after those of
  every smaller residue.

The layout depends only on the job (start, count, max_steps and its sieve
parameters), so every rank, and a resumed run, cut it the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

# The witness is looked for among this many first values
WITNESS_SEARCH = 1 << 16


@dataclass(frozen=True)
class SliceLayout:
    start: int
    count: int
    K: int
    prefix: int
    floor: int

    @property
    def body(self) -> tuple[int, int, int, int]:
        """(a0, b0, a1, b1): the body's ends N0 = 2^K a0 + b0 and N1 = 2^K a1 + b1."""
        a0, b0 = divmod(self.start + self.prefix, 1 << self.K)
        a1, b1 = divmod(self.start + self.count, 1 << self.K)
        return a0, b0, a1, b1

    def before(self, residue: int) -> int:
        """Body items of the residues below `residue` (0 <= residue <= 2^K)."""
        a0, b0, a1, b1 = self.body
        return (a1 - a0) * residue + min(residue, b1) - min(residue, b0)

    def locate(self, item: int) -> tuple[int, int]:
        """(B, i): body item `item` is the i-th value A of residue B."""
        lo, hi = 0, (1 << self.K) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.before(mid) <= item:
                lo = mid
            else:
                hi = mid - 1
        return lo, item - self.before(lo)

    def pieces(self, offset: int, count: int) -> list[tuple]:
        """A chunk's items as ("range", first n, count) and ("slice", bfirst, ifirst, blast, iend)."""
        out: list[tuple] = []
        if offset < self.prefix:
            head = min(count, self.prefix - offset)
            out.append(("range", self.start + offset, head))
            offset, count = offset + head, count - head
        if count:
            bfirst, ifirst = self.locate(offset - self.prefix)
            blast, ilast = self.locate(offset - self.prefix + count - 1)
            out.append(("slice", bfirst, ifirst, blast, ilast + 1))
        return out

    def values(self, offset: int, count: int) -> list[int]:
        """Every start value of items [offset, offset + count), in item order (small chunks; tests)."""
        out = []
        a0, b0, a1, b1 = self.body
        for item in range(offset, offset + count):
            if item < self.prefix:
                out.append(self.start + item)
                continue
            residue, i = self.locate(item - self.prefix)
            out.append(((a0 + (residue < b0) + i) << self.K) + residue)
        return out


def glide_bound(K: int) -> int:
    """A glide no value dropped by a 2^K sieve, however far it goes per value, can exceed.

    A value dropped at depth i of T (i <= K + MAX_SIEVE_EXTRA_BITS, and at most 63: the
    extension tables' words) has C odd steps with 3^C < 2^i, and a glide of i + C standard
    steps; the bound is the largest i + C. It depends on K alone, so the layout does not
    depend on the sieve's speed settings.
    """
    from hpcthreads.config import MAX_SIEVE_EXTRA_BITS

    depth = min(63, K + MAX_SIEVE_EXTRA_BITS)
    odd = max(c for c in range(depth + 1) if 3**c < 2**depth)
    return depth + odd


def make_layout(start: int, count: int, K: int, max_steps: int) -> SliceLayout | None:
    """The slice layout of a job, or None where it cannot apply (the job is then cut into ranges).

    The prefix ends at the witness: the first value whose exact glide reaches glide_bound(K)
    within `max_steps`.
    """
    from hpcthreads import exact

    bound = glide_bound(K) if K else 0
    if not K or max_steps < bound:
        return None
    for n in range(start, min(start + WITNESS_SEARCH, start + count)):
        glide = exact.glide_of(n, max_steps)
        if glide >= bound:
            layout = SliceLayout(start, count, K, n + 1 - start, glide)
            a0, _, a1, _ = layout.body
            return layout if a1 > a0 else None
    return None
