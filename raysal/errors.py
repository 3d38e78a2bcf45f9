"""Every error raysal raises on purpose, and the exit codes of its commands, in one table.

Each class carries ``exit_code``: the code a command exits with when this error refuses it
before it changed anything. Once a round has started (its lease taken), any error but a lost
lease exits 1 and running the round again resumes it. The CLI's ``--help``, its exit paths and
the docs' exit-code page read ``EXIT_CODES`` and these classes; nothing else spells a code.

The classes keep the built-in base they always had (``ValueError`` for input that must not be
used, ``RuntimeError`` for something missing or failing), so ``except ValueError`` still works.
Pure stdlib.
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_MISSING, EXIT_LOCKED, EXIT_WAITING, EXIT_LEASE_LOST = 0, 1, 2, 3, 4, 5, 6
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C; SIGTERM exits 143


@dataclass(frozen=True)
class ExitCode:
    """What one exit code means, and what the command left behind."""

    code: int
    name: str
    meaning: str
    left: str  # what is written, or "nothing"


EXIT_CODES: tuple[ExitCode, ...] = (
    ExitCode(EXIT_OK, "done", "the command did what it was asked (a round: the round is done)", "its outputs"),
    ExitCode(EXIT_FAILED, "failed",
             "the command failed; the message has the reason, the log the traceback", "committed stages stay; "
             "running the round again resumes it at its first stage not yet committed"),
    ExitCode(EXIT_CONFIG, "refused",
             "bad arguments, config, label file, model or pool: an unknown --set key, a malformed label file, "
             "--import-labels for a round with no selection waiting, a config that changes the run's pool, "
             "classes or model, a manifest that repeats an image_id, a local path that other nodes of the "
             "cluster do not see, a seed set of one class, a Keras model that does not fit the classes or the "
             "input size, CPUs or GPUs that no node of the cluster (nor any node type its autoscaler can add) "
             "has, a manifest whose content is not usable (missing or repeated ids, labels that are not classes), a "
             "Keras model with a Lambda or custom layer (unless model.trust_code), a published model whose files "
             "changed since (sha256 in model.json), a URI scheme no filesystem reads", "nothing"),
    ExitCode(EXIT_MISSING, "missing",
             "data or model missing, the message says how to provide it; or the cluster did not free (or its "
             "autoscaler add) the CPUs and GPUs a stage asks for within score/train.resource_timeout_s; or a "
             "state store that ignores conditional writes (no safe lease there); or a storage location that did not "
             "answer within RAYSAL_STORAGE_TIMEOUT_S (30 s)",
             "nothing; after a resource timeout, the committed stages: running the round again resumes it"),
    ExitCode(EXIT_LOCKED, "locked", "another round holds the run's lease", "nothing"),
    ExitCode(EXIT_WAITING, "waiting",
             "the round is waiting for human labels: run it again with --import-labels FILE once they are done",
             "the selection and to_label.csv, and Label Studio tasks where it can show every image"),
    ExitCode(EXIT_LEASE_LOST, "lease lost",
             "the round lost its lease (paused past its TTL, or --break-lock from elsewhere) and stopped, mid-stage "
             "if need be; its commit is refused and what it wrote is never read",
             "committed stages stay; running it again resumes it"),
    ExitCode(EXIT_INTERRUPTED, "interrupted",
             "Ctrl-C stopped the round (SIGTERM, as from ray job stop: 143) within seconds, waits included; its "
             "lease is released", "committed stages stay; running it again resumes it"),
)


def exit_code_epilog() -> str:
    """The ``exit codes:`` block of a command's ``--help``."""
    return "exit codes:\n" + "\n".join(f"  {e.code}  {e.name}: {e.meaning}" for e in EXIT_CODES)


class RaysalError(Exception):
    """The base of every error raysal raises on purpose; the message says what to do."""

    exit_code = EXIT_FAILED


# --- bad input: exit 2, nothing changed ---------------------------------------------------------


class ConfigError(RaysalError, ValueError):
    """A configuration that must not run; the message names the field (``select.budget``)."""

    exit_code = EXIT_CONFIG


class Refused(RaysalError, ValueError):
    """An input the round must not run on (repeated ids, a path other nodes cannot see)."""

    exit_code = EXIT_CONFIG


class BadInput(RaysalError, ValueError):
    """Input that must not become a run (``raysal prepare``, ``raysal pack``); the message names
    the file or option and gives examples."""

    exit_code = EXIT_CONFIG


class LabelFileError(RaysalError, ValueError):
    """A label file that must not be applied; the message lists what is wrong."""

    exit_code = EXIT_CONFIG


class AnnotationError(RaysalError, ValueError):
    """An export that cannot be read as Label Studio annotations; the message says why."""

    exit_code = EXIT_CONFIG


class ModelRefused(RaysalError, ValueError):
    """A model that loads but does not fit the config (not a Keras model, wrong input or class
    count, outputs of unknown kind); the message names the field to change."""

    exit_code = EXIT_CONFIG


class UndecodableImage(RaysalError, ValueError):
    """An image that cannot be used; ``str(exc)`` is the reason. Scoring skips and reports it:
    it never stops a command."""

    exit_code = EXIT_CONFIG


# --- missing: exit 3, nothing changed -----------------------------------------------------------


class Unavailable(RaysalError, RuntimeError):
    """An input of the round is missing; the message names the config field."""

    exit_code = EXIT_MISSING


class SourceError(RaysalError, RuntimeError):
    """A source that cannot be read as configured; the message says what is missing."""

    exit_code = EXIT_MISSING


class BadSource(SourceError):
    """A source whose content must not be used (a manifest's duplicate ids, labels that are not
    classes, columns of the wrong kind); the message names the field and the problem."""

    exit_code = EXIT_CONFIG


class MissingInput(RaysalError, RuntimeError):
    """An input of ``raysal prepare`` or ``raysal pack`` that does not exist or cannot be read;
    the message names it."""

    exit_code = EXIT_MISSING


class ModelUnavailable(RaysalError, RuntimeError):
    """A model that cannot be built offline; the message says how to provide it."""

    exit_code = EXIT_MISSING


class ResourceTimeout(RaysalError, RuntimeError):
    """The cluster did not free (or its autoscaler add) what a stage asks for within the stage's
    ``resource_timeout_s``; the message says what was awaited and what the cluster had free."""

    exit_code = EXIT_MISSING


class UnsafeStorage(RaysalError, RuntimeError):
    """A state store on which the run's lease cannot be safe: it ignores conditional writes
    (``If-None-Match``); the message names the endpoint."""

    exit_code = EXIT_MISSING


# --- the run's state and its lease -------------------------------------------------------------


class StateError(RaysalError, RuntimeError):
    """A state that refuses the requested transition; the message says why. Raised inside a
    round, it fails the round (exit 1), and running it again resumes it."""

    exit_code = EXIT_FAILED


class Incompatible(StateError):
    """A config that would change what a run cannot change (its classes, pool or model)."""

    exit_code = EXIT_CONFIG


class NothingToLabel(StateError):
    """Labels were given for a round that is not waiting for any."""

    exit_code = EXIT_CONFIG


class LeaseError(RaysalError, RuntimeError):
    """The lease cannot be taken or is no longer held; the message says why."""

    exit_code = EXIT_FAILED


class Locked(LeaseError):
    """Another round holds a live lease on the state."""

    exit_code = EXIT_LOCKED


class LeaseLost(LeaseError):
    """This round's lease was taken over or went unrenewed: it must not commit anything more."""

    exit_code = EXIT_LEASE_LOST


# --- services ----------------------------------------------------------------------------------


class ServerError(RaysalError, RuntimeError):
    """Label Studio answered with an error, or not at all; the message has what it said."""

    exit_code = EXIT_FAILED


def all_errors() -> list[type[RaysalError]]:
    """Every error class of this module, the base first (for the docs and their test)."""
    found, todo = [], [RaysalError]
    while todo:
        cls = todo.pop(0)
        found.append(cls)
        todo.extend(sorted(cls.__subclasses__(), key=lambda c: c.__name__))
    return [c for c in found if c.__module__ == __name__]
