"""The scheduling policy, without MPI: priorities, routing, chunk sizes, stealing, retries."""

from __future__ import annotations

from hpcthreads.runtime.scheduling import MIN_STEAL_SECONDS, JobQueue, Scheduler, WorkerState


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
    busy.speed[0] = 1e9  # 100 items left take a tenth of a microsecond
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
