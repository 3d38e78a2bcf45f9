"""``raysal pack``: a folder or manifest of images packed into Parquet shards that carry the
images' bytes (``raysal.data.pack``), for large pools."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from raysal.cli.common import exit_codes, parser_for
from raysal.data.pack import ROWS_PER_SHARD, format_summary, pack
from raysal.errors import EXIT_CONFIG, EXIT_MISSING, EXIT_OK, BadInput, MissingInput

DESCRIPTION = "Pack a folder or manifest of image files into Parquet shards that carry the images' bytes."
EPILOG = exit_codes({EXIT_OK: "the shards are written",
                     EXIT_CONFIG: "bad arguments or input (no images, an image listed twice, --out already holds "
                                  "an earlier pack without --force, or Parquet files or a _pack.json pack did not "
                                  "write); nothing was written",
                     EXIT_MISSING: "the input does not exist or cannot be read; nothing was written"})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="FOLDER|MANIFEST",
                        help="a folder of images (a subfolder per class gives labels), or a CSV/Parquet manifest "
                             "with uri[,image_id][,label] (local or s3://)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder (or URI) for the pack: its shards in a "
                        "pack-<time>-<random>/ folder, then _pack.json naming them; give this folder, not a glob, "
                        "as the pool's path")
    parser.add_argument("--rows-per-shard", type=int, default=ROWS_PER_SHARD, metavar="N",
                        help=f"images per shard (default {ROWS_PER_SHARD:,})")
    parser.add_argument("--no-labels", action="store_true",
                        help="write no label column: the subfolders (or the manifest's labels) are not classes")
    parser.add_argument("--force", action="store_true",
                        help="replace an earlier pack in --out (its shards, and nothing else) once the new one is "
                             "written whole: a reader finds one pack or the other, never a mix")
    parser.set_defaults(run=run)


def main(argv: Sequence[str] | None = None, prog: str = "raysal pack") -> int:
    """``raysal pack ARGS`` on its own (``python jobs/pack.py``)."""
    return run(parser_for(sys.modules[__name__], prog).parse_args(argv), prog)


def run(args: argparse.Namespace, prog: str) -> int:
    try:
        packed = pack(args.source, args.out, args.rows_per_shard, with_labels=not args.no_labels, force=args.force,
                      report=lambda line: print(line, flush=True))
    except (MissingInput, BadInput) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(format_summary(packed, args.source))
    return EXIT_OK
