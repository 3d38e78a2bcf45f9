"""Each round in MLflow (``track.mlflow_uri``, or ``track.mlflow`` with ``MLFLOW_TRACKING_URI``):
one MLflow run per round, under an experiment named after the raysal run.

A round's MLflow run holds the flattened config as params; its figures as metrics with
step = round (accuracies, balanced accuracy, macro-F1, per class, on the selection, kappa, stage
seconds, labels in all) and each training epoch's figures with step = epoch; and the selection,
the learning curve and the report as artifacts. The driver logs them once the round is done:
Ray Train's workers report to the driver, which alone talks to the server.

A server that is down or slow never fails a round: each request waits ``track.timeout_s`` at
most, with no retries, and the round ends with one warning line. Which rounds are logged is kept
in the state (``LOGGED_FILE``): every round's end logs all the rounds done and not yet logged, so a
round missed while the server was down is logged the next time it answers.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import posixpath
import re
import tempfile
import time
from contextlib import contextmanager
from typing import Any, Iterator

from raysal.config import Config
from raysal.errors import ConfigError
from raysal.report.metrics import ROUND_FIGURES
from raysal.run.state import LEARNING_CURVE_FILE, REPORT_DIR, STAGES, RunState

log = logging.getLogger(__name__)

LOGGED_FILE = "tracking/mlflow.json"  # {"logged": [round, ...]}: the rounds an MLflow server holds
PARAM_CHARS = 6000  # MLflow's longest param value
BATCH = 100  # metrics or params per request (MLflow takes at most 1000 metrics and 100 params)
DEADLINE_REQUESTS = 30  # a round's end spends at most this many track.timeout_s on the tracker
FIGURES = ("test_accuracy_before", "test_accuracy_after", "selection_accuracy_before", "kappa", "labelled_total",
           "selected", "skipped", *ROUND_FIGURES)


def tracking_uri(cfg: Config) -> str | None:
    """The MLflow server a round logs to, or None when tracking is off."""
    if cfg.track.mlflow_uri:
        return cfg.track.mlflow_uri
    return os.environ.get("MLFLOW_TRACKING_URI") or None if cfg.track.mlflow else None


def check(cfg: Config) -> None:
    """Refuse, before any work, tracking that cannot work: ``track.mlflow`` with no server named,
    or MLflow not installed."""
    if not (cfg.track.mlflow or cfg.track.mlflow_uri):
        return
    if tracking_uri(cfg) is None:
        raise ConfigError("track.mlflow = true needs a server: set MLFLOW_TRACKING_URI, or give track.mlflow_uri")
    try:
        import mlflow  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"track.mlflow needs MLflow, which is not installed here ({exc}): "
                          "pip install 'raysal[mlflow]'") from None


def flatten(table: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as MLflow params: dotted keys, values as text cut to ``PARAM_CHARS``."""
    out: dict[str, str] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)[:PARAM_CHARS]
    return out


def metric_key(name: str) -> str:
    """A class name or stage as an MLflow metric key: letters, digits and ``_-. /`` kept, others ``_``."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", name)


def round_metrics(state: RunState, number: int) -> list[tuple[str, float, int]]:
    """(key, value, step) of round ``number``: its figures at step = round, its epochs at step = epoch."""
    record = state.round_record(number) or {}
    found = [(k, record[k], number) for k in FIGURES if isinstance(record.get(k), (int, float))]
    found += [(metric_key(f"test_accuracy_class/{name}"), value, number)
              for name, value in (record.get("test_per_class_after") or {}).items() if value is not None]
    found += [(metric_key(f"seconds/{stage}"), value, number)
              for stage, value in (record.get("stage_seconds") or {}).items()]
    epochs = ((state.stage_done(number, "train") or {}).get("metrics") or {}).get("epochs") or []
    found += [(metric_key(f"epoch/{k}"), v, e["epoch"]) for e in epochs
              for k, v in e.items() if k not in ("epoch", "phase") and isinstance(v, (int, float))]
    return [(k, float(v), int(step)) for k, v, step in found]


def state_id(state: RunState) -> str:
    """A digest of the state's address: which raysal run an MLflow run belongs to."""
    return hashlib.sha256(state.root.encode()).hexdigest()[:16]


@contextmanager
def _bounded(timeout_s: float) -> Iterator[None]:
    """MLflow's HTTP client: one try per request, each at most ``timeout_s``; and no line of its
    own on the console (the run's address: raysal says it once)."""
    settings = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(math.ceil(timeout_s)),
                "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _experiment(client: Any, name: str) -> str:
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found is not None else client.create_experiment(name)


def _artifacts(state: RunState, number: int, folder: str) -> list[tuple[str, str | None]]:
    """(local file, artifact folder) of round ``number``'s artifacts, copied into ``folder``:
    ``selection.parquet``, ``learning_curve.png`` and ``report/*``."""
    wanted = [(state.files(number).selection, None), (LEARNING_CURVE_FILE, None)]
    wanted += [(f"{REPORT_DIR}/{name}", REPORT_DIR) for name in state.list_names(REPORT_DIR)]
    out = []
    for key, where in wanted:
        data = state.read_bytes(key)
        if data is not None:
            os.makedirs(os.path.join(folder, where or ""), exist_ok=True)
            path = os.path.join(folder, where or "", posixpath.basename(key))
            with open(path, "wb") as f:
                f.write(data)
            out.append((path, where))
    return out


def log_round(client: Any, experiment_id: str, state: RunState, number: int) -> str:
    """One MLflow run for round ``number``; a half-logged run of it from before is deleted first.
    Returns the run's id."""
    from mlflow.entities import Metric, Param, RunTag

    # The state's address may hold any character: its digest, not the address, is filtered on.
    found = {"raysal.state_id": state_id(state), "raysal.round": str(number)}
    for old in client.search_runs([experiment_id], filter_string=" and ".join(
            f"tags.`{k}` = '{v}'" for k, v in found.items())):
        client.delete_run(old.info.run_id)  # its server answered part of it only: logged again, whole
    run = client.create_run(experiment_id, run_name=f"round {number}", tags={**found, "raysal.state": state.root})
    run_id = run.info.run_id
    params = [Param(k, v) for k, v in flatten(state.read_json(state.files(number).config) or {}).items()]
    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, step) for k, v, step in round_metrics(state, number)]
    for i in range(0, max(len(params), len(metrics)), BATCH):
        client.log_batch(run_id, metrics=metrics[i:i + BATCH], params=params[i:i + BATCH],
                         tags=[RunTag("raysal.stages", ",".join(STAGES))] if i == 0 else [])
    with tempfile.TemporaryDirectory() as folder:
        for path, where in _artifacts(state, number, folder):
            client.log_artifact(run_id, path, artifact_path=where)
    client.set_terminated(run_id)
    return run_id


def log_rounds(state: RunState, cfg: Config) -> list[int]:
    """Log every round done and not yet logged to the configured server; returns those logged now.

    A server that does not answer is warned of in one line, and its rounds wait for the next time.
    Each request waits ``track.timeout_s`` at most; once ``DEADLINE_REQUESTS`` times that has
    passed, the rounds left wait for the next round's end too.
    """
    uri = tracking_uri(cfg)
    if uri is None:
        return []
    logged = set((state.read_json(LOGGED_FILE) or {}).get("logged", []))
    records = {n: state.round_record(n) for n in state.rounds() if n not in logged}
    waiting = [n for n, record in records.items() if record and not record.get("cold_start")]  # done, with a model
    done: list[int] = []
    if not waiting:
        return done
    deadline = time.monotonic() + DEADLINE_REQUESTS * cfg.track.timeout_s
    try:
        from mlflow import MlflowClient

        with _bounded(cfg.track.timeout_s):
            client = MlflowClient(tracking_uri=uri)
            experiment_id = _experiment(client, cfg.name)
            for number in waiting:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{DEADLINE_REQUESTS} x track.timeout_s passed")
                log_round(client, experiment_id, state, number)
                done.append(number)
    except Exception as exc:  # noqa: BLE001  (a tracker is never worth a round: any failure is one warning)
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
        log.warning("MLflow at %s did not take round(s) %s (%s: %s); they are logged when it answers, at the "
                    "end of a later round", uri, ", ".join(map(str, waiting[len(done):])), type(exc).__name__,
                    first[:200])
    if done:
        state.write_json(LOGGED_FILE, {"logged": sorted(logged | set(done)), "uri": uri})
        log.info("MLflow at %s: logged round(s) %s in experiment %r", uri, ", ".join(map(str, done)), cfg.name)
    return done
