"""``raysal labelstudio push|pull``: hand a waiting round's images to Label Studio, and bring its
annotations back (``raysal.run.labelstudio_sync``)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from raysal import storage
from raysal.cli.common import exit_codes, parser_for
from raysal.errors import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, RaysalError, Refused
from raysal.labelling.labelstudio import TOKEN_ENV
from raysal.run.labelstudio_sync import pull, push
from raysal.run.state import RunState

EPILOG = (f"token: ${TOKEN_ENV}, a personal access token (Label Studio: Account & Settings > Personal Access "
          "Token)\n\n" + exit_codes({EXIT_OK: "done", EXIT_FAILED: "Label Studio failed or did not answer",
                                      EXIT_CONFIG: "refused (nothing waits, already pushed, no --url)"}))


DESCRIPTION = "Hand a waiting round's images to Label Studio, and bring its annotations back."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["push", "pull"], help="push: create a project and import the waiting "
                        "round's tasks; pull: save the project's annotations in the round")
    parser.add_argument("--state", required=True, help="the run's state (a folder or URI)")
    parser.add_argument("--url", default=os.environ.get("LABEL_STUDIO_URL"),
                        help="Label Studio's address (default: $LABEL_STUDIO_URL; pull: the one pushed to)")
    parser.add_argument("--project", type=int, help="an existing project's id (push: import into it; pull: "
                        "default the project pushed to)")
    parser.set_defaults(run=run)


def main(argv: Sequence[str] | None = None, prog: str = "raysal labelstudio") -> int:
    return run(parser_for(sys.modules[__name__], prog).parse_args(argv), prog)


def run(args: argparse.Namespace, prog: str) -> int:
    state = RunState(storage.absolute(args.state))
    token = os.environ.get(TOKEN_ENV, "")  # not an option: a command line shows in ps and the shell's history
    try:
        storage.probe({"--state": state.root})
        if args.action == "push":
            if not args.url:
                raise Refused("--url (or $LABEL_STUDIO_URL) is needed to push")
            number, project, created = push(state, args.url, token, args.project)
            print(f"round {number}: {created} tasks in Label Studio project {project}: "
                  f"{args.url.rstrip('/')}/projects/{project}\n  once annotated: {prog} pull --state {args.state}")
            return EXIT_OK
        number, uri, rows = pull(state, args.url, token, args.project)
    except RaysalError as exc:  # refused (Refused, 2), or Label Studio failed (ServerError, 1)
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    labelled = len({i for i, label in rows if label is not None})
    unlabelled = len({i for i, _ in rows}) - labelled
    print(f"round {number}: annotations of {labelled} images saved to {uri} ({unlabelled} skipped or not "
          f"annotated)\n  finish the round: raysal round --config YOUR_CONFIG --state {args.state} "
          f"--import-labels {uri}")
    return EXIT_OK
