"""raysal.report.plots: the figures are PNGs, with a balanced-accuracy panel where there are its curves."""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image

from raysal.report.plots import heatmap_png, kappa_png, learning_curve_png, simulation_png


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])  # the IHDR chunk: width, height


def test_the_simulation_figure_has_a_balanced_accuracy_panel_when_the_curves_have_it():
    curve = {"mean": [0.5, 0.7], "min": [0.4, 0.6], "max": [0.6, 0.8]}
    alone = simulation_png([10, 20], {"random": curve, "margin": curve}, "t")
    both = simulation_png([10, 20], {"random": {**curve, "balanced_accuracy": curve},
                                     "margin": {**curve, "balanced_accuracy": curve}}, "t")
    assert png_size(alone) == (700, 450) and png_size(both) == (1250, 450)


def test_a_learning_curve_draws_the_gaps_of_rounds_without_a_figure():
    png = learning_curve_png([300, 340, 380], {"accuracy": [0.8, 0.85, 0.9], "balanced accuracy": [None, None, 0.88]},
                             "raysal: demo")
    assert png_size(png) == (600, 400)


def test_a_heatmap_draws_every_cell_and_leaves_a_figure_not_measured_blank():
    per_class = heatmap_png([[1.0, None], [0.5, 0.75]], ["cat", "dog"], ["1", "2"], "t", "round", "class", vmax=1.0)
    confusion = heatmap_png(np.eye(30, dtype=int).tolist(), [str(i) for i in range(30)], [str(i) for i in range(30)],
                            "t", "predicted class", "true class", number_format="{:.0f}")
    assert png_size(per_class) == (600, 250) and png_size(confusion) == (1600, 1200)  # grows with the classes
    pixels = np.asarray(Image.open(io.BytesIO(per_class)).convert("L"))
    assert pixels.std() > 10  # drawn, not blank


def test_the_kappa_figure_marks_whole_rounds_and_the_threshold():
    assert png_size(kappa_png([2, 3, 4], [0.8, None, 0.95], 0.9)) == (600, 350)
    assert png_size(kappa_png([2], [0.9], 0.0)) == (600, 350)  # one round, no threshold
