"""ray-schedule.jsonl (tasks/osworld/ray_schedule.py): the driver's record per stored task reads back
in order, a line torn by a kill is skipped, and the two latencies are what the bench reports."""

from __future__ import annotations

from pathlib import Path

from tasks.osworld import ray_schedule
from tasks.osworld.ray_schedule import SCHEDULE_FILE, ScheduleRecord


def record(task_id: str, sent: float) -> ScheduleRecord:
    return ScheduleRecord(
        task_id=task_id,
        domain="os",
        worker="127.0.0.1:abcdef12/sandbox-1",
        dispatched_at=sent,
        started_at=sent + 0.002,
        ended_at=sent + 4.0,
        received_at=sent + 4.003,
        stored_at=sent + 4.02,
        dispatch_s=0.001,
        store_s=0.015,
    )


def test_records_read_back_in_order_past_a_torn_line(tmp_path: Path) -> None:
    assert ray_schedule.read(tmp_path) == []  # a run that stored nothing yet
    ray_schedule.append(tmp_path, record("a", 100.0))
    with open(tmp_path / SCHEDULE_FILE, "a") as f:
        f.write('{"task_id": "torn", "dom')  # the driver killed mid-line
    ray_schedule.append(tmp_path, record("b", 200.0))  # the resumed run's, on a line of its own
    got = ray_schedule.read(tmp_path)
    assert got == [record("a", 100.0), record("b", 200.0)]
    assert round(got[0].to_actor_s, 6) == 0.002 and round(got[0].to_store_s, 6) == 0.02
