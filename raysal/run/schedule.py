"""Scheduled rounds: one Ray job per round, whatever fires the schedule and however often.

The submission id is derived from the run and its next round number (read from the state), so
two firings of a schedule ask for the same job and Ray runs it once. A job of that id that
failed or was stopped is retried under ``<id>-retry-N``: the round resumes from its state.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Sequence

ACTIVE = ("PENDING", "RUNNING")
FINISHED_OK = ("SUCCEEDED",)


def submission_id(run: str, round_number: int, retry: int = 0) -> str:
    """``raysal-<run>-round-0003`` (``-retry-N`` after failures): stable for a given run and round."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", run).strip("-") or "run"
    return f"raysal-{slug}-round-{round_number:04d}" + (f"-retry-{retry}" if retry else "")


@dataclass(frozen=True)
class Decision:
    submit: bool
    submission_id: str
    reason: str


def decide(run: str, round_number: int, statuses: dict[str, str]) -> Decision:
    """Whether to submit round ``round_number``, given the status of each job id Ray knows.

    Args:
        statuses: job status by submission id, for the ids of this round (missing = never submitted).
    """
    ended: list[str] = []  # how the earlier tries of this round ended
    while True:
        job_id = submission_id(run, round_number, retry=len(ended))
        status = statuses.get(job_id)
        if status is None:
            reason = f"earlier tries ended {', '.join(ended)}" if ended else "not submitted yet"
            return Decision(True, job_id, reason)
        if status in ACTIVE:
            return Decision(False, job_id, f"job {job_id} is {status.lower()}")
        if status in FINISHED_OK:
            return Decision(False, job_id, f"job {job_id} already succeeded")
        ended.append(status.lower())


def entrypoint(round_args: Sequence[str]) -> str:
    return shlex.join(["python", "jobs/round.py", *round_args])
