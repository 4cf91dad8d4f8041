"""The command line as a user drives it: run, inspect, info, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import pytest
import reference as ref
from helpers import cli, inspect_json


def test_one_job_shorthand_gives_classical_results(tmp_path):
    out = tmp_path / "out.h5"
    proc = cli("run", "collatz", "--start", "1", "--count", "1e5", "-o", str(out), check=True)
    assert "Traceback" not in proc.stderr
    job = inspect_json(out)["jobs"]["collatz"]
    want = ref.collatz_summary(1, 10**5)
    assert job["type"] == "collatz" and job["start"] == 1 and job["count"] == 10**5
    assert job["sum_delay"] == want["sum_delay"]
    assert job["max_delay"] == [77031, 350]
    assert job["delay_records"] == [list(p) for p in want["delay_records"]]
    assert job["path_records"] == [list(p) for p in want["path_records"]]
    assert job["glide_records"] == [list(p) for p in want["glide_records"]]
    assert job["max_peak"] == list(want["path_records"][-1])
    assert job["max_glide"] == list(want["glide_records"][-1])


def test_job_file_runs_every_type_with_exact_big_integers(tmp_path):
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(
        "jobs:\n"
        "  - {name: big, type: collatz, parameters: {start: '2**64 - 3', count: 6, store: per-number}}\n"
        "  - {name: check, type: verify, priority: high, parameters: {start: '2^70', count: 1000}}\n"
        "  - {name: tree, type: thread, priority: low, parameters: {thread_count: 50, max_depth: 30}}\n"
    )
    out = tmp_path / "out.h5"
    cli("run", str(jobs), "-o", str(out), check=True)
    doc = inspect_json(out)["jobs"]
    start = 2**64 - 3
    assert doc["big"]["max_peak"] == list(
        ref.range_records([(n, ref.peak(n)) for n in range(start, start + 6)])[-1]
    )
    assert doc["big"]["start"] == start
    assert doc["check"]["count"] == 1000 and doc["check"]["unresolved"] == []
    glides = [(n, ref.glide(n)) for n in range(2**70, 2**70 + 1000)]
    assert doc["check"]["max_glide"] == list(ref.range_records(glides)[-1])
    assert doc["tree"] == {**doc["tree"], "type": "thread", "start": 1, "thread_count": 50, "max_depth": 30}
    with h5py.File(out) as f:
        assert f.attrs["state"] == "complete"
        assert "type: collatz" in f.attrs["job_file"]
        assert "delay(27)=111" in f.attrs["conventions"]
        paths = f["jobs/tree/paths"][()]
        depth = f["jobs/tree/depth"][()]
        assert paths.shape == (50, 31)
        assert paths[26, : depth[26] + 1].tolist() == ref.thread_path(27, 30)
        assert f["jobs/big/peak_hi"].shape == (6,)


@pytest.mark.parametrize(
    "args,message",
    [
        (["run", "collatz", "--count", "0"], "job 'collatz': count must be at least 1"),
        (["run", "collatz", "--count", "10", "--start", "0"], "start must be at least 1"),
        (["run", "collatz"], "count is required"),
        (["run", "nosuchfile.yaml"], "neither a job type"),
        (["run", "collatz", "--count", "1e1.5"], "count: cannot read"),
        (["run", "collatz", "--count", "10", "-o", "/nonexistent/dir/out.h5"], "does not exist"),
        (["run", "collatz", "--count", "10", "--backend", "abacus"], "unknown backend 'abacus'"),
        (["inspect", "missing.h5"], "does not exist"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, args, message):
    proc = cli(*args, cwd=tmp_path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr


def test_existing_output_is_refused_unless_forced(tmp_path):
    out = tmp_path / "out.h5"
    out.write_bytes(b"keep me")
    proc = cli("run", "collatz", "--count", "10", "-o", str(out))
    assert proc.returncode != 0 and "exists; use --force" in proc.stderr
    assert out.read_bytes() == b"keep me"
    cli("run", "collatz", "--count", "10", "-o", str(out), "--force", check=True)
    assert inspect_json(out)["jobs"]["collatz"]["count"] == 10


def test_bad_job_files_are_refused(tmp_path):
    cases = {
        "notyaml.yaml": "jobs: [oops",
        "dup.yaml": "jobs:\n - {name: a, type: thread, parameters: {thread_count: 1, max_depth: 1}}\n" * 1
        + " - {name: a, type: thread, parameters: {thread_count: 1, max_depth: 1}}\n",
        "binary.yaml": "\x00\x01",
    }
    for name, text in cases.items():
        path = tmp_path / name
        path.write_text(text)
        proc = cli("run", str(path), "-o", str(tmp_path / "o.h5"))
        assert proc.returncode == 2, name
        assert proc.stderr.startswith("hpcthreads: error:"), proc.stderr
        assert not (tmp_path / "o.h5").exists()


def test_inspect_refuses_a_file_that_is_not_results(tmp_path):
    bogus = tmp_path / "bogus.h5"
    bogus.write_text("not hdf5")
    proc = cli("inspect", str(bogus))
    assert proc.returncode != 0 and "not a readable HDF5 file" in proc.stderr


def test_info_lists_versions_and_backends():
    proc = cli("info", check=True)
    for word in ("python", "numba", "h5py", "mpi", "numba-cpu: available"):
        assert word in proc.stdout


def test_help_explains_the_run_command():
    proc = cli("run", "--help", check=True)
    assert "job file" in proc.stdout and "--output" in proc.stdout


def test_importing_the_package_starts_nothing_heavy():
    code = (
        "import sys, hpcthreads, hpcthreads.cli, hpcthreads.config;"
        "print(json.dumps(sorted(m for m in ('mpi4py', 'numba', 'cupy', 'h5py') if m in sys.modules)))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", "import json;" + code], capture_output=True, text=True, check=True
    )
    assert json.loads(proc.stdout) == []


def test_info_warm_up_leaves_nothing_to_compile(tmp_path):
    """After `info --warm-up`, runs of every job type load their kernels from the cache: no new entries."""
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "NUMBA_CACHE_DIR": ""}
    proc = cli("info", "--warm-up", env=env, timeout=600, check=True)
    assert "kernels compiled into" in proc.stdout
    numba_dir = tmp_path / "cache" / "hpcthreads" / "numba"
    before = {p: p.stat().st_mtime_ns for p in numba_dir.rglob("*") if p.is_file()}
    assert any(p.suffix == ".nbi" for p in before), "no kernel was cached"
    assert list((tmp_path / "cache" / "hpcthreads").glob("sieve-28-*.npz")), "the default sieve was not built"
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(
        "jobs:\n"
        "  - {name: c, type: collatz, parameters: {start: 1000000, count: 5000, store: per-number}}\n"
        "  - {name: v, type: verify, parameters: {start: 1099511627776, count: 300000}}\n"
        "  - {name: t, type: thread, parameters: {thread_count: 50, max_depth: 40}}\n"
    )
    cli("run", str(jobs), "-o", str(tmp_path / "out.h5"), "--quiet", env=env, check=True)
    after = {p: p.stat().st_mtime_ns for p in numba_dir.rglob("*") if p.is_file()}
    assert after == before


def test_verify_shorthand_takes_the_sieve(tmp_path):
    """--sieve-bits and --sieve-extra-bits reach the job; with or without the sieve the results agree."""
    summaries = []
    for bits, extra in [("0", "0"), ("12", "4")]:
        out = tmp_path / f"v{bits}.h5"
        args = ["run", "verify", "--start", "2**40", "--count", "2e5", "-o", str(out), "--quiet"]
        cli(*args, "--sieve-bits", bits, "--sieve-extra-bits", extra, check=True)
        with h5py.File(out) as f:
            attrs = f["jobs/verify"].attrs
            assert (attrs["sieve_bits"], attrs["sieve_extra_bits"]) == (int(bits), int(extra))
        (job,) = inspect_json(out)["jobs"].values()
        summaries.append({key: job[key] for key in ("count", "covered", "max_glide", "unresolved")})
    assert summaries[0] == summaries[1]
    proc = cli("run", "verify", "--count", "10", "--sieve-extra-bits", "20", "-o", str(tmp_path / "x.h5"))
    assert proc.returncode == 2 and "sieve_extra_bits must be at most 16" in proc.stderr


def test_a_run_compiles_only_the_kernels_of_its_job_types(tmp_path):
    """With a cold cache, a collatz run compiles the collatz kernels and no verify or thread kernel."""
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "NUMBA_CACHE_DIR": ""}
    cli("run", "collatz", "--count", "1000", "-o", str(tmp_path / "c.h5"), "--quiet", env=env, check=True)
    cached = {p.name.split("-")[0] for p in (tmp_path / "cache" / "hpcthreads" / "numba").rglob("*.nbi")}
    assert "cpukernels.collatz_range" in cached
    assert not {name for name in cached if name.startswith(("sieve.", "glidewalk."))}
    assert "cpukernels.thread_paths" not in cached
