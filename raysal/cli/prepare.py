"""``raysal prepare``: turn your labelled images into a ready run (``raysal.data.prepare``).

What it does, and the rules of the split, are that module's docstring.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from raysal.cli.common import exit_codes, parser_for
from raysal.config import MODEL_KINDS as MODELS
from raysal.config import MODEL_USES
from raysal.data.prepare import MAX_BUDGET, SEED_SHARE, PrepareConfig, format_summary, parse_size, prepare
from raysal.errors import EXIT_CONFIG, EXIT_MISSING, EXIT_OK, BadInput, MissingInput

DESCRIPTION = """Turn your labelled images into a ready run: split manifests and the config of its rounds.

    raysal prepare images --out run                          # images/<class>/*.jpg
    raysal prepare labels.csv --pool unlabelled --out run    # people label a separate pool
    raysal prepare images --out run --model hub --handle /models/inception_v3"""
EPILOG = exit_codes({EXIT_OK: "the run is prepared",
                     EXIT_CONFIG: "bad arguments or input (a class too small for every split, an image listed twice, "
                                  "a pool that overlaps the labelled images, a config that already exists); nothing "
                                  "was written",
                     EXIT_MISSING: "an input folder or manifest does not exist or cannot be read; nothing was written"})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("labelled", metavar="IMAGES",
                        help="labelled images: a folder with one subfolder per class, or a CSV/Parquet manifest "
                             "with uri,label[,image_id] (local or s3://)")
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
            input_size=args.input_size, budget=args.budget, force=args.force)
        plan = prepare(cfg)
    except (MissingInput, BadInput) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(format_summary(plan, prog))
    return EXIT_OK
