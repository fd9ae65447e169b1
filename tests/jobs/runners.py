"""Runners for engine tests, imported by spawned worker processes; behaviour chosen by job.model."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping
from typing import Any

from node.types import Job


def run(job: Job, context: Mapping[str, Any]) -> Mapping[str, Any]:
    if job.model == "ok":
        marker = context.get("marker_dir")
        if marker:
            with open(os.path.join(marker, job.job_id), "a") as fh:
                fh.write("ran\n")
        return {"model": job.model, "pid": os.getpid()}
    if job.model == "raise":
        raise ValueError("model exploded on purpose")
    if job.model == "bad-input":
        from node.errors import InputError

        raise InputError("input: cannot decode pixel data of SOP instance 1.2.3.4")
    if job.model == "hang":
        time.sleep(3600)
    if job.model == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    if job.model == "exit":
        os._exit(3)
    if job.model == "hog":
        blob = bytearray(400 * 2**20)
        for i in range(0, len(blob), 4096):
            blob[i] = 1
        time.sleep(3600)
    if job.model == "slow":
        time.sleep(float(job.parameters.get("seconds", 1)))
        return {"slept": True}
    raise AssertionError(f"unknown test model {job.model}")


def prepare(context: Mapping[str, Any]) -> None:
    """Worker warm-up for engine tests: sleeps ``prepare_seconds``, or fails on request."""
    if context.get("prepare_fails"):
        raise RuntimeError("cannot load the models")
    time.sleep(float(context.get("prepare_seconds", 0)))
