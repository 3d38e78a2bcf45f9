"""One active-learning round as a sequence of committed stages: score, select, label, train, evaluate.

``run_round`` takes the state's lease, bootstraps the round-0 model if there is none, then runs
the current round from its first stage not yet committed: a round interrupted by a crash is
resumed, not restarted, and ends in the state an uninterrupted round would have reached. It
assumes Ray is initialised (``raysal.run.cluster.init_ray``). The stages are
``raysal.run.stages``; what a round reports, ``raysal.run.status``.
"""

from __future__ import annotations

import _thread
import importlib
import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import ray

from raysal import faults
from raysal.config import Config, config_from_dict
from raysal.errors import Incompatible, LeaseError
from raysal.labelling import labels as labels_lib
from raysal.labelling import labelstudio
from raysal.report import progress
from raysal.report.metrics import ROUND_FIGURES
from raysal.run import coldstart, report, tracking
from raysal.run import lease as lease_lib
from raysal.run.context import DONE, WAITING, Round, timed_stage
from raysal.run.stages import STAGE_FUNCTIONS
from raysal.run.stages.label import check_label_import
from raysal.run.stages.train import bootstrap
from raysal.run.state import LEARNING_CURVE_FILE, RUN_FILE, RunState
from raysal.run.status import format_outcome, redraw, round_state, status
from raysal.selection.stopping import AGREEMENT_FIELDS, agreement_lines

__all__ = ["DONE", "WAITING", "RoundOutcome", "check_startable", "current_round", "format_outcome", "round_state",
           "run_round", "status"]

log = logging.getLogger(__name__)


@dataclass
class RoundOutcome:
    round: int
    status: str  # DONE or WAITING
    record: dict[str, Any] = field(default_factory=dict)  # round.json once done
    stage_seconds: dict[str, float] = field(default_factory=dict)
    message: str = ""
    report: str | None = None  # the run's HTML report, rewritten as the round ended; None if it could not be


RUN_IDENTITY = ("classes", "pool", "model")


def _identity(cfg: Config) -> dict[str, Any]:
    """What must stay the same for every round of a run."""
    data = cfg.to_dict()
    return {"classes": data["data"]["classes"], "pool": data["data"]["pool"],
            "model": {"kind": cfg.model.kind, "input_size": cfg.model.input_size,
                      # a classifier's head is its own last layer: the model's shape changes with `use`
                      **({"use": cfg.model.use} if cfg.model.use != "backbone" else {})}}


def check_compatible(state: RunState, cfg: Config) -> bool:
    """Refuse a config whose pool, classes or model shape differ from the run's; reads only.

    Returns whether the run is new (no ``run.json`` yet).
    """
    stored = state.read_json(RUN_FILE)
    if stored is None:
        return True
    mine = _identity(cfg)
    changed = [k for k in RUN_IDENTITY if stored.get(k) != mine[k]]
    if changed:
        details = "; ".join(f"{k}: run has {stored.get(k)}, config has {mine[k]}" for k in changed)
        raise Incompatible(f"config changes what a run cannot change ({details}). Keep the run's config, "
                           f"or start a new run with another --state")
    return False


def current_round(state: RunState) -> int:
    """The round to work on: an unfinished one, else the next."""
    rounds = state.rounds()
    unfinished = [n for n in rounds if state.round_record(n) is None and state.exists(state.files(n).config)]
    if unfinished:
        return unfinished[0]
    return (rounds[-1] + 1) if rounds else 1


def check_startable(cfg: Config, state_root: str, label_file: str | None = None, break_lock: bool = False) -> None:
    """What refuses a round before anything runs, read-only: an incompatible config
    (``Incompatible``), a label file that is malformed or for a round that waits for none
    (``LabelFileError``, ``NothingToLabel``), a live lease of another round (``Locked``)."""
    state = RunState(state_root)
    check_compatible(state, cfg)
    if label_file is not None:
        labels_lib.read_label_file(label_file)
        check_label_import(state, current_round(state))
    if not break_lock:
        lease_lib.Lease(state).observe()  # raises Locked while another round's lease is live


def run_round(cfg: Config, state_root: str, label_file: str | None = None, break_lock: bool = False,
              lease_ttl: float = lease_lib.DEFAULT_TTL_S, show_progress: bool = True) -> RoundOutcome:
    """Run (or resume) one round to the end, or until it waits for human labels.

    Everything that can refuse the round (an incompatible config, labels for a round that waits
    for none, a live lease) is decided before the state is changed. The lease is renewed while
    the round runs, and every change first checks that it is still held. Needs Ray
    (``raysal.run.cluster.init_ray``).

    Args:
        label_file: human labels for the round that waits for them (CSV or Parquet, or a Label
            Studio export: ``labels.read_label_file``).
        break_lock: take the run's lease over now, even from a live round.
        lease_ttl: seconds the lease lasts unless renewed; a dead driver's round is taken
            over after this.
        show_progress: log scoring progress and training epochs (logger ``raysal``).
    """
    check_startable(cfg, state_root, label_file, break_lock)
    state = RunState(state_root)
    seconds: dict[str, float] = {}
    with lease_lib.hold(state, ttl=lease_ttl, break_lease=break_lock) as lease:
        state.guard, state.generation = lease.check, lease.generation
        if threading.current_thread() is threading.main_thread():
            lease.on_lost = _interrupt_main  # stop a long stage at once, not at its commit
        board = progress.new_board() if show_progress else None
        try:
            outcome = _run_held(state, cfg, label_file, seconds, board)
            outcome.report = _write_report(state)
            tracking.log_rounds(state, cfg)  # this round once done, and any a server that was down missed
            return outcome
        except KeyboardInterrupt:
            if lease.lost is not None:  # our own interruption: the lease was taken over
                lease.check()  # raises LeaseLost, saying by whom
            raise
        finally:
            lease.on_lost = None
            state.guard, state.generation = None, None
            if board is not None:
                ray.kill(board)


def _write_report(state: RunState) -> str | None:
    """The run's HTML report, rewritten into the state; a report that cannot be made costs the
    round nothing but a warning (its files are committed already)."""
    try:
        return report.write(state)
    except LeaseError:  # this round lost the run: it stops, as at any other write
        raise
    except Exception as exc:  # noqa: BLE001  (the round is committed: a report is never worth failing it)
        why = next((line for line in str(exc).splitlines() if line.strip()), "")[:300]
        log.warning("the run's report was not written (%s: %s); `raysal report --state %s` makes it again",
                    type(exc).__name__, why, state.root)
        return None


def _interrupt_main(reason: str) -> None:
    """Raise ``KeyboardInterrupt`` in the main thread, as Ctrl-C would (Ray's waits let it
    through); ``run_round`` turns it into ``LeaseLost``."""
    log.warning("the lease was lost (%s): stopping the round", reason)
    _thread.interrupt_main()


def _run_held(state: RunState, cfg: Config, label_file: str | None, seconds: dict[str, float],
              board: Any) -> RoundOutcome:
    if check_compatible(state, cfg):  # again, now that no other round can write run.json
        state.write_json(RUN_FILE, _identity(cfg))
    number = 0 if coldstart.pending(state, cfg) else current_round(state)
    for left in state.sweep(number):
        log.info("round %d: removed %s, written by a round that did not commit it", number, state.uri(left))
    if label_file is not None:
        check_label_import(state, number)
    stored = state.read_json(state.files(number).config)
    if stored is None:
        state.write_json(state.files(number).config, cfg.to_dict())
    else:
        cfg = config_from_dict(stored)  # a resumed round finishes with the config it started with
        log.info("round %d: resuming at stage %s", number, state.next_stage(number))
    r = Round(state, cfg, number, seconds, board)
    if number == coldstart.ROUND:  # a cold start: no model yet; round 1 follows once round 0's labels are split
        if coldstart.run_round_zero(r, label_file) == WAITING:
            return _waiting(r)
        done_first = coldstart.summary(state.round_record(number))  # said again with round 1's outcome
        log.info("%s", done_first)
        label_file, number, seconds = None, number + 1, {}  # the labels were round 0's
        state.write_json(state.files(number).config, cfg.to_dict())
        r = Round(state, cfg, number, seconds, board)
        outcome = _run_stages(r, label_file)
        outcome.message = "\n".join(filter(None, [done_first, outcome.message]))
        return outcome
    return _run_stages(r, label_file)


def _run_stages(r: Round, label_file: str | None) -> RoundOutcome:
    """Round ``r``, from its first stage not committed (after the round-0 model, trained first
    if there is none), to its record or to a wait for labels."""
    state, cfg, number, seconds, board = r.state, r.cfg, r.number, r.seconds, r.board
    if state.latest_model() is None or (state.stage_done(number, "train") is None and (
            cfg.label.mode == "oracle" or label_file is not None or state.stage_done(number, "label"))):
        _import_in_background("raysal.model.train")
    bootstrap(Round(state, cfg, 0, seconds, board))
    while (stage := state.next_stage(number)) is not None:
        with timed_stage(stage, seconds):
            status = STAGE_FUNCTIONS[stage](r, label_file)
        faults.point(f"{stage}:ended")
        if status == WAITING:
            return _waiting(r)
    record = _finish(r)
    redraw(state, cfg.name)
    return RoundOutcome(number, DONE, record=record, stage_seconds=seconds)


def _waiting(r: Round) -> RoundOutcome:
    """The outcome of a round that waits for people's labels, saying where its tasks are."""
    state, number = r.state, r.number
    return RoundOutcome(number, WAITING, stage_seconds=r.seconds, message=(
        f"round {number}{' (cold start)' if number == coldstart.ROUND else ''} is waiting for labels: label the "
        f"images in {state.uri(r.files.to_label)}"
        + (f", or in Label Studio: raysal labelstudio push --state {state.root} --url URL (or import "
           f"{state.uri(r.files.file(labelstudio.TASKS_FILE))} into a project made with the labeling_config.xml "
           "beside it)" if state.exists(r.files.file(labelstudio.TASKS_FILE)) else "")
        + "; then run again with --import-labels FILE (CSV or Parquet with image_id,label, or Label "
        "Studio's JSON, JSON-MIN or CSV export)"
        + "".join(f"\n{line}" for line in agreement_lines({**state.stage_done(number, "select"), "round": number}))))


def _import_in_background(module: str) -> None:
    """Start importing ``module`` now, in a thread, for a stage that will need it.

    Training needs TensorFlow and Ray Train on the driver, an import of 5-8 s on 2 cores; while
    the stages before it run, the driver mostly waits for Ray, so the import costs the round
    nothing. The stage's own import waits for this one to finish (Python's import lock).
    """
    threading.Thread(target=importlib.import_module, args=(module,), name=f"raysal-import-{module}",
                     daemon=True).start()


def _finish(r: Round) -> dict[str, Any]:
    st = r.state
    select, evaluate = st.stage_done(r.number, "select"), st.stage_done(r.number, "evaluate")
    record = {
        "round": r.number, "criterion": r.cfg.select.criterion, "budget": r.cfg.select.budget,
        "strategy": r.cfg.select.strategy, "beta": r.cfg.select.beta, "candidates": r.cfg.select.candidates,
        "rescored_from": (st.stage_done(r.number, "score") or {}).get("rescored_from"),
        "unlabelled": (st.stage_done(r.number, "label") or {}).get("unlabelled", 0),
        "selected": select["selected"], "pool_size": select["pool_size"], "skipped": select["skipped"],
        "score_min": select["score_min"], "score_max": select["score_max"],
        "labelled_total": st.stage_done(r.number, "train")["train_size"],  # seed set + every label so far
        "model_before": st.model_key(r.number - 1), "model_after": st.model_key(r.number),
        **{k: evaluate[k] for k in ("test_accuracy_before", "test_accuracy_after", "selection_accuracy_before")},
        **{k: evaluate.get(k) for k in ROUND_FIGURES},  # None where an older round's stage lacks them
        "test_per_class_after": evaluate.get("test_per_class_after"),
        # the scoring models of this round and the last, on the stop set: r - 2 and r - 1
        **{k: select.get(k) for k in AGREEMENT_FIELDS},
        "selection": st.uri(r.files.selection), "skipped_report": st.uri(r.files.skipped),
        "metrics": st.uri(r.files.metrics), "learning_curve": st.uri(LEARNING_CURVE_FILE),
        "stage_seconds": dict(r.seconds),  # this run's stages only, when the round was resumed
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    st.write_json(r.files.record, record)
    return record


