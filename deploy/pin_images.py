"""Pin deploy/'s images by digest: every reference to a repository becomes REPO:TAG@sha256:DIGEST.

    python deploy/pin_images.py REPO[:TAG]@sha256:DIGEST ...   # write digests in
    python deploy/pin_images.py --check                        # refuse what is not pinned yet

A reference is an ``image:`` value in deploy/*.yaml (the RayJob inside its ConfigMap included) or
the image of a ``FROM`` in deploy/Dockerfile. An argument names a repository, as
``docker inspect --format '{{index .RepoDigests 0}}' IMAGE`` prints it after a push or a pull
(``your-registry/raysal@sha256:...``); each reference to that repository takes its digest and
keeps its tag, unless the argument gives one. The repository ships with the all-zero digest, a
placeholder no registry serves: ``--check`` refuses it and any reference without a digest.

Exit codes: 0 done (or nothing to refuse); 1 --check found a reference not pinned, or an argument
names a repository no file refers to (then nothing is written); 2 bad arguments.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

DEPLOY = Path(__file__).resolve().parent
PLACEHOLDER = "sha256:" + "0" * 64  # written in the repository until the images are pinned
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# `image: REF` (quoted or not, in a list item or not) in YAML, `FROM [--platform=...] REF` in a Dockerfile.
REFERENCE_LINE = re.compile(r"""^(?P<lead>[ \t]*(?:-[ \t]+)?image:[ \t]*["']?|FROM[ \t]+(?:--\S+[ \t]+)*)"""
                            r"""(?P<ref>[^\s"'#]+)""", re.MULTILINE | re.IGNORECASE)


@dataclass(frozen=True)
class Image:
    repo: str  # registry/path, e.g. alpine/k8s or registry.example.com:5000/raysal
    tag: str  # "" when none
    digest: str  # "sha256:<64 hex>", or "" when none

    def __str__(self) -> str:
        return self.repo + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


def parse_image(reference: str) -> Image:
    """``REPO[:TAG][@DIGEST]``: the tag follows the last colon after the last slash (a registry may have a port)."""
    name, _, digest = reference.partition("@")
    colon = name.rfind(":")
    if colon > name.rfind("/"):
        return Image(name[:colon], name[colon + 1:], digest)
    return Image(name, "", digest)


def image_references(text: str) -> list[Image]:
    """The images a manifest or Dockerfile refers to, in order."""
    return [parse_image(match["ref"]) for match in REFERENCE_LINE.finditer(text)]


def pin(text: str, pinned: Image) -> tuple[str, int]:
    """``text`` with every reference to ``pinned.repo`` pinned to its digest, and how many there were."""
    count = 0

    def rewrite(match: re.Match[str]) -> str:
        nonlocal count
        image = parse_image(match["ref"])
        if image.repo != pinned.repo:
            return match[0]
        count += 1
        return match["lead"] + str(Image(image.repo, pinned.tag or image.tag, pinned.digest))

    return REFERENCE_LINE.sub(rewrite, text), count


def unpinned(text: str) -> list[str]:
    """The references in ``text`` without a digest, or with the placeholder."""
    return [str(image) for image in image_references(text)
            if not DIGEST.fullmatch(image.digest) or image.digest == PLACEHOLDER]


def deploy_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.yaml")) + [folder / "Dockerfile"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deploy/pin_images.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="*", metavar="REPO[:TAG]@sha256:DIGEST")
    parser.add_argument("--check", action="store_true", help="exit 1 while a reference has no real digest")
    parser.add_argument("--dir", type=Path, default=DEPLOY, help="the folder of the manifests (default: deploy/)")
    args = parser.parse_args(argv)
    if not args.images and not args.check:
        parser.error("give images to pin, or --check")
    pinned = [parse_image(arg) for arg in args.images]
    for arg, image in zip(args.images, pinned, strict=True):
        if not DIGEST.fullmatch(image.digest) or image.digest == PLACEHOLDER:
            parser.error(f"{arg} is not REPO[:TAG]@sha256:<64 hex digits>")

    texts = {path: path.read_text() for path in deploy_files(args.dir)}
    counts = dict.fromkeys((image.repo for image in pinned), 0)
    for path, text in texts.items():
        for image in pinned:
            text, count = pin(text, image)
            counts[image.repo] += count
        texts[path] = text
    if missing := [repo for repo, count in counts.items() if count == 0]:
        print(f"no file in {args.dir} refers to {', '.join(missing)}: nothing written", file=sys.stderr)
        return 1
    for path, text in texts.items():
        if text != path.read_text():
            path.write_text(text)
    for image in pinned:
        print(f"{image.repo}: {counts[image.repo]} references pinned to {image.digest}")

    if args.check:
        left = [f"{path.name}: {ref}" for path, text in texts.items() for ref in unpinned(text)]
        for line in left:
            print(f"not pinned: {line}", file=sys.stderr)
        return 1 if left else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
