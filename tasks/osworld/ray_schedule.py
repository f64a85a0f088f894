"""When each task of a Ray run moved between the driver and its actor: one line per stored task in
``ray-schedule.jsonl`` under the run's root (docs/ray.md), written by the driver
(tasks/osworld/ray_driver.py) after it stored the task. It is what tells scheduling apart from
playing: the time a task waited to start on its actor after the driver sent it, the time its result
waited to be stored after the actor finished, and what the driver itself spent on it (one driver
serves every actor, so its per-task cost bounds a run's throughput; tests/bench/bench_ray.py).

Times are wall clocks (``time.time()``): ``dispatched_at``, ``received_at`` and ``stored_at`` the
driver's, ``started_at`` and ``ended_at`` the actor's node's; across machines the two differ by
their clocks' offset (NTP keeps it to milliseconds).

Standard library and pydantic only: the bench and the report read it without Ray.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel

SCHEDULE_FILE = "ray-schedule.jsonl"


class ScheduleRecord(BaseModel):
    task_id: str
    domain: str
    run_dir: str | None = None
    worker: str
    dispatched_at: float  # the driver sent it (just before the actor's run was called)
    started_at: float  # the actor's run began
    ended_at: float  # the actor's run returned its result
    received_at: float  # the driver saw the result ready
    stored_at: float  # the driver had written the task's files and recorded it
    dispatch_s: float  # the driver's time to pack and send it
    store_s: float  # the driver's time to fetch, write and record the result

    @property
    def to_actor_s(self) -> float:
        """From the driver sending the task to its actor starting it."""
        return self.started_at - self.dispatched_at

    @property
    def to_store_s(self) -> float:
        """From the actor finishing the task to the driver having stored it."""
        return self.stored_at - self.ended_at


def append(root: Path, record: ScheduleRecord) -> None:
    """One line more. A line torn by a killed driver is ended first, so a resumed run's records stay
    on lines of their own (``read`` skips the torn one)."""
    path = root / SCHEDULE_FILE
    with open(path, "ab+") as f:  # appends, wherever it last read
        torn = False
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
        f.write((b"\n" if torn else b"") + record.model_dump_json().encode() + b"\n")


def read(root: Path) -> list[ScheduleRecord]:
    """The run's records, in the order stored (a resumed run's after the first's)."""
    path = root / SCHEDULE_FILE
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(ScheduleRecord.model_validate_json(line))
        except ValueError:
            continue  # torn by a kill mid-write
    return out
