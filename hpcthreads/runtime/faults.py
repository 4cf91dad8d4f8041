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
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field

ENV = "HPCTHREADS_TEST_FAULTS"


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

    @classmethod
    def from_env(cls) -> Faults:
        rules = []
        for text in filter(None, os.environ.get(ENV, "").split(";")):
            action, _, rest = text.partition(":")
            args = dict(item.split("=", 1) for item in filter(None, rest.split(",")))
            rules.append(Rule(action.strip(), args))
        return cls(rules)

    def before_chunk(self, rank: int, job: str) -> None:
        self.chunks += 1
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
