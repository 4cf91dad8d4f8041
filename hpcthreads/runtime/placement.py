"""`hpcthreads info`'s placement table: the device and backend each rank of this node would use."""

from __future__ import annotations

import os
from collections.abc import Mapping

from hpcthreads.runtime import devices


def placement_report(
    policy_text: str,
    ranks: int | None = None,
    environ: Mapping[str, str] | None = None,
    physical: int | None = None,
    available: dict[str, str] | None = None,
) -> str:
    """Lines for ranks 0..N-1 placed on this node (the node of rank 0) under `policy_text`."""
    from hpcthreads.backends import GPU_BACKENDS, available_backends

    policy = devices.parse_policy(policy_text)
    environ = os.environ if environ is None else environ
    physical = devices.count_physical() if physical is None else physical
    visible = devices.visible_devices(environ, physical)
    launched = devices.world_rank_size(environ)[1]
    count = ranks or (launched if launched > 1 else len(visible) + 1)
    available = available_backends() if available is None else available
    gpu = next((name for name in GPU_BACKENDS if available.get(name) == "available"), None)
    where = "CUDA_VISIBLE_DEVICES" if "CUDA_VISIBLE_DEVICES" in environ else f"{physical} from the driver"
    lines = [
        f"devices    {len(visible)} visible ({where}): {', '.join(visible) or 'none'}",
        f"placement  --device {policy_text}, {count} rank(s) on this node:",
    ]
    for rank in range(count):
        slot = devices.worker_slot(rank, rank, count)
        choice = devices.choose(policy, slot, visible, environ)
        if slot is None:
            use = "coordinator"
        elif choice.device is None:
            use = "numba-cpu"
        else:
            use = f"GPU {choice.device} with {gpu}" if gpu else "numba-cpu (no GPU backend is available)"
        lines.append(f"  rank {rank}: {use} ({choice.reason})")
    return "\n".join(lines)
