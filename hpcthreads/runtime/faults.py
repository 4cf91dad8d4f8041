"""Fault injection for tests: off unless HPCTHREADS_TEST_FAULTS is set.

The variable holds `;`-separated rules, each `action:key=value,...`:

- `slow:rank=2,factor=4`: rank 2 computes 4 times slower (it sleeps 3x each sub-batch);
  `rate=1e6` instead caps its pace at 1e6 items/s, whatever the machine;
- `raise:rank=1,job=NAME,times=1`: rank 1 raises on its first chunk of job NAME
  (`rank` and `job` may be left out to match any; `times` defaults to unlimited);
- `kill:rank=2,after=1`: rank 2 kills itself with SIGKILL at the start of its
  second chunk (after 1 chunk);
- `sleep:rank=1,seconds=2`: rank 1 sleeps 2 s at the start of its first chunk
  (a chunk that takes long, leaving the other workers idle);
- `startup:rank=1,seconds=5`: rank 1 takes 5 s longer to start (a cold compile
  cache) before it says hello to the coordinator;
- `fsize:bytes=N`: once MPI is up, files may not grow past N bytes (RLIMIT_FSIZE):
  a full disk, as far as the run can tell.
- `fill:at=PHASE,after=N`: rank 0 fills the disk of the output's folder (with
  the file FILL_NAME there, which the test removes) when the run reaches PHASE:
  `layout` (the partial file is about to be laid out), `ledger` (the first
  checkpoint), `chunk` (the start of a chunk after N chunks), `finish` (every
  chunk is done), `results` (the reserve is freed and the results are about to
  be written), `rename` (the file is complete).
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field

ENV = "HPCTHREADS_TEST_FAULTS"

# Every action and the arguments it takes, with their types (`fsize` needs its `bytes`)
ACTIONS: dict[str, dict[str, type]] = {
    "slow": {"rank": int, "factor": float, "rate": float},
    "raise": {"rank": int, "job": str, "times": int},
    "kill": {"rank": int, "after": int},
    "sleep": {"rank": int, "seconds": float},
    "startup": {"rank": int, "seconds": float},
    "fsize": {"bytes": int},
    "fill": {"at": str, "after": int},
}
PHASES = ("layout", "ledger", "chunk", "finish", "results", "rename")
# The file a `fill` rule grows until the disk is full
FILL_NAME = "hpcthreads-test-fill"


class InjectedFault(RuntimeError):
    """Raised by a `raise` rule."""


@dataclass
class Rule:
    action: str
    args: dict[str, str] = field(default_factory=dict)
    fired: int = 0

    def matches(self, rank: int, job: str | None = None) -> bool:
        if "rank" in self.args and int(self.args["rank"]) != rank:
            return False
        return job is None or self.args.get("job", job) == job


@dataclass
class Faults:
    rules: list[Rule] = field(default_factory=list)
    chunks: int = 0
    # The output's folder, for `fill` rules (set by rank 0)
    folder: str | None = None

    def reach(self, phase: str) -> None:
        """Fill the disk if a `fill` rule is for PHASE (rank 0 only: `folder` is set there)."""
        for rule in self.rules:
            if rule.action != "fill" or rule.args.get("at") != phase or rule.fired or self.folder is None:
                continue
            if phase == "chunk" and self.chunks <= int(rule.args.get("after", 0)):
                continue
            rule.fired = 1
            _fill(os.path.join(self.folder, FILL_NAME))

    @classmethod
    def from_env(cls) -> Faults:
        """The rules of HPCTHREADS_TEST_FAULTS; ConfigError (one line) for one that cannot be read.

        A rule with a misspelt action or argument would otherwise do nothing,
        or something else, and a test relying on it would pass for nothing.
        """
        return cls([_rule(text) for text in filter(None, os.environ.get(ENV, "").split(";"))])

    def before_chunk(self, rank: int, job: str) -> None:
        self.chunks += 1
        self.reach("chunk")
        for rule in self.rules:
            if rule.action == "kill" and rule.matches(rank) and self.chunks > int(rule.args.get("after", 0)):
                os.kill(os.getpid(), signal.SIGKILL)
            if rule.action == "sleep" and rule.matches(rank) and not rule.fired:
                rule.fired = 1
                time.sleep(float(rule.args.get("seconds", 1)))
            if rule.action == "raise" and rule.matches(rank, job):
                if rule.fired < int(rule.args.get("times", 1 << 30)):
                    rule.fired += 1
                    raise InjectedFault(f"injected failure on rank {rank}, job {job}")

    def before_hello(self, rank: int) -> None:
        for rule in self.rules:
            if rule.action == "startup" and rule.matches(rank):
                time.sleep(float(rule.args.get("seconds", 1)))

    def limit_files(self) -> None:
        import resource

        for rule in self.rules:
            if rule.action == "fsize":
                limit = int(rule.args["bytes"])
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    def slow_down(self, rank: int, seconds: float, items: int) -> None:
        for rule in self.rules:
            if rule.action == "slow" and rule.matches(rank):
                if "rate" in rule.args:
                    time.sleep(max(0.0, items / float(rule.args["rate"]) - seconds))
                else:
                    time.sleep((float(rule.args.get("factor", 2)) - 1) * seconds)


def _fill(path: str) -> None:
    """Write zeros to PATH until the disk is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for size in (1 << 16, 4096, 512, 1):
            block = bytes(size)
            try:
                while os.write(fd, block):
                    pass
            except OSError:
                pass  # full for blocks of this size; smaller ones may still fit
    finally:
        os.close(fd)


def _rule(text: str) -> Rule:
    from hpcthreads.errors import ConfigError, shown

    def refuse(problem: str) -> ConfigError:
        return ConfigError(
            f"{ENV}: rule {shown(text)}: {problem} (rules are ACTION:KEY=VALUE,... separated by ';'; "
            f"actions: {', '.join(ACTIONS)})"
        )

    action, _, rest = text.partition(":")
    action = action.strip()
    if action not in ACTIONS:
        raise refuse(f"unknown action {shown(action)}")
    args = {}
    for item in filter(None, rest.split(",")):
        key, equals, value = item.partition("=")
        key = key.strip()
        if not equals:
            raise refuse(f"{shown(item)} is not KEY=VALUE")
        if key not in ACTIONS[action]:
            raise refuse(f"{action} takes {', '.join(ACTIONS[action])}, not {shown(key)}")
        try:
            number = ACTIONS[action][key](value)
        except ValueError:
            kind = {int: "an integer", float: "a number"}.get(ACTIONS[action][key], "text")
            raise refuse(f"{key}={shown(value)} is not {kind}") from None
        if isinstance(number, (int, float)) and not 0 <= number < float("inf"):
            raise refuse(f"{key}={shown(value)} must be a finite number of at least 0")
        args[key] = value
    if action == "fsize" and "bytes" not in args:
        raise refuse("fsize needs bytes=N")
    if action == "fill" and args.get("at") not in PHASES:
        raise refuse(f"fill needs at=PHASE, one of {', '.join(PHASES)}")
    return Rule(action, args)
