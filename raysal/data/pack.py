"""Pack a folder or manifest of image files into Parquet shards that carry the images' bytes.

    raysal pack images --out pool-packed                        # class subfolders give the labels
    raysal pack run/pool.parquet --out run/pool-packed --rows-per-shard 5000

A pool of millions of small files is slow to list and to read (on object storage every file is a
request); shards of thousands of images each are read by Ray tasks in large sequential pieces,
the way large image sets are stored (LAION-style Parquet shards). A shard has the columns
image_id, uri (the original file, kept for reports and for the people who label), label (where
known) and image_bytes (the file as it is: nothing is decoded or re-encoded). Ids are the ones
the unpacked source has (a folder: a hash of the path inside it; a manifest: its image_id, else a
hash of its uri as written, as `raysal prepare` gives them), so selections and labels name the
same images as before packing. Files are read a row group at a time, so memory stays flat
whatever the pool's size; a file that cannot be read (missing, no permission, a URI no
filesystem reads) is packed without bytes, and a round reports it as skipped.

Labels read back as the source's would. A folder's class subfolders, and a CSV manifest's label
column, are class names, as `raysal prepare` reads them: a CSV label 7 is the class named "7"
(trimmed; an empty one is no label), which a round finds by name in data.classes, as it does in
the manifests `raysal prepare` writes from that CSV. A Parquet manifest's labels are kept as a
round reads that manifest itself: integers (or whole-number floats, as pandas writes an integer
column with gaps) are class indices, strings are class names.

A pack writes its shards into a folder of its own inside --out, and names them in a pointer
written last, once every one is written::

    pool-packed/_pack.json                                   {"shards": ["pack-.../part-00000.parquet", ...]}
    pool-packed/pack-20261203T171310-3f9a1c/part-00000.parquet

A pool's reader follows the pointer (``listing.folder_shards``), so it reads all the shards of
one pack: never a pack still being written, nor a mix of an earlier pack's shards and a new
one's. ``--force`` swaps the pointer (a rename on a local disk, one PUT on an object store, both
whole or not at all) and only then removes the earlier pack's shards: a pack killed at any
point leaves the earlier pack whole and readable, or the new one whole and read, and the next
pack removes what it left. A reader that listed the earlier pack's shards before the swap and
reads them after it finds them gone: it fails, naming the shard, rather than mix two packs.
A folder packed before the pointer (part-NNNNN.parquet directly in it) is read as it was, and
``--force`` replaces it the same way.

"""

from __future__ import annotations

import json
import os
import posixpath
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raysal import faults, storage
from raysal.data.listing import (
    PACK_FOLDER,
    PACK_POINTER,
    Listing,
    class_names,
    counted,
    examples,
    in_pack_folder,
    is_shard,
    list_images,
    pack_pointer,
    whole_numbers,
)
from raysal.errors import BadInput, MissingInput  # noqa: F401  (raised here; importable from here too)

ROWS_PER_SHARD = 10_000  # as LAION-style shards: ~100 MB of 10 KB images, read by one task
ROW_GROUP_ROWS = 1_024  # images held in memory at once; also the unit a row slice is read in
READ_THREADS = 16  # files read at once: reads wait on the disk or the network, not the CPU
PROGRESS_SECONDS = 5.0
STAGING = ".pack-staging"  # where raysal pack staged its shards before it wrote pointers; removed
SHARD_NAME = re.compile(r"part-\d{5,}\.parquet")  # a shard's name in its pack's folder (directly in --out before)


def shard_schema(label_type: pa.DataType | None) -> pa.Schema:
    """The columns of a packed shard; ``label_type`` None: no label column."""
    fields = [("image_id", pa.int64()), ("uri", pa.string())]
    fields += [("label", label_type)] if label_type is not None else []
    return pa.schema(fields + [("image_bytes", pa.binary())])


@dataclass(frozen=True)
class Packed:
    """What ``pack`` wrote."""

    out: str
    shards: list[str]
    images: int
    image_bytes_total: int  # of the images, as read
    unreadable: list[tuple[str, str]]  # (uri, reason) of files packed without bytes, the first few
    unreadable_count: int
    seconds: float


def pack_labels(listing: Listing, path: str) -> pa.Array | None:
    """The labels of a listing as a round will read them back (see the module docstring): None
    when no image has one."""
    if listing.labels is None:
        return None
    if listing.kind == "folder":  # class subfolders; null for an image outside one
        return None if listing.labels.null_count == len(listing.labels) else listing.labels
    if listing.kind == "csv":  # as raysal prepare reads the same file: class names
        return pa.array(class_names(listing.labels), pa.string())
    whole = whole_numbers(listing.labels)  # as manifest.labels_to_index reads this manifest
    if whole is None:
        raise BadInput(f"{path}: labels must be class names or class indices, got fractional numbers")
    return whole.cast(pa.int64()) if pa.types.is_integer(whole.type) else whole.cast(pa.string())


def _read(uri: str) -> tuple[bytes | None, str]:
    try:
        return storage.read_bytes(uri), ""
    except (OSError, ValueError, NotImplementedError) as exc:  # missing, permission, network, a scheme no
        return None, str(exc)  # filesystem reads (pa.ArrowInvalid): packed without bytes, reported by the round


def _out_files(fs: pafs.FileSystem, inner: str) -> tuple[list[str], list[str]]:
    """The files under ``inner`` that a manifest read from it would take for shards, as paths
    relative to it: (those of earlier packs, the others). An earlier pack's are in its folder, or
    named part-NNNNN.parquet directly in ``inner`` (as pack wrote them before its pointer)."""
    if fs.get_file_info(inner).type != pafs.FileType.Directory:
        return [], []
    infos = fs.get_file_info(pafs.FileSelector(inner, recursive=True))
    rel_paths = sorted(posixpath.relpath(i.path, inner) for i in infos if i.type == pafs.FileType.File)
    shards = [r for r in rel_paths if is_shard(r)]
    own = [r for r in shards if in_pack_folder(r) or SHARD_NAME.fullmatch(r)]
    return own, sorted(set(shards) - set(own))


def _check_out(fs: pafs.FileSystem, inner: str, out: str, force: bool) -> list[str] | None:
    """Refuse an --out where the new shards would be read together with other Parquet files, or
    that holds an earlier pack, without ``force``. Returns the earlier pack's shards (relative
    to ``inner``) when it has a pointer, else None."""
    if fs.get_file_info(inner).type == pafs.FileType.File:
        raise BadInput(f"--out: {out} is a file, not a folder")
    own, others = _out_files(fs, inner)
    if others:  # --force does not help: it replaces pack's own shards alone
        raise BadInput(f"--out: {out} holds {counted(len(others), 'Parquet file')} that pack did not write, e.g. "
                       f"{examples(others)}: a pool read from it would take them for shards too. Give the shards "
                       f"a folder of their own (e.g. --out {storage.join(out, 'pool-packed')})")
    current = pack_pointer(fs, inner)
    earlier = current if current is not None else [r for r in own if SHARD_NAME.fullmatch(r)]
    if earlier and not force:
        raise BadInput(f"--out: {out} already holds a pack of {counted(len(earlier), 'shard')}, e.g. "
                       f"{examples(earlier)}. Choose another --out, or pass --force to replace it (once the new "
                       "one is written whole)")
    return current


def _remove_unread(fs: pafs.FileSystem, inner: str, current: list[str] | None) -> None:
    """Remove what no reader of ``inner`` reads: the folders of packs that the pointer does not
    name (``current``: the shards it names; None: no pointer, so none is named), the shards that
    pack wrote directly in ``inner`` before pointers once a pointer names others, and the
    staging folder those packs left."""
    keep = {r.split("/", 1)[0] for r in current or []}
    for info in fs.get_file_info(pafs.FileSelector(inner, allow_not_found=True)):
        name = posixpath.basename(info.path)
        if info.type == pafs.FileType.Directory and (name == STAGING or (PACK_FOLDER.fullmatch(name)
                                                                         and name not in keep)):
            fs.delete_dir(info.path)
        elif info.type == pafs.FileType.File and current is not None and SHARD_NAME.fullmatch(name):
            fs.delete_file(info.path)


def _write_shard(fs: pafs.FileSystem, target: str, schema: pa.Schema, groups: Iterator[pa.Table]) -> None:
    """Write one shard into its pack's folder: a file cut short by a crash is named by no pointer."""
    with fs.open_output_stream(target) as sink, pq.ParquetWriter(sink, schema) as writer:
        for group in groups:
            writer.write_table(group, row_group_size=ROW_GROUP_ROWS)
    if isinstance(fs, pafs.LocalFileSystem):  # on disk before the pointer names it, should the machine stop
        _fsync(target)


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_pointer(fs: pafs.FileSystem, inner: str, shards: list[str], images: int) -> None:
    """Name ``shards`` (relative to ``inner``) as the pack ``inner`` holds: the one write that
    swaps an earlier pack for this one, whole or not at all."""
    if isinstance(fs, pafs.LocalFileSystem):
        _fsync(posixpath.join(inner, shards[0].split("/", 1)[0]))  # the folder's entries, before the pointer
    pointer = {"shards": shards, "images": images, "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    storage.write_whole(fs, posixpath.join(inner, PACK_POINTER), json.dumps(pointer, indent=1).encode())


def _pack_folder() -> str:
    """A new pack's folder name (``PACK_FOLDER``): its UTC start time, then a random part."""
    return f"pack-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"


@dataclass
class _Tally:
    """What the row groups written so far held, for the summary and the progress line."""

    done: int = 0
    image_bytes: int = 0
    unreadable: int = 0
    examples: list[tuple[str, str]] = field(default_factory=list)  # (uri, reason), the first few


def _row_groups(images: Listing, labels: pa.Array | None, first: int, stop: int, schema: pa.Schema,
                pool: ThreadPoolExecutor, tally: _Tally) -> Iterator[pa.Table]:
    """Rows [first, stop) of ``images`` with their ``labels`` and files' bytes, a row group at a time."""
    for lo in range(first, stop, ROW_GROUP_ROWS):
        hi = min(stop, lo + ROW_GROUP_ROWS)
        read = list(pool.map(_read, images.uris[lo:hi]))
        for uri, (data, reason) in zip(images.uris[lo:hi], read, strict=True):
            if data is None:
                tally.unreadable += 1
                if len(tally.examples) < 5:
                    tally.examples.append((uri, reason))
        data = pa.array([data for data, _ in read], pa.binary())
        tally.image_bytes += data.nbytes
        tally.done = hi
        label = [labels[lo:hi]] if labels is not None else []
        yield pa.Table.from_arrays([pa.array(images.image_ids[lo:hi], pa.int64()),
                                    pa.array(images.uris[lo:hi].tolist(), pa.string()), *label, data], schema=schema)


def pack(source: str, out: str, rows_per_shard: int = ROWS_PER_SHARD, with_labels: bool = True,
         force: bool = False, report: Callable[[str], None] | None = None) -> Packed:
    """Pack the images of ``source`` (see ``listing.list_images``: a folder's files by path, a
    manifest's rows as written) into ``out/pack-<time>-<random>/part-NNNNN.parquet``, and name
    them in ``out/_pack.json`` once every shard is written (see the module docstring).

    Args:
        rows_per_shard: images per shard; a shard is written in row groups of ``ROW_GROUP_ROWS``.
        with_labels: False when a folder's subfolders, or a manifest's label column, are not classes.
        force: replace an earlier pack in ``out``, once the new one is written: its shards are
            removed once the pointer names the new ones.
        report: called with a progress line every ``PROGRESS_SECONDS``.

    Raises:
        MissingInput, BadInput: before anything is written.
    """
    if rows_per_shard < 1:
        raise BadInput(f"--rows-per-shard: must be at least 1, got {rows_per_shard}")
    images = list_images(source, needs="a manifest to pack lists its images' files in uri, and may have image_id "
                                       "and label")
    labels = pack_labels(images, source) if with_labels else None
    fs, inner = storage.resolve(out)
    current = _check_out(fs, inner, out, force)
    _remove_unread(fs, inner, current)  # what a pack that died before its pointer left
    folder = _pack_folder()
    fs.create_dir(posixpath.join(inner, folder), recursive=True)
    schema = shard_schema(labels.type if labels is not None else None)
    n, start, tally, names = len(images), time.monotonic(), _Tally(), []
    if report is not None:
        report(f"pack: {n:,} images in {source}, into shards of {rows_per_shard:,} in {out}")
    named = False
    try:
        with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
            progress = threading.Event()
            ticker = threading.Thread(target=_tick, args=(progress, tally, n, start, names, report), daemon=True)
            ticker.start()
            try:
                for first in range(0, n, rows_per_shard):
                    name = f"{folder}/part-{len(names):05d}.parquet"
                    _write_shard(fs, posixpath.join(inner, name), schema,
                                 _row_groups(images, labels, first, min(n, first + rows_per_shard), schema, pool,
                                             tally))
                    names.append(name)
                    faults.point("pack:shard-staged")
            finally:
                progress.set()
                ticker.join()
        _write_pointer(fs, inner, names, n)
        named = True
        faults.point("pack:named")
    except BaseException:
        if not named:
            try:  # an interrupted pack leaves nothing; a killed one leaves its folder, named by no pointer
                fs.delete_dir(posixpath.join(inner, folder))
            except OSError:
                pass  # removed by the next pack
        raise
    try:  # the earlier pack (--force), now that no reader is sent to it
        _remove_unread(fs, inner, names)
    except OSError as exc:  # the new pack is whole and named all the same
        if report is not None:
            report(f"pack: the earlier pack in {out} could not all be removed ({exc}); the next pack removes it")
    return Packed(out, [storage.join(out, name) for name in names], n, tally.image_bytes, tally.examples,
                  tally.unreadable, time.monotonic() - start)


def _tick(stop: threading.Event, tally: _Tally, n: int, start: float, shards: list[str],
          report: Callable[[str], None] | None) -> None:
    """Report progress every ``PROGRESS_SECONDS`` until ``stop`` is set."""
    while report is not None and not stop.wait(PROGRESS_SECONDS):
        done = tally.done
        report(f"pack: {done:,} of {n:,} images ({done / n:.0%}), {len(shards)} shards written, "
               f"{done / (time.monotonic() - start):,.0f} images/s")


def format_summary(packed: Packed, source: str) -> str:
    """What the user reads: what was written, what could not be read, and how to use it."""
    out = storage.absolute(packed.out)
    lines = [f"packed {packed.images:,} images of {source} into {len(packed.shards)} shards "
             f"({packed.image_bytes_total / 2**20:,.1f} MiB of images) in {out}, in {packed.seconds:.1f} s"]
    if packed.unreadable_count:
        failed = "; ".join(f"{uri}: {reason}" for uri, reason in packed.unreadable[:3])
        lines.append(f"note: {packed.unreadable_count} files could not be read (e.g. {failed}); they are packed "
                     "without image bytes, and a round reports them as skipped")
    lines += ["", "Use it as a pool in the run's config:", "  [data.pool]", '  kind = "manifest"', f'  path = "{out}"',
              "or on the command line:",
              f"  --set data.pool.kind='\"manifest\"' --set data.pool.path='\"{out}\"'"]
    return "\n".join(lines)
