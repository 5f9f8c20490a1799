"""The ScheduleStore and WorkerRegistry contracts, run unchanged against every backend."""

from __future__ import annotations

import threading

from conveyor.backends.base import JobRecord, ScheduleRecord, WorkerInfo
from conveyor.ids import new_job_id

NOW = 1_800_000_000.0


def job_for(schedule_id: str) -> JobRecord:
    return JobRecord(id=new_job_id(), task="tick", created_at=NOW, run_at=NOW,
                     headers={"schedule": schedule_id})


def test_put_and_get_schedules(backend):
    backend.put_schedule(ScheduleRecord(id="b", spec='{"every": 5}'))
    backend.put_schedule(ScheduleRecord(id="a", spec='{"every": 60}', paused=True))
    got = backend.get_schedules()
    assert [(s.id, s.spec, s.paused) for s in got] == [("a", '{"every": 60}', True),
                                                      ("b", '{"every": 5}', False)]


def test_put_schedule_replaces_the_spec_but_keeps_the_last_fire(backend):
    backend.put_schedule(ScheduleRecord(id="s", spec='{"every": 5}'))
    assert backend.claim_fire("s", NOW, NOW + 5, '{"n": 1}', [job_for("s")])
    backend.put_schedule(ScheduleRecord(id="s", spec='{"every": 10}'))
    [got] = backend.get_schedules()
    assert got.spec == '{"every": 10}' and got.last_fire == NOW


def test_a_fire_time_is_claimed_once(backend):
    backend.put_schedule(ScheduleRecord(id="s", spec="{}"))
    assert backend.claim_fire("s", NOW, NOW + 1, "{}", [job_for("s")]) is True
    assert backend.claim_fire("s", NOW, NOW + 1, "{}", [job_for("s")]) is False
    assert backend.claim_fire("s", NOW - 1, NOW, "{}", [job_for("s")]) is False
    assert backend.claim_fire("s", NOW + 1, NOW + 2, '{"n": 2}', [job_for("s")]) is True
    [got] = backend.get_schedules()
    assert (got.last_fire, got.next_fire, got.state) == (NOW + 1, NOW + 2, '{"n": 2}')
    assert sum(backend.stats()["default"].values()) == 2


def test_racing_claims_of_one_fire_time_enqueue_one_job(backend):
    backend.put_schedule(ScheduleRecord(id="s", spec="{}"))
    wins: list[bool] = []
    barrier = threading.Barrier(8)

    def claimer() -> None:
        barrier.wait()
        wins.append(backend.claim_fire("s", NOW, NOW + 1, "{}", [job_for("s")]))

    threads = [threading.Thread(target=claimer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wins.count(True) == 1
    assert sum(backend.stats()["default"].values()) == 1


def test_claim_fire_of_a_missing_schedule_fails(backend):
    assert backend.claim_fire("nope", NOW, None, "{}", [job_for("nope")]) is False
    assert backend.stats() == {} or sum(backend.stats().get("default", {}).values()) == 0


def test_pause_resume_update_and_delete(backend):
    backend.put_schedule(ScheduleRecord(id="s", spec="{}"))
    assert backend.set_schedule_paused("s", True) is True
    assert backend.get_schedules()[0].paused is True
    assert backend.set_schedule_paused("missing", True) is False
    backend.update_schedule_state("s", NOW + 9, '{"last_outcome": "skipped"}')
    [got] = backend.get_schedules()
    assert (got.next_fire, got.state) == (NOW + 9, '{"last_outcome": "skipped"}')
    assert got.last_fire is None
    assert backend.delete_schedule("s") is True
    assert backend.delete_schedule("s") is False
    assert backend.get_schedules() == []


def test_workers_register_heartbeat_and_expire(backend):
    info = WorkerInfo(id="w1", host="h", pid=1, queues=["default"], concurrency=4,
                      current_jobs=["j1"], started_at=NOW, last_heartbeat=NOW)
    backend.heartbeat_worker(info, ttl=30)
    backend.heartbeat_worker(WorkerInfo(id="s1", host="h", pid=2, kind="scheduler",
                                        last_heartbeat=NOW), ttl=30)
    got = backend.list_workers(NOW + 1)
    assert [w.id for w in got] == ["s1", "w1"]
    assert got[1].current_jobs == ["j1"] and got[1].queues == ["default"]
    assert backend.list_workers(NOW + 31) == []
    backend.remove_worker("w1")
    assert [w.id for w in backend.list_workers(NOW + 1)] == ["s1"]
