"""What the Ray side of a run (driver, sandbox actors, model actors) says of errors: which of Ray's
errors mean an actor is gone, and an error as one line."""

from __future__ import annotations

import ray.exceptions as rex

# What says an actor is gone (its process, or its node): its work goes elsewhere.
LOST = (
    rex.RayActorError,
    rex.WorkerCrashedError,
    rex.NodeDiedError,
    rex.ObjectLostError,
    rex.ActorUnschedulableError,
    rex.OutOfMemoryError,
)


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
