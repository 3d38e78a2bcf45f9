"""The stages of a round, in order: score, select, label, train, evaluate.

Each is ``stage(r: Round, label_file: str | None) -> DONE | WAITING``: it writes its outputs
into the round's files, then commits (``RunState.commit_stage``), so a crash leaves either a
committed stage or one that is redone from scratch.
"""

from __future__ import annotations

from typing import Callable

from raysal.run.context import Round
from raysal.run.stages.evaluate import stage_evaluate
from raysal.run.stages.label import stage_label
from raysal.run.stages.score import stage_score
from raysal.run.stages.select import stage_select
from raysal.run.stages.train import stage_train
from raysal.run.state import STAGES

STAGE_FUNCTIONS: dict[str, Callable[[Round, str | None], str]] = {
    "score": stage_score, "select": stage_select, "label": stage_label, "train": stage_train,
    "evaluate": stage_evaluate}
assert tuple(STAGE_FUNCTIONS) == STAGES
