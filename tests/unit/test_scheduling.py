"""The scheduling policy, without MPI: priorities, routing, chunk sizes, stealing, retries."""

from __future__ import annotations

import pytest

from hpcthreads.runtime.pacing import MIN_STEAL_SECONDS, steal_share
from hpcthreads.runtime.scheduling import JobQueue, Scheduler, WorkerState


def queue(index, size=1000, batch=100, priority="normal", gpu=False, **kw):
    return JobQueue(index, f"j{index}", size, batch, priority, gpu, **kw)


def drain(scheduler, worker):
    """Chunks handed to `worker` until nothing is left, finishing each at once."""
    got = []
    while (chunk := scheduler.next_chunk(worker)) is not None:
        scheduler.finished(worker, chunk.id, chunk.count, 0.0)
        got.append(chunk)
    return got


def test_priorities_high_first_then_file_order():
    jobs = [
        queue(0, priority="low"),
        queue(1),
        queue(2, priority="high"),
        queue(3),
        queue(4, priority="high"),
    ]
    worker = WorkerState(1)
    order = [c.job for c in drain(Scheduler(jobs, [worker]), worker)]
    firsts = list(dict.fromkeys(order))
    assert firsts == [2, 4, 1, 3, 0]


def test_every_item_is_handed_out_exactly_once():
    jobs = [queue(0, size=12345, batch=1000), queue(1, size=7, batch=3)]
    workers = [WorkerState(1), WorkerState(2)]
    scheduler = Scheduler(jobs, workers)
    covered = {0: [], 1: []}
    turn = 0
    while (chunk := scheduler.next_chunk(workers[turn % 2])) is not None:
        scheduler.finished(workers[turn % 2], chunk.id, chunk.count, 0.001)
        covered[chunk.job].append((chunk.offset, chunk.end))
        turn += 1
    for job, spans in covered.items():
        spans.sort()
        assert spans[0][0] == 0 and spans[-1][1] == jobs[job].size
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert scheduler.all_finished()


def test_gpu_preferred_work_goes_to_gpu_workers_first():
    jobs = [queue(0, gpu=True), queue(1)]
    gpu, cpu = WorkerState(1, is_gpu=True), WorkerState(2)
    scheduler = Scheduler(jobs, [gpu, cpu])
    assert scheduler.next_chunk(gpu).job == 0
    assert scheduler.next_chunk(cpu).job == 1


def test_cpu_workers_take_gpu_work_only_when_they_would_idle():
    jobs = [queue(0, gpu=True, size=300), queue(1, size=100)]
    gpu, cpu = WorkerState(1, is_gpu=True), WorkerState(2)
    scheduler = Scheduler(jobs, [gpu, cpu])
    taken = [c.job for c in drain(scheduler, cpu)]
    assert taken.index(0) > max(i for i, j in enumerate(taken) if j == 1)


def test_without_gpu_workers_gpu_preference_does_not_reorder():
    jobs = [queue(0, gpu=True, priority="high"), queue(1)]
    cpu = WorkerState(1)
    assert Scheduler(jobs, [cpu]).next_chunk(cpu).job == 0


def test_chunks_are_sized_to_measured_speed():
    jobs = [queue(0, size=10**9, batch=1000)]
    fast, slow = WorkerState(1), WorkerState(2)
    scheduler = Scheduler(jobs, [fast, slow], target=0.5)
    assert scheduler.next_chunk(fast).count == 1000  # unknown speed: one batch
    fast.speed[0], slow.speed[0] = 1e6, 1e4
    assert scheduler.chunk_size(jobs[0], fast) == 500_000
    assert scheduler.chunk_size(jobs[0], slow) == 5_000


def test_tail_chunks_shrink_but_stay_worth_sending():
    jobs = [queue(0, size=10_000, batch=10_000)]
    worker, other = WorkerState(1), WorkerState(2)
    scheduler = Scheduler(jobs, [worker, other], target=0.5)
    worker.speed[0] = 1e6
    # 10000 left over 2 workers: a quarter each at most, but >= MIN_STEAL_SECONDS of work
    assert scheduler.chunk_size(jobs[0], worker) == max(2500, int(1e6 * MIN_STEAL_SECONDS))
    worker.speed[0] = 1e3  # slow: half a second of work is less than the share
    assert scheduler.chunk_size(jobs[0], worker) == 500


def test_steal_targets_the_worker_with_most_work_left():
    jobs = [queue(0, size=100_000, batch=50_000)]
    a, b, idle = WorkerState(1), WorkerState(2), WorkerState(3)
    scheduler = Scheduler(jobs, [a, b, idle])
    chunk_a = scheduler.next_chunk(a)
    while scheduler.next_chunk(b) is not None:
        pass
    a.speed[0], b.speed[0] = 1e3, 1e6
    assert scheduler.next_chunk(idle) is None
    assert scheduler.steal_for(idle) is a
    assert scheduler.steal_for(idle) is None  # one steal at a time per thief
    total = chunk_a.count
    thief = scheduler.given_back(a, chunk_a.id, chunk_a.offset + 10_000, total - 10_000)
    assert thief == idle.rank and a.in_flight[chunk_a.id].count == 10_000
    stolen = scheduler.next_chunk(idle)
    assert (stolen.offset, stolen.count, stolen.stolen) == (10_000, total - 10_000, True)
    assert (a.stolen_from, idle.stolen_by) == (1, 1)


def test_a_victim_does_not_take_back_its_own_stolen_work():
    jobs = [queue(0, size=1000, batch=1000)]
    victim, thief = WorkerState(1), WorkerState(2)
    scheduler = Scheduler(jobs, [victim, thief])
    chunk = scheduler.next_chunk(victim)
    scheduler.steal_for(thief)
    scheduler.given_back(victim, chunk.id, 500, 500)
    assert scheduler.next_chunk(victim) is None
    assert scheduler.next_chunk(thief).offset == 500


def test_no_steal_when_it_is_not_worth_it():
    jobs = [queue(0, size=100, batch=100)]
    busy, idle = WorkerState(1), WorkerState(2)
    scheduler = Scheduler(jobs, [busy, idle])
    scheduler.next_chunk(busy)
    scheduler.set_speed(busy, 0, 1e9)  # 100 items left take a tenth of a microsecond
    assert scheduler.steal_for(idle) is None


def test_a_failed_chunk_is_retried_once_elsewhere_then_fails_the_job():
    jobs = [queue(0, size=100, batch=100), queue(1, size=100, batch=100)]
    a, b = WorkerState(1), WorkerState(2)
    scheduler = Scheduler(jobs, [a, b])
    chunk = scheduler.next_chunk(a)
    assert scheduler.failed(a, chunk.id, "boom")
    assert scheduler.next_chunk(a).job == 1  # the retry avoids rank 1
    retry = scheduler.next_chunk(b)
    assert (retry.job, retry.offset, retry.attempts) == (0, 0, 1)
    assert not scheduler.failed(b, retry.id, "boom again")
    assert jobs[0].failed == "boom again" and jobs[0].finished


# The O(log N) structures against brute force, on random event sequences


def brute_victim(scheduler, thief, now):
    """The definition: a full scan of every worker."""
    candidates = [
        w
        for w in scheduler.workers.values()
        if w is not thief and w.in_flight and not w.steal_pending and not w.refused
    ]
    if not candidates:
        return None
    victim = max(candidates, key=lambda w: (w.remaining_seconds(now), -w.rank))
    job = next(iter(victim.in_flight.values())).job
    share = steal_share(thief.speed.get(job) if thief is not None else None, victim.speed.get(job))
    mine = thief.remaining_seconds(now) if thief is not None else 0.0
    return None if victim.remaining_seconds(now) * share < mine + scheduler.steal_seconds else victim


def check_totals(scheduler, jobs):
    workers = scheduler.workers.values()
    assert scheduler.in_flight == sum(len(w.in_flight) for w in workers)
    assert scheduler.stolen == sum(w.stolen_from for w in workers)
    assert scheduler.stealing == {w.thief: w.rank for w in workers if w.steal_pending}
    for job in jobs:
        assert job.returned_items == sum(c.count for c in job.returned)
        if not job.failed:
            assert job.unassigned == job.size - job.cursor + sum(c.count for c in job.returned)


def random_event(rng, scheduler, workers, now):
    worker = rng.choice(workers)
    flying = [(w, c) for w in workers for c in w.in_flight.values()]
    kind = rng.choice(["send", "send", "finish", "credit", "give", "refuse", "steal", "speed", "fail"])
    if kind == "send":
        scheduler.next_chunk(worker, now)
    elif kind == "finish" and flying:
        w, chunk = rng.choice(flying)
        scheduler.finished(w, chunk.id, chunk.count, rng.choice([0.0, rng.uniform(0.001, 2.0)]), now)
    elif kind == "credit" and flying:
        w, chunk = rng.choice(flying)
        scheduler.credit(w, chunk.id, rng.randint(1, chunk.count), now)
    elif kind in ("give", "refuse"):
        pending = [w for w in workers if w.steal_pending]
        if pending:
            victim = rng.choice(pending)
            chunk = next(iter(victim.in_flight.values()), None)
            if kind == "give" and chunk is not None and chunk.count > 1:
                half = chunk.count // 2
                scheduler.given_back(victim, chunk.id, chunk.offset + chunk.count - half, half)
            else:
                scheduler.refused(victim)
    elif kind == "steal":
        expected = brute_victim(scheduler, worker, now) if worker.rank not in scheduler.stealing else None
        assert scheduler.steal_for(worker, now) is expected
    elif kind == "speed":
        job = rng.randrange(len(scheduler.jobs))
        scheduler.set_speed(worker, job, rng.choice([1.0, 1e3, 1e6, 1e9]), now)
    elif kind == "fail" and flying:
        w, chunk = rng.choice(flying)
        if not w.steal_pending:
            scheduler.failed(w, chunk.id, "boom", now)


def test_victim_heap_and_running_totals_match_brute_force_on_random_events():
    import random

    for seed in range(60):
        rng = random.Random(seed)
        jobs = [
            queue(i, size=rng.randint(1, 50_000), batch=rng.randint(1, 3000))
            for i in range(rng.randint(1, 3))
        ]
        workers = [WorkerState(r, is_gpu=rng.random() < 0.3) for r in range(1, rng.randint(2, 40))]
        scheduler = Scheduler(jobs, workers, rng.choice([0.5, 2.0]), rng.choice([None, 0.01]))
        now = 0.0
        for _ in range(400):
            # Time passes between events: estimates shrink, the heap's order must hold
            now += rng.choice([0.0, 1e-4, 0.01, 0.3])
            random_event(rng, scheduler, workers, now)
            check_totals(scheduler, jobs)
            thief = rng.choice(workers + [None])
            expected = brute_victim(scheduler, thief, now)
            assert scheduler.victim_for(thief, now) is expected, f"seed {seed}"


def test_a_refusing_victim_is_not_asked_again_until_its_next_event():
    jobs = [queue(0, size=1000, batch=500)]
    a, b, thief = WorkerState(1), WorkerState(2), WorkerState(3)
    scheduler = Scheduler(jobs, [a, b, thief])
    chunk_a = scheduler.next_chunk(a)
    scheduler.next_chunk(b)
    assert scheduler.steal_for(thief) is a
    assert scheduler.refused(a) == thief.rank
    assert scheduler.steal_for(thief) is b  # a said it had nothing: the next one is asked
    scheduler.refused(b)
    scheduler.finished(a, chunk_a.id, chunk_a.count, 0.1)
    scheduler.next_chunk(a) if jobs[0].unassigned else None
    assert not a.refused


def test_a_group_chunk_ends_when_its_parts_are_credited_or_given_back():
    jobs = [queue(0, size=10_000, batch=100)]
    group = WorkerState(1, capacity=8, group=True)
    other = WorkerState(2)
    scheduler = Scheduler(jobs, [group, other])
    chunk = scheduler.next_chunk(group)
    assert chunk.count == 800  # one batch per worker behind the sub-coordinator
    scheduler.credit(group, chunk.id, 300)
    assert group.in_flight[chunk.id].count == 500 and jobs[0].done == 300
    scheduler.steal_for(other)
    # A group gives back any part of its chunk, not only the tail
    scheduler.given_back(group, chunk.id, 100, 200)
    assert group.in_flight[chunk.id].count == 300
    scheduler.credit(group, chunk.id, 300)
    assert chunk.id not in group.in_flight and scheduler.in_flight == 0
    assert jobs[0].done == 600 and jobs[0].unassigned == 10_000 - 800 + 200


def test_a_worker_near_the_end_of_its_chunk_is_not_the_victim():
    jobs = [queue(0, size=10**9, batch=1000)]
    old, new, thief = WorkerState(1), WorkerState(2), WorkerState(3)
    scheduler = Scheduler(jobs, [old, new, thief])
    for worker in (old, new):
        first = scheduler.next_chunk(worker, 0.0)
        scheduler.finished(worker, first.id, first.count, 0.001, 0.0)  # 1e6 items/s
    chunk = scheduler.next_chunk(old, 1.0)  # 0.5 s of work from t = 1
    scheduler.next_chunk(new, 1.4)  # the same from t = 1.4
    assert chunk.count == 500_000
    assert abs(old.remaining_seconds(1.45) - 0.05) < 1e-9
    assert abs(new.remaining_seconds(1.45) - 0.45) < 1e-9
    assert scheduler.victim_for(thief, 1.45) is new


def test_a_steal_gives_each_side_work_in_proportion_to_its_speed():
    assert steal_share(None, 5.0) == 0.5 and steal_share(3.0, 3.0) == 0.5
    assert steal_share(30.0, 1.0) == pytest.approx(30 / 31)  # a GPU thief takes nearly all
    assert steal_share(1.0, 3.0) == 0.25


def test_a_slow_thief_steals_only_when_its_share_ends_sooner():
    jobs = [queue(0, size=10**9, batch=1000)]
    victim, slow = WorkerState(1), WorkerState(2)
    scheduler = Scheduler(jobs, [victim, slow])
    for worker, seconds in ((victim, 0.001), (slow, 0.1)):  # 1e6 and 1e4 items/s
        first = scheduler.next_chunk(worker, 0.0)
        scheduler.finished(worker, first.id, first.count, seconds, 0.0)
    scheduler.next_chunk(victim, 0.0)  # 0.5 s left: a 1% share is 5 ms of the victim's time
    assert scheduler.victim_for(slow, 0.0) is None
    fast = WorkerState(3)
    scheduler.workers[3] = fast
    fast.speed[0] = 1e6
    assert scheduler.victim_for(fast, 0.0) is victim


def test_chunk_time_heartbeats_and_batches_grow_with_the_number_of_children():
    from hpcthreads.runtime.pacing import batch_seconds, heartbeat_seconds, target_seconds

    assert target_seconds(64, False) == 0.5 and target_seconds(64, True) == 2.0
    # Two messages a chunk: 4,096 workers at 1.6 s chunks send 5,000 messages per second
    assert target_seconds(4096, False) == pytest.approx(2 * 4096 / 5000)
    assert heartbeat_seconds(63, 120.0) == 1.0 and heartbeat_seconds(65536, 120.0) == 30.0
    assert heartbeat_seconds(65536, 20.0) == 5.0, "at most a quarter of the timeout"
    assert batch_seconds(16) == 0.25 and batch_seconds(1024) == pytest.approx(1024 / 500)


def test_tail_chunks_never_shrink_below_a_tenth_of_a_long_target():
    jobs = [queue(0, size=10**6, batch=10**6)]
    workers = [WorkerState(r) for r in range(1, 101)]
    scheduler = Scheduler(jobs, workers, target=4.0)
    scheduler.set_speed(workers[0], 0, 1e5)
    # A share of what is left would be 5,000 items; the floor is 0.4 s of this worker's work
    assert scheduler.chunk_size(jobs[0], workers[0]) == 40_000
