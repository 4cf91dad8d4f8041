"""Jobs and runs as frozen dataclasses; every validation error is raised here.

Every rank parses the same input and reaches the same verdict, so a bad job
file is refused before any rank starts work.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from hpcthreads.errors import ConfigError, shown

JOB_TYPES = ("collatz", "verify", "thread")
PRIORITIES = ("high", "normal", "low")
STORE_MODES = ("summary", "per-number")
JOB_KEYS = {"name", "type", "priority", "gpu_preferred", "parameters"}

# Start values are accepted up to this bound (the verified frontier is ~2^71)
MAX_START = 2**128

# The default step bound of `verify`: no known start value needs a tenth of it
DEFAULT_MAX_STEPS = 100_000

# The verification sieve: residues mod 2^sieve_bits (0: none); 2^28 takes 54 MiB, 2^30 about 200 MiB
DEFAULT_SIEVE_BITS = 28
MAX_SIEVE_BITS = 30
# Bits the sieve goes further per start value, without a table of residues
DEFAULT_SIEVE_EXTRA_BITS = 14
MAX_SIEVE_EXTRA_BITS = 16

# A large verify job is cut by residue mod 2^K (workloads.slices); K from its size unless given
MAX_SLICE_BITS = 51
MIN_SLICE_BITS = 8
SLICE_BATCH_SIZE = 1 << 32
# Values A per residue that make the slice build a small part of the work
MIN_VALUES_PER_RESIDUE = 256
# A chunk keeps the best glide of each A: this bounds that array
MAX_VALUES_PER_RESIDUE = 1 << 20
# The walk's first value 3^c A + T^K(B) must stay inside 128 bits, and A inside one word
VALUE_BITS = 126
# Below this many values a job is cut into contiguous ranges (the range kernel's sieve is as good)
MIN_SLICE_COUNT = 1 << 36

# Parameters that change how fast a job runs, never its results: a resumed run or a merged
# part may differ in them
SPEED_ONLY_PARAMETERS = frozenset({"sieve_bits", "sieve_extra_bits", "sieve_mod9"})

# Per-type parameters: name -> (required, default, minimum)
PARAMETERS: dict[str, dict[str, tuple[bool, Any, int | None]]] = {
    "collatz": {
        "start": (False, 1, 1),
        "count": (True, None, 1),
        "batch_size": (False, 1 << 20, 1),
        "store": (False, "summary", None),
    },
    "verify": {
        "start": (False, 1, 1),
        "count": (True, None, 1),
        "batch_size": (False, 1 << 22, 1),
        "max_steps": (False, DEFAULT_MAX_STEPS, 1),
        "sieve_bits": (False, DEFAULT_SIEVE_BITS, 0),
        "sieve_extra_bits": (False, DEFAULT_SIEVE_EXTRA_BITS, 0),
        "sieve_mod9": (False, 1, 0),
        # Every n below it is taken as verified (default: the job's start); see docs/jobs.md
        "verified_below": (False, None, 1),
        # K of the residue slices: "auto" (from the job's size), 0 (contiguous ranges) or 8..51
        "sieve_slice_bits": (False, "auto", 0),
        # deltaN = 1: skip values whose path joins that of n - 1 (convergence only, no glide)
        "sieve_join": (False, 0, 0),
    },
    "thread": {
        "start": (False, 1, 1),
        "thread_count": (True, None, 1),
        "max_depth": (True, None, 0),
        "batch_size": (False, 4096, 1),
    },
}

# Numbers are refused before they are computed beyond this: no job needs more than 128 bits
MAX_BITS = 1024
MAX_DIGITS = 308
MAX_NUMBER_TEXT = 400
# A thread's path is one row, computed and written whole: this bounds its memory and the time
# until a signal is answered (16 MiB, tens of milliseconds)
MAX_DEPTH = 2**21 - 1
# Job names: they name HDF5 groups and exported files
MAX_NAME = 100
NAME_PATTERN = rf"[A-Za-z0-9][A-Za-z0-9_.\-]{{0,{MAX_NAME - 1}}}"
# Values a YAML job file may hold once every alias is written out: tens of thousands of jobs. A
# few hundred bytes of nested aliases stand for billions of values, and every walk over them
# (validation, an error's quotation) would take that long
MAX_YAML_VALUES = 1_000_000
_SCI = re.compile(r"(?<![\w.])(\d+(?:\.\d*)?[eE][+-]?\d+)")


def parse_int(value: Any, what: str) -> int:
    """Read an exact integer from an int, an integral float or an expression.

    Strings may use `1e8`, `2**64`, `2^64`, `1_000_000` and `+ - *`; anything
    that is not an exact integer is refused with a message naming `what`.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{what}: expected an integer, got {shown(value)}")
    if isinstance(value, int):
        return _bounded(value, str(value)[:20] + "...", what)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 2**53:
            return int(value)
        raise ConfigError(f"{what}: {value!r} is not an exact integer; write it as a string")
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{what}: expected an integer, got {shown(value)}")
    if len(value) > MAX_NUMBER_TEXT:
        raise ConfigError(f"{what}: {len(value)} characters is too long for a number")
    text = _SCI.sub(lambda m: _exact_sci(m.group(1), what), value.strip().replace("^", "**"))
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise ConfigError(f"{what}: cannot read {shown(value)} as an integer") from None
    return _eval_int(tree.body, value, what)


def _exact_sci(literal: str, what: str) -> str:
    try:
        number = Decimal(literal)
    except InvalidOperation:
        raise ConfigError(f"{what}: cannot read {literal!r}") from None
    if number.adjusted() > MAX_DIGITS:
        raise ConfigError(f"{what}: {literal!r} has more than {MAX_DIGITS} digits")
    if number != number.to_integral_value():
        raise ConfigError(f"{what}: {literal!r} is not an integer")
    return str(int(number))


def _eval_int(node: ast.AST, source: str, what: str) -> int:
    """Evaluate an integer expression, refusing any value of more than MAX_BITS before computing it."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return _bounded(node.value, source, what)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        operand = _eval_int(node.operand, source, what)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Pow)):
        left = _eval_int(node.left, source, what)
        right = _eval_int(node.right, source, what)
        if isinstance(node.op, ast.Pow):
            if right < 0:
                raise ConfigError(f"{what}: negative exponent in {source!r}")
            if abs(left) > 1 and (abs(left).bit_length() - 1) * right > MAX_BITS:
                raise ConfigError(f"{what}: {source!r} has more than {MAX_DIGITS} digits")
            return _bounded(left**right, source, what)
        if isinstance(node.op, ast.Mult):
            if abs(left).bit_length() + abs(right).bit_length() > MAX_BITS + 1:
                raise ConfigError(f"{what}: {source!r} has more than {MAX_DIGITS} digits")
            return _bounded(left * right, source, what)
        return _bounded(left + right if isinstance(node.op, ast.Add) else left - right, source, what)
    raise ConfigError(f"{what}: cannot read {source!r} as an integer")


def _bounded(value: int, source: str, what: str) -> int:
    if abs(value).bit_length() > MAX_BITS:
        raise ConfigError(f"{what}: {source!r} has more than {MAX_DIGITS} digits")
    return value


@dataclass(frozen=True)
class Job:
    """One job of a job file, validated."""

    name: str
    type: str
    params: dict[str, Any] = field(hash=False)
    priority: str = "normal"
    gpu_preferred: bool = False

    @property
    def start(self) -> int:
        return self.params["start"]

    @property
    def size(self) -> int:
        """Number of work items: start values, or threads."""
        return self.params["thread_count" if self.type == "thread" else "count"]

    @property
    def batch_size(self) -> int:
        return self.params["batch_size"]

    def to_dict(self) -> dict[str, Any]:
        """The job as it would be written in a job file (exact integers)."""
        return {
            "name": self.name,
            "type": self.type,
            "priority": self.priority,
            "gpu_preferred": self.gpu_preferred,
            "parameters": dict(self.params),
        }


def comparable(job: dict[str, Any]) -> dict[str, Any]:
    """A job's dict (Job.to_dict) without its speed-only parameters: what must match to resume or merge."""
    parameters = {k: v for k, v in job.get("parameters", {}).items() if k not in SPEED_ONLY_PARAMETERS}
    return {**job, "parameters": parameters}


@dataclass(frozen=True)
class RunConfig:
    """Everything one run needs, identical on every rank."""

    jobs: tuple[Job, ...]
    output: Path
    source: str = ""
    # The job file, when the jobs came from one (an output may never be written over it)
    job_path: Path | None = None
    force: bool = False
    backend: str = "auto"
    device: str = "local-rank"
    log_level: str | None = None
    log_file: str | None = None
    heartbeat_timeout: float = 120.0
    startup_timeout: float = 600.0
    io: str = "auto"
    resume: bool = False
    checkpoint_interval: float = 30.0
    quiet: bool = False
    progress_interval: float = 30.0
    metrics_dir: Path | None = None
    # Sub-coordinators: auto, none, node, K, or levels from the bottom such as "8,64"
    groups: str = "auto"
    # Seconds of work per worker chunk and between heartbeats (None: from the number of ranks)
    chunk_seconds: float | None = None
    heartbeat_interval: float | None = None
    # The `simulated` backend: items per second per worker, and FRACTION:FACTOR of slowed workers
    simulated_rate: float = 1e9
    simulated_slow: str = ""

    def __post_init__(self) -> None:
        # Settings that cannot work together are refused before any rank starts, not found out
        # as a worker declared dead or an error that asks for the option already given
        if self.heartbeat_interval is not None and 4 * self.heartbeat_interval > self.heartbeat_timeout:
            raise ConfigError(
                f"--heartbeat-interval {self.heartbeat_interval:g} s is more than a quarter of "
                f"--heartbeat-timeout {self.heartbeat_timeout:g} s: a heartbeat late by a sub-batch or by "
                "the coordinator's checks would get a busy worker declared dead"
            )
        if self.resume and self.force:
            raise ConfigError(
                "--resume and --force contradict each other: --resume finishes a stopped run, "
                "--force starts it again; give one"
            )

    def jobs_json(self) -> str:
        """The validated jobs, with defaults, as canonical JSON: what a resumed run must match."""
        return json.dumps({"jobs": [job.to_dict() for job in self.jobs]}, sort_keys=True)


def make_job(entry: Any, index: int) -> Job:
    """Validate one job entry (a mapping from a job file)."""
    if not isinstance(entry, dict):
        raise ConfigError(f"job #{index + 1}: expected a mapping, got {type(entry).__name__}")
    name = entry.get("name", f"job{index + 1}")
    label = f"job {shown(name)}"
    if not isinstance(name, str):
        raise ConfigError(f"job #{index + 1}: name must be text; quote it (name: '{shown(name)}')")
    if not re.fullmatch(NAME_PATTERN, name):
        raise ConfigError(
            f"job #{index + 1}: name {shown(name)}: up to {MAX_NAME} letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    unknown = sorted(set(entry) - JOB_KEYS, key=str)
    if unknown:
        raise ConfigError(
            f"{label}: unknown key {shown(unknown[0])} (allowed: {', '.join(sorted(JOB_KEYS))})"
        )
    jtype = entry.get("type")
    if jtype is None:
        raise ConfigError(f"{label}: type is missing (one of {', '.join(JOB_TYPES)})")
    if jtype not in JOB_TYPES:
        raise ConfigError(f"{label}: type: unknown job type {shown(jtype)} (one of {', '.join(JOB_TYPES)})")
    priority = entry.get("priority", "normal")
    if priority not in PRIORITIES:
        raise ConfigError(f"{label}: priority: {shown(priority)} is not one of {', '.join(PRIORITIES)}")
    gpu = entry.get("gpu_preferred", False)
    if not isinstance(gpu, bool):
        raise ConfigError(f"{label}: gpu_preferred: expected true or false, got {shown(gpu)}")
    raw = entry.get("parameters", {})
    if not isinstance(raw, dict):
        raise ConfigError(f"{label}: parameters: expected a mapping")
    params = _check_parameters(jtype, raw, label)
    return Job(name=name, type=jtype, params=params, priority=priority, gpu_preferred=gpu)


def _check_parameters(jtype: str, raw: dict[str, Any], label: str) -> dict[str, Any]:
    spec = PARAMETERS[jtype]
    unknown = sorted(set(raw) - set(spec), key=str)
    if unknown:
        raise ConfigError(
            f"{label}: parameters: unknown key {shown(unknown[0])} for type {jtype} "
            f"(allowed: {', '.join(spec)})"
        )
    params: dict[str, Any] = {}
    for key, (required, default, minimum) in spec.items():
        if key not in raw:
            if required:
                raise ConfigError(f"{label}: parameters: {key} is required for type {jtype}")
            params[key] = default
            continue
        if key == "sieve_slice_bits" and raw[key] == "auto":
            params[key] = default
            continue
        if key == "store":
            if raw[key] not in STORE_MODES:
                raise ConfigError(f"{label}: store: {shown(raw[key])} is not one of {', '.join(STORE_MODES)}")
            params[key] = raw[key]
            continue
        value = parse_int(raw[key], f"{label}: {key}")
        if minimum is not None and value < minimum:
            raise ConfigError(f"{label}: {key} must be at least {minimum}, got {value}")
        if key == "max_depth" and value > MAX_DEPTH:
            raise ConfigError(
                f"{label}: max_depth must be at most {MAX_DEPTH:,}, got {value:,} (a thread's path is one "
                "row of the file, written whole; known trajectories below 2**128 reach 1 in a few thousand "
                "steps)"
            )
        if key == "sieve_bits" and value > MAX_SIEVE_BITS:
            raise ConfigError(f"{label}: sieve_bits must be at most {MAX_SIEVE_BITS}, got {value}")
        if key in ("sieve_mod9", "sieve_join") and value > 1:
            raise ConfigError(f"{label}: {key} must be 0 (off) or 1 (on), got {value}")
        if key == "sieve_extra_bits" and value > MAX_SIEVE_EXTRA_BITS:
            raise ConfigError(
                f"{label}: sieve_extra_bits must be at most {MAX_SIEVE_EXTRA_BITS}, got {value}"
            )
        params[key] = value
    size = params.get("count", params.get("thread_count", 1))
    if size >= 2**62:
        raise ConfigError(f"{label}: count must be below 2**62; split the range into several jobs")
    last = params["start"] + size - 1
    if last >= MAX_START:
        raise ConfigError(f"{label}: start + count must stay below 2**128")
    if jtype == "verify":
        _resolve_verify(params, label, "batch_size" in raw)
    return params


def _resolve_verify(params: dict[str, Any], label: str, batch_given: bool) -> None:
    """verified_below's default and bound; sieve_slice_bits "auto" made a number, so that the way
    the job is cut is recorded in its file and a resumed run cuts it the same way."""
    start, count = params["start"], params["count"]
    if params["verified_below"] is None:
        params["verified_below"] = start
    if params["verified_below"] > start:
        raise ConfigError(
            f"{label}: verified_below ({params['verified_below']}) must be at most the job's start "
            f"({start}): a job verifies what lies above it"
        )
    bits = params["sieve_slice_bits"]
    if bits == "auto":
        params["sieve_slice_bits"] = bits = slice_bits(start, count)
    problem = slice_bits_problem(start, count, bits)
    if problem:
        raise ConfigError(f"{label}: sieve_slice_bits {bits}: {problem}")
    if bits and not batch_given:
        # A chunk of residues walks a few values per thousand: larger chunks, same seconds per chunk
        params["batch_size"] = SLICE_BATCH_SIZE


def make_jobs(document: Any) -> tuple[Job, ...]:
    """Validate a whole job document: `{"jobs": [...]}`."""
    if not isinstance(document, dict) or "jobs" not in document:
        raise ConfigError("job file: expected a mapping with a 'jobs' list")
    unknown = sorted(set(document) - {"jobs"}, key=str)
    if unknown:
        raise ConfigError(f"job file: unknown top-level key {shown(unknown[0])} (only 'jobs')")
    entries = document["jobs"]
    if not isinstance(entries, list):
        raise ConfigError("job file: 'jobs' must be a list")
    if not entries:
        raise ConfigError("job file: 'jobs' is empty: nothing to run")
    jobs = tuple(make_job(entry, i) for i, entry in enumerate(entries))
    seen: set[str] = set()
    for job in jobs:
        if job.name in seen:
            raise ConfigError(f"job {job.name!r}: name: duplicate job name")
        seen.add(job.name)
    return jobs


def load_job_file(path: Path) -> tuple[tuple[Job, ...], str]:
    """Read and validate a YAML or JSON job file; returns the jobs and its text."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"job file {str(path)!r}: cannot read it ({exc.__class__.__name__}: {exc})"
        ) from None
    return parse_job_text(text, str(path)), text


def parse_job_text(text: str, origin: str = "job file") -> tuple[Job, ...]:
    """Parse job-file text (JSON is YAML, but JSON errors read better as JSON)."""
    import yaml

    try:
        if text.lstrip().startswith("{"):
            document = json.loads(text, object_pairs_hook=_unique_keys)
        else:
            document = yaml.load(text, Loader=_strict_loader())  # noqa: S506 - a SafeLoader
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{origin}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise ConfigError(f"{origin}: not valid YAML ({where}{exc.problem or exc.context})") from None
    except ValueError:
        raise ConfigError(f"{origin}: a number in it has more than {MAX_DIGITS} digits") from None
    except RecursionError:
        raise ConfigError(f"{origin}: lists or mappings nested too deeply") from None
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    except yaml.YAMLError as exc:
        detail = str(exc).splitlines()[0]
        raise ConfigError(f"{origin}: not valid YAML ({detail})") from None
    return make_jobs(document)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    mapping: dict[str, Any] = {}
    for key, value in pairs:
        if key in mapping:
            raise json.JSONDecodeError(f"duplicate key {shown(key)}", "", 0)
        mapping[key] = value
    return mapping


def _strict_loader() -> type:
    """A SafeLoader that refuses a key given twice in one mapping (YAML would keep the last)."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def get_single_data(self) -> Any:
            # Aliases are counted out on the composed nodes, before any object is built from them
            node = self.get_single_node()
            if node is None:
                return None
            _check_expansion(node)
            return self.construct_document(node)

        def construct_mapping(self, node: Any, deep: bool = False) -> dict:
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                try:
                    repeated = key in seen
                except TypeError:
                    raise yaml.constructor.ConstructorError(
                        None, None, "a key that is a list or mapping", key_node.start_mark
                    ) from None
                if repeated:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {shown(key)}", key_node.start_mark
                    )
                seen.add(key)
            return super().construct_mapping(node, deep)

    return StrictLoader


def _check_expansion(root: Any) -> None:
    """Refuse a YAML document whose aliases expand to more than MAX_YAML_VALUES values, or to itself.

    Each distinct node is visited once (sizes are remembered), so the check
    costs time linear in the text however far its aliases would expand.
    """
    sizes: dict[int, int] = {}
    # Nodes whose children are being counted: meeting one again means an alias to an ancestor
    open_nodes: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, counted = stack.pop()
        children = _children(node)
        if counted:
            open_nodes.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
            if sizes[id(node)] > MAX_YAML_VALUES:
                line = node.start_mark.line + 1
                raise ConfigError(f"its aliases expand to more than {MAX_YAML_VALUES:,} values (line {line})")
        elif id(node) in open_nodes:
            line = node.start_mark.line + 1
            raise ConfigError(f"an alias refers to a list or mapping that contains it (line {line})")
        elif id(node) not in sizes:
            open_nodes.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)


def _children(node: Any) -> list[Any]:
    """The nodes a YAML node holds: a sequence's items, a mapping's keys and values."""
    import yaml

    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def slice_bits(start: int, count: int) -> int:
    """K for a job of `count` values from `start`: about MIN_VALUES_PER_RESIDUE values A per residue,
    at most MAX_SLICE_BITS, and small enough that 3^K A fits (0: contiguous ranges)."""
    if count < MIN_SLICE_COUNT:
        return 0
    ideal = min(MAX_SLICE_BITS, (count // MIN_VALUES_PER_RESIDUE).bit_length() - 1)
    # The nearest K that fits: smaller first (more values per residue), then larger ones
    for K in [*range(ideal, MIN_SLICE_BITS - 1, -1), *range(ideal + 1, MAX_SLICE_BITS + 1)]:
        if count >> K >= MIN_VALUES_PER_RESIDUE // 16 and not slice_bits_problem(start, count, K):
            return K
    return 0


def slice_bits_problem(start: int, count: int, K: int) -> str:
    """Why a job cannot be cut by residue mod 2^K ('' if it can; K = 0 is contiguous ranges)."""
    if K == 0:
        return ""
    if not MIN_SLICE_BITS <= K <= MAX_SLICE_BITS:
        return f"0 (contiguous ranges) or {MIN_SLICE_BITS}..{MAX_SLICE_BITS}"
    top = (start + count).bit_length()
    # 3^K A < 2^VALUE_BITS with A < 2^(top - K), and A in one word
    if (3**K << (top - K)).bit_length() > VALUE_BITS or top - K > 63:
        return f"3^K times n / 2^K must stay below 2^{VALUE_BITS} (use a smaller K or contiguous ranges: 0)"
    if count >> K > MAX_VALUES_PER_RESIDUE:
        return f"more than {MAX_VALUES_PER_RESIDUE:,} values per residue (use a larger K)"
    if start < 1 << K:
        return f"the job starts below 2^{K} (use a smaller K)"
    return ""
