"""What every subcommand's help shares: defaults shown, the description's layout kept, and the
exit codes read from ``raysal.errors``."""

from __future__ import annotations

import argparse
import sys
import textwrap
from typing import Any, Callable, Mapping

from raysal.errors import EXIT_CODES


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Options with their defaults; descriptions and epilogs as written. A help that names its
    default already, a flag (off by default) and an option without one get no "(default: ...)"."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_text = action.help or ""
        unset = action.default is None or action.default is False or action.default in ("", argparse.SUPPRESS)
        if "default" in help_text or unset or action.nargs == 0:
            return help_text
        return super()._get_help_string(action)


def exit_codes(meanings: Mapping[int, str] | None = None) -> str:
    """The ``exit codes:`` block of a command's help: the codes it can exit with, in the command's
    words where given, else as ``raysal.errors.EXIT_CODES`` says them; None: every code."""
    known = {e.code: e.meaning for e in EXIT_CODES}
    said = dict(meanings) if meanings is not None else known
    return "exit codes:\n" + "\n".join(
        textwrap.fill(said[code], width=100, initial_indent=f"  {code}  ", subsequent_indent="     ")
        for code in sorted(said))


def refusal_code(exc: BaseException) -> int | None:
    """The exit code of an error that refuses a command before it changed anything (its class's
    ``exit_code``, ``raysal.errors``); None for an error that is no refusal (a failure, a bug)."""
    from raysal.errors import EXIT_FAILED, RaysalError

    return exc.exit_code if isinstance(exc, RaysalError) and exc.exit_code != EXIT_FAILED else None


def refused(check: Callable[[], None]) -> int | None:
    """Run ``check`` (what refuses a command before it changes anything): None when it passes; a
    refusal prints its message and gives its exit code; anything else is a bug and is raised."""
    try:
        check()
    except Exception as exc:  # noqa: BLE001  (a refusal gets its exit code; anything else: raised below)
        code = refusal_code(exc)
        if code is None:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return code
    return None


def state_root(args: argparse.Namespace) -> str | int:
    """The run's state as an absolute path or URI: ``--state``, else ``.raysal/<name>`` of
    ``--config``'s run; a bad config prints why and gives its exit code instead."""
    from raysal import storage
    from raysal.config import ConfigError, load_config

    if args.state is None:
        try:
            args.state = f".raysal/{load_config(args.config).name}"
        except ConfigError as exc:
            print(f"error: bad config: {exc}", file=sys.stderr)
            return exc.exit_code
    return storage.absolute(args.state)


def failure_line(exc: BaseException) -> str:
    """The line that says why: a Ray task's own exception, the last line of a long message."""
    cause = getattr(exc, "cause", None)  # a RayTaskError carries the task's exception
    text = str(cause if isinstance(cause, BaseException) else exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1][:400] if lines else ''}"


def parser_for(command: Any, prog: str) -> argparse.ArgumentParser:
    """A subcommand's parser on its own (``python jobs/round.py``): its description, epilog and
    arguments, as under ``raysal``."""
    parser = argparse.ArgumentParser(prog=prog, description=command.DESCRIPTION, epilog=command.EPILOG,
                                     formatter_class=HelpFormatter)
    command.add_arguments(parser)
    return parser
