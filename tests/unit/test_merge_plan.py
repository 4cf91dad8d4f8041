"""Which parts merge into one job: pure checks, no files and no MPI."""

from __future__ import annotations

import pytest

from hpcthreads.config import make_job
from hpcthreads.errors import ConfigError
from hpcthreads.tools.merge import merged_job


def part(start, count, jtype="collatz", **params):
    size_key = "thread_count" if jtype == "thread" else "count"
    if jtype == "thread":
        params.setdefault("max_depth", 10)
    job = make_job({"name": "j", "type": jtype, "parameters": {"start": start, size_key: count, **params}}, 0)
    return (f"part@{start}", job)


def test_adjacent_parts_give_the_union_in_order_of_start():
    job, ordered = merged_job([part(2**64 + 10, 5), part(2**64, 10), part(2**64 + 15, 1)])
    assert (job.start, job.size) == (2**64, 16)
    assert [label for label, _ in ordered] == [f"part@{2**64 + k}" for k in (0, 10, 15)]


def test_parts_may_differ_in_batch_size_only():
    job, _ = merged_job([part(1, 10, batch_size=3), part(11, 10, batch_size=7)])
    assert job.batch_size == 3 and job.size == 20
    with pytest.raises(ConfigError, match="max_depth is 11 in part@11 but 10 in part@1"):
        merged_job([part(1, 10, "thread"), part(11, 10, "thread", max_depth=11)])


def test_verify_parts_may_differ_in_their_sieve():
    """The sieve changes how fast a part ran, never its results."""
    job, _ = merged_job(
        [part(2**40, 10, "verify", sieve_bits=24, sieve_extra_bits=0), part(2**40 + 10, 10, "verify")]
    )
    assert job.size == 20 and job.params["sieve_bits"] == 24
    with pytest.raises(ConfigError, match="max_steps is 99 in part@"):
        merged_job([part(2**40, 10, "verify"), part(2**40 + 10, 10, "verify", max_steps=99)])


@pytest.mark.parametrize(
    "parts,message",
    [
        ([part(1, 10), part(10, 10)], "ranges overlap: part@1 covers 1..10 and part@10 starts at 10"),
        ([part(1, 10), part(12, 10)], "ranges are not adjacent: nothing covers 11..11"),
        ([part(1, 10), part(11, 10, "verify")], "part@11 is a verify job but part@1 is a collatz job"),
    ],
)
def test_overlaps_gaps_and_other_types_are_refused(parts, message):
    with pytest.raises(ConfigError, match=message):
        merged_job(parts)
