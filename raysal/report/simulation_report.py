"""What a user reads of a simulation (``raysal.simulation``): its table, ``simulation.json`` and
``simulation.png``."""

from __future__ import annotations

import json
from typing import Any, Mapping

from raysal import storage
from raysal.report import plots


def _mean_std(spread: Mapping[str, float] | None, digits: int = 3) -> str:
    return "-" if spread is None else f"{spread['mean']:.{digits}f} ± {spread['std']:.{digits}f}"


def format_table(result: Mapping[str, Any]) -> str:
    """The summary as a markdown table: final accuracy, AUC and the AUC of the balanced accuracy
    (mean ± std over seeds), labels to reach the target on the mean curve, and labels saved
    against the baseline there. A result written before balanced accuracy was measured has
    "-" in its column."""
    target, baseline = result["target"], result["baseline"]
    lines = [f"| strategy | final accuracy | AUC | balanced accuracy AUC | labels to reach {target:.3f} | "
             f"labels saved vs {baseline} |", "|---|---|---|---|---|---|"]
    for name, entry in result["strategies"].items():
        needed = entry["labels_to_target"]
        saved, fraction = entry["labels_saved"], entry["labels_saved_fraction"]
        balanced = (entry.get("balanced_accuracy") or {}).get("auc")
        lines.append(f"| {name} | {_mean_std(entry['final_accuracy'])} | {_mean_std(entry['auc'])} | "
                     f"{_mean_std(balanced)} | {'not reached' if needed is None else f'{needed:.0f}'} | "
                     f"{'-' if saved is None else f'{saved:.0f} ({fraction:.0%})'} |")
    return "\n".join(lines)


def pool_line(result: Mapping[str, Any]) -> str:
    """How many pool images each class kept, said of a long-tailed subsample (``--imbalance``)."""
    per_class, ratio = result["pool_per_class"], result["settings"]["imbalance"]
    kept = ", ".join(f"{name} {count}" for name, count in per_class.items())
    if ratio == 1:
        return f"pool: {result['pool_images']} images ({kept})"
    return (f"pool subsampled long-tailed (--imbalance {ratio:g}): {result['pool_images']} of "
            f"{result['pool_images_available']} images, {max(per_class.values())} to {min(per_class.values())} "
            f"per class ({kept})")


def round0_line(result: Mapping[str, Any]) -> str:
    """The round-0 models' test accuracy over the seeds, and how their seed sets were chosen."""
    s, accuracy = result["settings"], result["round0_model_accuracy"]
    return (f"round-0 model (seed set of {s['seed_size']}, {s.get('seed_strategy', 'random')}): test accuracy "
            f"{sum(accuracy) / len(accuracy):.3f} mean over {len(accuracy)} seeds "
            f"({', '.join(f'{a:.3f}' for a in accuracy)})")


def write_results(result: Mapping[str, Any], out: str) -> tuple[str, str]:
    """``simulation.json`` and ``simulation.png`` in the folder ``out`` (a path or URI), each
    written whole; returns their paths."""
    s = result["settings"]
    title = f"{result['config']}: {s['seeds']} seeds, seed set {s['seed_size']}, {s['budget']} per round"
    if s.get("seed_strategy", "random") != "random":
        title += f", {s['seed_strategy']} seed set"
    if s.get("imbalance", 1) != 1:
        title += f", pool imbalance {s['imbalance']:g}"
    paths = storage.join(out, "simulation.json"), storage.join(out, "simulation.png")
    contents = (json.dumps(result, indent=1).encode(),
                plots.simulation_png(result["labelled"], result["strategies"], title))
    fs, folder = storage.resolve(out)
    fs.create_dir(folder, recursive=True)
    for path, data in zip(paths, contents, strict=True):
        storage.write_whole(*storage.resolve(path), data)
    return paths
