"""Submit the next round of a run to a Ray cluster, once, however often the schedule fires.

    python jobs/submit.py --address http://HEAD:8265 --run flowers -- --config flowers --state s3://b/runs/flowers

For cron, CI or a Kubernetes CronJob. It reads the run's state to find the next round, derives
the job's submission id from the run and that round (``raysal-flowers-round-0004``), asks the
cluster whether that job ran or runs, and submits only if not. Everything after ``--`` goes to
jobs/round.py; ``--state`` must be among it.

Exit codes: 0 submitted, or nothing to do; 1 the job (with --wait) failed; 2 bad arguments;
5 the run's current round is waiting for human labels (nothing is submitted until they are
imported with ``jobs/round.py --import-labels``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Sequence

from raysal.errors import EXIT_FAILED, EXIT_OK, EXIT_WAITING


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(prog="jobs/submit.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS", "http://127.0.0.1:8265"),
                        help="the cluster's job API (default: $RAY_ADDRESS or http://127.0.0.1:8265)")
    parser.add_argument("--run", required=True, help="the run's name, part of every job id")
    parser.add_argument("--working-dir", default=".", help="the raysal checkout to ship with the job")
    parser.add_argument("--wait", action="store_true", help="wait for the job and exit with its outcome")
    args = parser.parse_args(argv[:split])
    round_args = argv[split + 1:]
    if "--state" not in round_args:
        parser.error("pass the round's arguments after --, including --state")
    state_root = round_args[round_args.index("--state") + 1]

    from ray.job_submission import JobSubmissionClient

    from raysal.run import rounds, schedule
    from raysal.run.state import RunState

    state = RunState(state_root)
    number = rounds.current_round(state)
    if rounds.round_state(state, number) == rounds.WAITING:
        print(f"round {number} of {args.run}: waiting for labels, nothing submitted: label "
              f"{state.uri(state.files(number).to_label)} and import them with "
              "jobs/round.py --import-labels FILE")
        return EXIT_WAITING
    client = JobSubmissionClient(args.address)
    known = {job.submission_id: job.status.value for job in client.list_jobs() if job.submission_id}
    decision = schedule.decide(args.run, number, known)
    if not decision.submit:
        print(f"round {number} of {args.run}: nothing to submit ({decision.reason})")
        return EXIT_OK
    client.submit_job(entrypoint=schedule.entrypoint(round_args), submission_id=decision.submission_id,
                      runtime_env={"working_dir": args.working_dir})
    print(f"round {number} of {args.run}: submitted {decision.submission_id} ({decision.reason})")
    if not args.wait:
        return EXIT_OK
    while (status := client.get_job_status(decision.submission_id).value) not in ("SUCCEEDED", "FAILED", "STOPPED"):
        time.sleep(2)
    if status != "SUCCEEDED" and rounds.round_state(state, number) == rounds.WAITING:
        print(f"{decision.submission_id}: round {number} is waiting for labels")
        return EXIT_WAITING
    print(f"{decision.submission_id}: {status}")
    return EXIT_OK if status == "SUCCEEDED" else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
