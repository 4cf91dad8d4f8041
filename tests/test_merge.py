"""`hpcthreads merge`: parts of a range combine exactly as one run over the union."""

from __future__ import annotations

import h5py
import pytest
from h5compare import assert_same_results
from helpers import cli, inspect_json

FIRST_OVER_64 = 12327829503
FIRST_OVER_128 = 48503373501652785087


def run_parts(tmp_path, kind, start, cuts, *options):
    """One run over [start, cuts[-1]) and one per piece between cuts; returns (whole, parts)."""
    count_key = "--count"
    whole = tmp_path / "whole.h5"
    cli(
        "run",
        kind,
        "--start",
        str(start),
        count_key,
        str(cuts[-1] - start),
        *options,
        "-o",
        str(whole),
        check=True,
    )
    parts = []
    for i, (a, b) in enumerate(zip([start, *cuts[:-1]], cuts)):
        path = tmp_path / f"part{i}.h5"
        cli("run", kind, "--start", str(a), count_key, str(b - a), *options, "-o", str(path), check=True)
        parts.append(path)
    return whole, parts


@pytest.mark.parametrize(
    "kind,start,cuts,options",
    [
        ("collatz", 1, [7000, 7001, 30001], ["--store", "per-number", "--batch-size", "4096"]),
        # The first part fits 64 bits, the second needs high words: the merged file has them for all
        ("collatz", FIRST_OVER_64 - 700, [FIRST_OVER_64 - 1, FIRST_OVER_64 + 800], ["--store", "per-number"]),
        ("verify", 2**40, [2**40 + 9000, 2**40 + 20000], []),
        # Paths past 2**128 live in the second part: their overflow rows move by the part's offset
        ("thread", FIRST_OVER_128 - 30, [FIRST_OVER_128 - 3, FIRST_OVER_128 + 10], ["--max-depth", "460"]),
    ],
)
def test_merged_parts_equal_one_run_over_the_union(tmp_path, kind, start, cuts, options):
    whole, parts = run_parts(tmp_path, kind, start, cuts, *options)
    merged = tmp_path / "merged.h5"
    proc = cli("merge", str(merged), *map(str, reversed(parts)), check=True)
    assert f"{start}..{cuts[-1] - 1}" in proc.stderr
    assert_same_results(whole, merged)
    assert inspect_json(merged)["jobs"] == inspect_json(whole)["jobs"]
    with h5py.File(merged) as f:
        assert f.attrs["state"] == "complete" and str(parts[0]) in f.attrs["merged_from"]
    if kind == "thread":
        with h5py.File(merged) as f:
            assert len(f["jobs/thread/overflow"]) > 0


@pytest.fixture(scope="module")
def pieces(tmp_path_factory):
    """Parts for the refusals: 1..1000, 1001..2000, 1500..2499, 3001..4000, and a verify job named collatz."""
    base = tmp_path_factory.mktemp("pieces")
    made = {}
    for label, start in (("a", 1), ("b", 1001), ("overlap", 1500), ("gap", 3001)):
        made[label] = base / f"{label}.h5"
        cli("run", "collatz", "--start", str(start), "--count", "1000", "-o", str(made[label]), check=True)
    made["verify"] = base / "verify.h5"
    cli(
        "run",
        "verify",
        "--name",
        "collatz",
        "--start",
        "1001",
        "--count",
        "1000",
        "-o",
        str(made["verify"]),
        check=True,
    )
    made["per-number"] = base / "pn.h5"
    cli(
        "run",
        "collatz",
        "--start",
        "1001",
        "--count",
        "1000",
        "--store",
        "per-number",
        "-o",
        str(made["per-number"]),
        check=True,
    )
    return made


@pytest.mark.parametrize(
    "names,message",
    [
        (["a", "b", "overlap"], "ranges overlap: "),
        (["a", "a"], "ranges overlap: "),
        (["a", "gap"], "ranges are not adjacent: nothing covers 1001..3000"),
        (["a", "verify"], "is a verify job but"),
        (["a", "per-number"], "store is 'per-number' in"),
    ],
)
def test_merge_refuses_parts_that_do_not_tile_one_job(tmp_path, pieces, names, message):
    out = tmp_path / "out.h5"
    proc = cli("merge", str(out), *(str(pieces[name]) for name in names))
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


def test_merge_refuses_an_unfinished_part(tmp_path, pieces):
    unfinished = tmp_path / "b.h5"
    unfinished.write_bytes(pieces["b"].read_bytes())
    with h5py.File(unfinished, "r+") as f:
        f["jobs/collatz"].attrs["state"] = "interrupted"
    proc = cli("merge", str(tmp_path / "out.h5"), str(pieces["a"]), str(unfinished))
    assert proc.returncode == 2 and "job 'collatz' is interrupted, not complete" in proc.stderr


def test_merge_never_overwrites_without_force(tmp_path, pieces):
    out = tmp_path / "out.h5"
    out.write_text("keep")
    proc = cli("merge", str(out), str(pieces["a"]), str(pieces["b"]))
    assert proc.returncode == 2 and "exists; use --force" in proc.stderr
    cli("merge", str(out), str(pieces["a"]), str(pieces["b"]), "--force", check=True)
    assert inspect_json(out)["jobs"]["collatz"]["count"] == 2000
