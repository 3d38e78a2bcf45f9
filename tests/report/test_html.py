"""The report's pages from plain data (``raysal.report.html``): every value escaped, every picture
inlined, a large selection paged."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser

from raysal.report import html

HOSTILE = '<script>alert("x")</script>&"'


class _Page(HTMLParser):
    """The tags, ``src`` and ``href`` attributes and text of a page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.sources: list[str] = []
        self.links: list[str] = []
        self.attributes: list[tuple[str, str | None]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += attrs
        found = dict(attrs)
        if found.get("src"):
            self.sources.append(found["src"])
        if tag in ("a", "link") and found.get("href"):
            self.links.append(found["href"])

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _picture(i: int, name: str = "x.png") -> html.Picture:
    return html.Picture(image_id=i, uri=f"/pool/{name}", rank=i + 1, score=0.5, predicted="cat",
                        probability=0.61, thumbnail=b"\xff\xd8jpeg" if i % 7 else None, error="" if i % 7 else "bad")


def _report(**kw) -> html.Report:
    return html.Report(name="demo", state="/tmp/state", generated_at="2026-12-04T00:00:00+00:00",
                       rounds=[{"round": 1, "state": "done", "selected": 3, "labelled_total": 43, "skipped": 1,
                                "test_accuracy_before": 0.5, "test_accuracy_after": 0.75,
                                "test_balanced_accuracy_before": None, "test_balanced_accuracy_after": 0.7,
                                "selection_accuracy_before": 0.2, "kappa": None,
                                "stage_seconds": {"score": 12.3}}],
                       stage_names=["score", "select"], **kw)


def test_untrusted_names_are_text_and_nothing_is_fetched_from_anywhere():
    report = _report(learning_curve=b"\x89PNG", galleries={1: [_picture(1, HOSTILE)]},
                     skipped=[{"round": 1, "image_id": 9, "uri": f"/pool/{HOSTILE}", "reason": HOSTILE}])
    files = html.render(report)
    assert list(files) == ["index.html"]
    text = files["index.html"].decode()
    page = _Page(text)
    assert "script" not in page.tags  # the file name and the reason show as text only
    assert ("alt", f"/pool/{HOSTILE}") in page.attributes and ("title", f"/pool/{HOSTILE}") in page.attributes
    assert "".join(page.text).count(HOSTILE) == 2
    assert all(src.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")) for src in page.sources)
    assert base64.b64decode(page.sources[0].split(",", 1)[1]) == b"\x89PNG"
    assert all(link.startswith(("#", "data:")) for link in page.links)  # no CDN, no other file
    assert "0.7500" in text and "n/a" in text and "12 s" in text  # figures; a figure not measured


def test_a_large_selection_is_paged_and_every_page_links_back():
    pictures = [_picture(i) for i in range(2 * html.PAGE + 5)]
    files = html.render(_report(galleries={3: pictures}))
    assert sorted(files) == ["index.html", "selection-0003-2.html", "selection-0003-3.html"]
    index = _Page(files["index.html"].decode())
    assert "selection-0003-2.html" in index.links
    on_index = re.findall(r'data-image-id="(\d+)"', files["index.html"].decode())
    second = re.findall(r'data-image-id="(\d+)"', files["selection-0003-2.html"].decode())
    last = re.findall(r'data-image-id="(\d+)"', files["selection-0003-3.html"].decode())
    assert [len(on_index), len(second), len(last)] == [html.PAGE, html.PAGE, 5]
    assert list(map(int, on_index + second + last)) == list(range(2 * html.PAGE + 5))  # by rank, none twice
    middle = _Page(files["selection-0003-2.html"].decode())
    assert {"index.html#selection-3", "selection-0003-3.html"} <= set(middle.links)
    assert "unreadable" in files["index.html"].decode()  # an image with no thumbnail says so


def test_a_run_with_no_round_yet_still_renders_every_section():
    text = html.render(html.Report(name="new", state="s", generated_at="t", rounds=[], stage_names=[]))[
        "index.html"].decode()
    for section in ("rounds", "learning-curve", "per-class", "confusion", "stopping", "selections", "skipped"):
        assert f'<section id="{section}">' in text
    assert "No round has started yet." in text
