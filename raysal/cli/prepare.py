"""``raysal prepare``: turn your labelled images (or, for a cold start, a pool and class names)
into a ready run (``raysal.data.prepare``), and say what it wrote.

What it does, and the rules of the split, are that module's docstring.
"""

from __future__ import annotations

import argparse
import operator
import os
import shlex
import sys
from typing import Any, Sequence

import numpy as np

from raysal.cli.common import exit_codes, parser_for
from raysal.config import MODEL_KINDS as MODELS
from raysal.config import MODEL_USES
from raysal.data.prepare import MAX_BUDGET, SEED_SHARE, SUMMARY_CLASSES, Plan, PrepareConfig, parse_size, prepare
from raysal.data.splits import SPLITS
from raysal.errors import EXIT_CONFIG, EXIT_MISSING, EXIT_OK, BadInput, MissingInput

DESCRIPTION = """Turn your labelled images into a ready run: split manifests and the config of its rounds.

    raysal prepare images --out run                          # images/<class>/*.jpg
    raysal prepare labels.csv --pool unlabelled --out run    # people label a separate pool
    raysal prepare images --out run --model hub --handle /models/inception_v3
    raysal prepare --pool unlabelled --classes cat,dog --out run     # a cold start: no labels yet"""
EPILOG = exit_codes({EXIT_OK: "the run is prepared",
                     EXIT_CONFIG: "bad arguments or input (a class too small for every split, an image listed twice, "
                                  "a pool that overlaps the labelled images, a config that already exists); nothing "
                                  "was written",
                     EXIT_MISSING: "an input folder or manifest does not exist or cannot be read; nothing was written"})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("labelled", metavar="IMAGES", nargs="?", default="",
                        help="labelled images: a folder with one subfolder per class, or a CSV/Parquet manifest "
                             "with uri,label[,image_id] (local or s3://); none for a cold start (--pool and "
                             "--classes)")
    parser.add_argument("--classes", default="", metavar="A,B,C",
                        help="a cold start (no IMAGES): the class names people label the pool with; round 0 "
                             "selects typical images of the pool for them to label first")
    parser.add_argument("--seed-budget", type=int, metavar="N",
                        help="a cold start: images round 0 selects (default: --budget, at least 3 per class)")
    parser.add_argument("--pool", default="", metavar="FOLDER|MANIFEST",
                        help="unlabelled images for people to label (label.mode = human); default: hold out the "
                             "rest of the labelled images as the pool, labelled from the data (oracle)")
    parser.add_argument("--out", default=PrepareConfig.out, metavar="DIR",
                        help=f"local folder for the manifests and config.toml (default: {PrepareConfig.out})")
    parser.add_argument("--labelled", metavar="SIZE", dest="labelled_size",
                        help=f"seed set: images (60) or a share of them (default {SEED_SHARE}); not with --pool, "
                             "where the seed set takes what val and test leave")
    parser.add_argument("--val", metavar="SIZE", help=f"validation split (default {PrepareConfig.val_size})")
    parser.add_argument("--test", metavar="SIZE", help=f"test split (default {PrepareConfig.test_size})")
    parser.add_argument("--seed", type=int, default=PrepareConfig.seed, metavar="N",
                        help="the split's shuffle and the run's weight init")
    parser.add_argument("--model", default=PrepareConfig.model, choices=MODELS,
                        help="small_cnn (default, trained from scratch), hub (--handle), inception_v3 "
                             "([--weights]) or keras (--model-path, --input-size)")
    parser.add_argument("--handle", default="", metavar="HANDLE",
                        help="--model hub: TF Hub handle or local SavedModel folder")
    parser.add_argument("--weights", default="", metavar="FILE",
                        help="--model inception_v3: local weights file (default: random init)")
    parser.add_argument("--model-path", default="", metavar="PATH",
                        help="--model keras: your saved Keras model (model.path)")
    parser.add_argument("--model-use", default="", choices=MODEL_USES,
                        help="--model keras: backbone (default: its outputs feed a new Dense head) or classifier "
                             "(its outputs are the classes)")
    parser.add_argument("--input-size", type=int, metavar="PIXELS",
                        help="square image side (default 32 for small_cnn, 299 for hub and inception_v3; "
                             "needed for keras)")
    parser.add_argument("--budget", type=int, metavar="N",
                        help=f"images selected per round (default: a tenth of the pool, at most {MAX_BUDGET})")
    parser.add_argument("--force", action="store_true", help="overwrite an existing config.toml in --out")
    parser.set_defaults(run=run)


def main(argv: Sequence[str] | None = None, prog: str = "raysal prepare") -> int:
    """``raysal prepare ARGS`` on its own (``python jobs/prepare.py``)."""
    return run(parser_for(sys.modules[__name__], prog).parse_args(argv), prog)


def run(args: argparse.Namespace, prog: str) -> int:
    try:
        sizes = {f"{option}_size": parse_size(text, f"--{option}")
                 for option, text in (("labelled", args.labelled_size), ("val", args.val), ("test", args.test))
                 if text is not None}  # those not given keep PrepareConfig's defaults
        cfg = PrepareConfig(
            labelled=args.labelled, out=args.out, pool=args.pool, **sizes, seed=args.seed, model=args.model,
            handle=args.handle, weights=args.weights, model_path=args.model_path, model_use=args.model_use,
            input_size=args.input_size, budget=args.budget, force=args.force,
            classes=tuple(name.strip() for name in args.classes.split(",")) if args.classes else (),
            seed_budget=args.seed_budget)
        plan = prepare(cfg)
    except (MissingInput, BadInput) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(format_summary(plan, prog))
    return EXIT_OK


# --- the console -----------------------------------------------------------------------------

def round_command(plan: Plan, prog: str) -> str:
    """The command that runs the first round, as the user would type it in the same folder."""
    runner = "raysal round" if prog.startswith("raysal") else "python jobs/round.py"
    state = os.path.join(plan.cfg.out, "state")
    return f"{runner} --config {shlex.quote(plan.config_path)} --state {shlex.quote(state)}"


def format_summary(plan: Plan, prog: str) -> str:
    """What the user reads: images per split and class, the model, and the next command."""
    cfg, k = plan.cfg, len(plan.classes)
    if cfg.cold_start:
        return _cold_start_summary(plan, prog)
    human = bool(cfg.pool)
    shown = list(range(min(k, SUMMARY_CLASSES)))
    width = max(len("class"), *(len(plan.classes[c]) for c in shown))

    def row(name: str, values: Sequence[str]) -> str:
        return f"  {name:<{width}}" + "".join(f"  {v:>8}" for v in values)

    def cells(pick: Any) -> list[str]:
        return [str(int(pick(plan.counts[s]))) for s in SPLITS if s != "pool"] + \
               (["-"] if human else [str(int(pick(plan.counts["pool"])))])

    n_labelled = sum(int(plan.counts[s].sum()) for s in SPLITS)
    lines = [f"{n_labelled} labelled images of {k} classes in {cfg.labelled}, split by class with seed {cfg.seed}:",
             row("class", SPLITS)]
    lines += [row(plan.classes[c], cells(operator.itemgetter(c))) for c in shown]
    if k > len(shown):
        lines.append(f"  ... and {k - len(shown)} more classes")
    lines.append(row("all", cells(np.sum)[:3] + [str(plan.pool_size)]))
    if human:
        lines.append(f"pool: {plan.pool_size} unlabelled images of {cfg.pool}, labelled by people "
                     "(label.mode = \"human\"): a round stops after selecting and writes rounds/000r/to_label.csv "
                     "in its state; once labelled, run it again with --import-labels FILE")
    else:
        lines.append("pool: the rest of the labelled images; a round takes their labels from the data "
                     "(label.mode = \"oracle\")")
    model, train = plan.config["model"], plan.config["train"]
    size = f" at {model['input_size']}x{model['input_size']}" if "input_size" in model else ""
    how = (f"the head trained {train['head_epochs']} epochs, then the whole model {train['finetune_epochs']}"
           if cfg.pretrained else f"trained from scratch, {train['finetune_epochs']} epochs")
    lines.append(f"model: {cfg.model}{size}, {how}; {plan.config['select']['budget']} images selected per round "
                 "(--budget)")
    lines += [f"note: {note}" for note in plan.notes]
    written = [os.path.join(cfg.out, f"{s}.parquet") for s in SPLITS] + [plan.config_path]
    lines += [f"wrote {', '.join(written)}", "", "Run the first round:", f"  {round_command(plan, prog)}"]
    return "\n".join(lines)


def _cold_start_summary(plan: Plan, prog: str) -> str:
    cfg, select = plan.cfg, plan.config["select"]
    classes = ", ".join(plan.classes[:SUMMARY_CLASSES]) + (f" and {len(plan.classes) - SUMMARY_CLASSES} more"
                                                          if len(plan.classes) > SUMMARY_CLASSES else "")
    features = "its backbone's embeddings" if cfg.pretrained else "its pixels, downsampled"
    lines = [f"a cold start: {plan.pool_size} unlabelled images in {cfg.pool}, {len(plan.classes)} classes "
             f"({classes}), no labelled images",
             f"round 0 selects {select['seed_budget']} typical images (TypiClust over {features}; --seed-budget) and "
             "waits for people to label them (rounds/0000/to_label.csv in its state); once imported with "
             "--import-labels FILE, their labels are split by class into the seed set, val and test (a tenth val, "
             "a fifth test), and round 1 goes on as any run's",
             f"model: {cfg.model}; {select['budget']} images selected per round after that (--budget)"]
    lines += [f"note: {note}" for note in plan.notes]
    lines += [f"wrote {os.path.join(cfg.out, 'pool.parquet')}, {plan.config_path}", "",
              "Run round 0:", f"  {round_command(plan, prog)}"]
    return "\n".join(lines)
