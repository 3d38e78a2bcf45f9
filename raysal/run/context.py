"""What every stage of a round needs: the state, the round's config and number, and its sources."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

from raysal.config import Config, SourceConfig
from raysal.data import sources
from raysal.model import embeddings
from raysal.run import preflight
from raysal.run.state import RoundFiles, RunState

if TYPE_CHECKING:
    import ray.data

log = logging.getLogger(__name__)

DONE, WAITING = "done", "waiting for labels"  # what a stage returns, and a round's outcome
BATCHES_PER_BLOCK = 4  # scoring batches per block of a source read on the driver


@dataclass
class Round:
    """One round of a run, as its stages see it."""

    state: RunState
    cfg: Config
    number: int
    seconds: dict[str, float]  # each stage's wall time, as it ends
    board: Any = None  # a progress.Board that workers report to; None = no progress lines

    @property
    def files(self) -> RoundFiles:
        return self.state.files(self.number)

    @property
    def key(self) -> str:
        return self.files.key

    @property
    def data_root(self) -> str:
        return preflight.data_root(self.cfg, self.state.root)

    def source(self, source: SourceConfig) -> ray.data.Dataset:
        return self.sized_source(source)[0]

    def sized_source(self, source: SourceConfig) -> tuple[ray.data.Dataset, int]:
        """The source and its size. Blocks of a few model batches: the pool streams through
        decoding and scoring in pieces. A cold start's ``seed`` split is read from the pool."""
        if source.kind == "seed":
            from raysal.run.coldstart import seed_source  # it builds on this module

            return seed_source(self.state, self.cfg, source.where.removeprefix("data."), self.data_root,
                               BATCHES_PER_BLOCK * self.cfg.score.batch_size)
        return sources.read_source_with_size(source, self.cfg.data.classes, self.data_root,
                                             block_rows=BATCHES_PER_BLOCK * self.cfg.score.batch_size)

    def model_uri(self, number: int) -> str:
        """Published model ``number``, its files found to be those it was published with
        (``embeddings.check_files``: a changed file is refused here, on the driver, with exit 2)."""
        uri = self.state.uri(self.state.model_key(number))
        embeddings.check_files(uri)
        return uri


@contextmanager
def timed_stage(name: str, seconds: dict[str, float]) -> Iterator[None]:
    """Log a stage's start and end, and keep its wall time in ``seconds``."""
    log.info("stage %s: started", name)
    start = time.perf_counter()
    yield
    seconds[name] = round(time.perf_counter() - start, 3)
    log.info("stage %s: done in %.1f s", name, seconds[name])
