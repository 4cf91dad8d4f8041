"""Per-rank memory and GPU samples, and how the metrics file writes them (no MPI)."""

from __future__ import annotations

import socket
from pathlib import Path

from hpcthreads.runtime.devices import count_physical
from hpcthreads.runtime.monitor import Metrics, Snapshot, metrics_path
from hpcthreads.runtime.usage import GPUProbe, Usage, UsageSampler, rss_bytes


def test_rss_is_this_processs_resident_memory_or_none():
    before = rss_bytes()
    held = bytearray(b"x" * (64 << 20))  # written, so resident
    assert rss_bytes() >= before + (60 << 20)
    del held
    assert rss_bytes("/nonexistent/statm") is None


def test_a_sampler_samples_at_most_once_per_interval():
    sampler = UsageSampler(interval=1.0)
    first = sampler.sample(now=10.0)
    assert first is not None and first.rss_bytes > 0
    assert sampler.sample(now=10.5) is None
    assert sampler.sample(now=11.0) is not None


def test_gpu_figures_are_absent_without_a_gpu_and_numbers_with_one():
    sample = UsageSampler(gpu=True).sample(now=0.0)
    if count_physical() == 0:
        assert GPUProbe.open() is None
        assert sample.gpu_memory_used_bytes is None and sample.gpu_utilization is None
    else:
        assert sample.gpu_memory_used_bytes > 0 and 0.0 <= sample.gpu_utilization <= 1.0


def render(tmp_path: Path, usage: dict[int, Usage], output: str = "/data/out.h5") -> str:
    """The metrics text of a run writing `output` on host node1."""
    metrics = Metrics(tmp_path, Path(output))
    metrics.host = "node1"
    return metrics.render(Snapshot(done={"a": 5}, total={"a": 10}, usage=usage), 0.0)


def test_cpu_ranks_write_no_gpu_series_and_gpu_ranks_do(tmp_path):
    cpu = render(tmp_path, {0: Usage(100), 1: Usage(200)})
    assert 'hpcthreads_rank_memory_rss_bytes{run="/data/out.h5",host="node1",rank="1"} 200' in cpu
    assert "gpu" not in cpu
    mixed = render(tmp_path, {1: Usage(200), 2: Usage(300, 4096, 0.25)})
    assert 'hpcthreads_rank_gpu_memory_used_bytes{run="/data/out.h5",host="node1",rank="2"} 4096' in mixed
    assert 'hpcthreads_rank_gpu_utilization_ratio{run="/data/out.h5",host="node1",rank="2"} 0.25' in mixed
    assert (
        'rank="1"} 200' in mixed
        and 'gpu_utilization_ratio{run="/data/out.h5",host="node1",rank="1"' not in mixed
    )


def test_label_values_are_escaped_and_jobs_are_labelled_hpc_job(tmp_path):
    text = render(tmp_path, {}, output='/data/a "quoted"\\name.h5')
    assert 'hpcthreads_items{run="/data/a \\"quoted\\"\\\\name.h5",host="node1",hpc_job="a"} 10' in text
    assert "job=" not in text.replace("hpc_job=", "")


def test_each_run_has_a_file_of_its_own(tmp_path):
    here = metrics_path(tmp_path, tmp_path / "out.h5", "node1")
    assert here.name.startswith("hpcthreads-out-") and here.suffix == ".prom"
    assert metrics_path(tmp_path, tmp_path / "other" / "out.h5", "node1") != here
    assert metrics_path(tmp_path, tmp_path / "out.h5", "node2") != here
    assert Metrics(tmp_path, tmp_path / "out.h5").path == metrics_path(tmp_path, tmp_path / "out.h5")
    assert Metrics(tmp_path, tmp_path / "out.h5").host == socket.gethostname()
