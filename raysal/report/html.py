"""A run's report as static HTML pages, from plain data (``Report``): no network, no script.

Every picture is inlined as a ``data:`` URI (figures as PNG, thumbnails as JPEG), so a page
opens from ``file://``, from a bucket or from a mail attachment alike. The pages are made with
Jinja2 templates (``templates/``) that escape every value: a file name or a class name is
untrusted and shows as text. The index holds each round's first ``PAGE`` selected images; the
rest of a large selection is on further pages of its own (``selection-NNNN-K.html``).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Sequence

PAGE = 200  # thumbnails per page of a round's selection
INDEX = "index.html"


@dataclass
class Picture:
    """One selected image in the gallery; ``thumbnail`` is JPEG bytes, None if it could not be read."""

    image_id: int
    uri: str
    rank: int
    score: float
    predicted: str | None  # the scoring model's top class; None for a cold start's round 0 (no model)
    probability: float | None
    thumbnail: bytes | None
    error: str = ""


@dataclass
class Report:
    """What a report shows; every figure is PNG bytes, None when the run has nothing to draw yet."""

    name: str
    state: str
    generated_at: str
    rounds: list[dict[str, Any]]  # one row per round: its figures (``ROUND_COLUMNS``) and its state
    stage_names: list[str]
    learning_curve: bytes | None = None
    per_class: bytes | None = None
    confusion: bytes | None = None
    confusion_model: int | None = None
    kappa: bytes | None = None
    stop_kappa: float = 0.0
    galleries: dict[int, list[Picture]] = field(default_factory=dict)  # round -> its selection, by rank
    skipped: list[dict[str, Any]] = field(default_factory=list)  # round, image_id, uri, reason


def data_uri(data: bytes | None, mime: str) -> str | None:
    return None if data is None else f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("raysal.report", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["png"] = lambda data: data_uri(data, "image/png")
    env.filters["jpeg"] = lambda data: data_uri(data, "image/jpeg")
    env.filters["figure"] = lambda v: "n/a" if v is None else f"{v:.4f}"
    env.filters["seconds"] = lambda v: "" if v is None else f"{v:.0f} s"
    return env


def page_name(number: int, page: int) -> str:
    """The file of page ``page`` (1 is the index's own part) of round ``number``'s selection."""
    return INDEX if page == 1 else f"selection-{number:04d}-{page}.html"


def _pages(pictures: Sequence[Picture]) -> list[Sequence[Picture]]:
    return [pictures[i:i + PAGE] for i in range(0, len(pictures), PAGE)] or [[]]


def render(report: Report) -> dict[str, bytes]:
    """The report's files: ``index.html`` and a page for each further part of a large selection."""
    env = _environment()
    galleries = {number: _pages(pictures) for number, pictures in report.galleries.items()}
    files = {INDEX: env.get_template("index.html.j2").render(
        report=report, galleries=galleries, page_name=page_name, page=PAGE).encode()}
    for number, pages in galleries.items():
        for index, pictures in enumerate(pages[1:], start=2):
            files[page_name(number, index)] = env.get_template("selection.html.j2").render(
                report=report, number=number, pictures=pictures, index=index, pages=len(pages),
                page_name=page_name, page=PAGE).encode()
    return files
