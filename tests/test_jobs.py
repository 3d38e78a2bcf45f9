"""Scheduled rounds: which job a firing submits. The firings themselves run against a real cluster
in test_multinode.py."""

from __future__ import annotations

import pytest

from raysal.run import schedule


@pytest.mark.parametrize(("statuses", "submit", "job_id"), [
    ({}, True, "raysal-demo-round-0003"),
    ({"raysal-demo-round-0003": "RUNNING"}, False, "raysal-demo-round-0003"),
    ({"raysal-demo-round-0003": "PENDING"}, False, "raysal-demo-round-0003"),
    ({"raysal-demo-round-0003": "SUCCEEDED"}, False, "raysal-demo-round-0003"),
    ({"raysal-demo-round-0003": "FAILED"}, True, "raysal-demo-round-0003-retry-1"),
    ({"raysal-demo-round-0003": "FAILED", "raysal-demo-round-0003-retry-1": "STOPPED"}, True,
     "raysal-demo-round-0003-retry-2"),
    ({"raysal-demo-round-0003": "FAILED", "raysal-demo-round-0003-retry-1": "RUNNING"}, False,
     "raysal-demo-round-0003-retry-1"),
])
def test_schedule_decision(statuses, submit, job_id):
    decision = schedule.decide("demo", 3, statuses)
    assert (decision.submit, decision.submission_id) == (submit, job_id)


def test_submission_ids_are_stable_and_safe():
    assert schedule.submission_id("my run/2026", 12) == "raysal-my-run-2026-round-0012"
    assert schedule.submission_id("demo", 1) == schedule.submission_id("demo", 1)
