"""The Ray Data pipeline against the same work done in one process, on real Ray and real models."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pytest

from raysal.config import load_config
from raysal.data import decode as decoding
from raysal.data import sources
from raysal.data.images import decode_image
from raysal.model import scorer
from raysal.run import duplicates, scoring
from raysal.run import topk as distributed
from raysal.selection import criteria
from raysal.selection.topk import top_k_indices

pytestmark = pytest.mark.timeout(240)


def folder_config(root: str, criterion: str = "entropy"):
    return load_config("demo", {
        "data.classes": ["a", "b", "c"], "data.pool.kind": "folder", "data.pool.path": root, "data.pool.rows": "",
        "model.input_size": 16, "select.criterion": criterion, "score.batch_size": 4})


def score_folder(root: str, checkpoint: str, criterion: str) -> dict[int, dict]:
    cfg = folder_config(root, criterion)
    ds = sources.read_source(cfg.data.pool, cfg.data.classes, root)
    rows = scoring.score(decoding.decode(ds, cfg), checkpoint, cfg).take_all()
    return {int(r["image_id"]): r for r in rows}


def test_folder_with_broken_files_scores_good_and_reports_bad(ray_session, image_folder, tiny_checkpoint):
    root, expected = image_folder
    rows = score_folder(root, tiny_checkpoint, "entropy")
    by_path = {os.path.relpath(r["uri"], root): r for r in rows.values()}
    assert set(by_path) == set(expected)  # nothing lost: every file is scored or reported
    for rel, outcome in expected.items():
        row = by_path[rel]
        if outcome == "ok":
            assert row["error"] == "", rel
            assert np.isfinite(row["score"]) and 0 <= row["predicted"] < 3, rel
        else:
            assert outcome in row["error"], (rel, row["error"])
            assert np.isnan(row["score"]) and row["predicted"] == -1, rel
    labels = {rel: by_path[rel]["label"] for rel in expected}
    assert labels["a/rgb.jpg"] == 0 and labels["b/rgba.png"] == 1 and labels["c/sixteen.png"] == 2
    import ray.data

    scored = ray.data.from_items(list(rows.values()))
    selection = distributed.select_top_k(scored, 3)
    bad = sorted(rel for rel, outcome in expected.items() if outcome != "ok")
    assert sorted(os.path.relpath(u, root) for u in selection.skipped["uri"]) == bad
    assert all(reason for reason in selection.skipped["reason"])
    good_scores = [r["score"] for r in rows.values() if r["error"] == ""]
    assert selection.score_min == min(good_scores) and selection.score_max == max(good_scores)
    assert list(selection.rows["score"]) == sorted(good_scores, reverse=True)[:3]


@pytest.mark.parametrize("criterion", ["least_confidence", "smallest_margin", "entropy", "random"])
def test_ray_scores_equal_single_process_scores(ray_session, image_folder, tiny_checkpoint, criterion):
    from raysal.model import models

    root, expected = image_folder
    rows = score_folder(root, tiny_checkpoint, criterion)
    cfg = folder_config(root, criterion)
    table = sources.list_folder(root, cfg.data.classes, "data.pool")
    good = [i for i, uri in enumerate(table["uri"].to_pylist()) if expected[os.path.relpath(uri, root)] == "ok"]
    ids = table["image_id"].to_numpy()[good]
    images = np.stack([decode_image(open(table["uri"][i].as_py(), "rb").read(), 16) for i in good])
    model, _, _ = models.load_checkpoint(tiny_checkpoint)
    probs = models.predict_probs(model, images)  # [n, 3]
    want = criteria.get_criterion(criterion, cfg.seed)(probs, ids)
    got = np.array([rows[int(i)]["score"] for i in ids])
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_array_equal([rows[int(i)]["predicted"] for i in ids], probs.argmax(axis=1))
    np.testing.assert_allclose(np.stack([rows[int(i)]["top_probs"] for i in ids]),
                               -np.sort(-probs, axis=1), atol=1e-5)


@pytest.mark.timeout(300)
def test_distributed_top_k_equals_numpy_at_one_million_rows(ray_session):
    import ray.data

    rng = np.random.default_rng(7)
    n, k = 1_200_000, 5_000
    image_ids = rng.permutation(n * 3)[:n].astype(np.int64)
    scores = np.round(rng.random(n), 3)  # ~1,000 distinct values: many ties across blocks
    scores[rng.choice(n, 1_000, replace=False)] = np.nan  # skipped images
    exclude = image_ids[np.argsort(-np.nan_to_num(scores, nan=-1))[:3_000:3]]  # some of the best are labelled
    table = pa.table({"image_id": image_ids, "uri": image_ids.astype(str), "score": scores,
                      "predicted": np.zeros(n, np.int64)})
    ds = ray.data.from_arrow([table.slice(i, 100_000) for i in range(0, n, 100_000)])
    got = distributed.select_top_k(ds, k, exclude).rows
    want = top_k_indices(scores, image_ids, k, exclude)
    np.testing.assert_array_equal(got["image_id"], image_ids[want])
    np.testing.assert_array_equal(got["score"], scores[want])
    assert not np.isin(got["image_id"], exclude).any()
    # Cross-check the reference with a full sort: score descending, then image_id ascending.
    eligible = ~np.isnan(scores) & ~np.isin(image_ids, exclude)
    order = np.lexsort((image_ids[eligible], -scores[eligible]))[:k]
    np.testing.assert_array_equal(got["image_id"], image_ids[eligible][order])


def test_top_k_budget_above_what_is_left_selects_everything_left(ray_session):
    import ray.data

    table = pa.table({"image_id": np.arange(10, dtype=np.int64), "uri": [str(i) for i in range(10)],
                      "score": np.linspace(0, 1, 10), "predicted": np.zeros(10, np.int64)})
    got = distributed.select_top_k(ray.data.from_arrow(table), 50, np.array([9, 8])).rows
    assert got["image_id"].tolist() == [7, 6, 5, 4, 3, 2, 1, 0]


def test_an_image_that_cannot_be_read_is_reported_not_raised(tmp_path):
    """A missing file, and uris no filesystem takes: each row gets its reason; the batch goes on."""
    good = tmp_path / "good.png"
    from PIL import Image

    Image.new("RGB", (8, 8), (200, 10, 10)).save(good)
    uris = np.array([str(good), str(tmp_path / "missing.png"), "http://example.invalid/a.jpg", "foo://a.jpg"],
                    dtype=object)
    batch = decoding.decode_batch({"image_id": np.arange(4), "uri": uris, "label": np.zeros(4)}, 8)
    assert batch["error"][0] == "" and batch["image"].shape == (4, 8, 8, 3)
    assert all(e.startswith("unreadable: ") for e in batch["error"][1:]), batch["error"]


@pytest.mark.parametrize(("options", "tolerance"), [({"xla": True}, 1e-5), ({"mixed_precision": True}, 5e-3)])
def test_scorer_options_keep_the_scores(image_folder, tiny_checkpoint, options, tolerance):
    """XLA and mixed precision (GPU options) compute the same scores, here on the CPU, in-process."""
    root, expected = image_folder
    table = sources.list_folder(root, ["a", "b", "c"], "data.pool")
    batch = decoding.decode_batch({"image_id": table["image_id"].to_numpy(), "uri": table["uri"].to_numpy(
        zero_copy_only=False), "label": table["label"].to_numpy(zero_copy_only=False)}, 16)
    plain = scorer.Scorer(tiny_checkpoint, "entropy", 0, 4, 3)(batch)
    try:
        tuned = scorer.Scorer(tiny_checkpoint, "entropy", 0, 4, 3, **options)(batch)
    finally:
        import tf_keras as keras

        keras.mixed_precision.set_global_policy("float32")  # the policy is per process
    ok = batch["error"] == ""
    np.testing.assert_allclose(tuned["score"][ok], plain["score"][ok], atol=tolerance)
    assert np.isnan(tuned["score"][~ok]).all()


def test_a_non_finite_model_output_is_skipped_and_reported(ray_session, tiny_checkpoint, tmp_path):
    """An image whose probabilities are NaN is reported with a reason, never dropped or selected.

    The NaN comes from the head, after the backbone's last ReLU: a feature that is 0 for one
    uniform image and not for another gets a huge weight into class 0, whose bias is near
    float32's largest, so only the second image's logit overflows to inf and its softmax is NaN.
    (An inf weight in a convolution is no use: a fused conv + ReLU, as the scoring actor's traced
    function gets on some CPUs, turns the NaN into 0.)
    """
    import tf_keras as keras
    from PIL import Image

    from raysal.model import models

    model, model_cfg, classes = models.load_checkpoint(tiny_checkpoint)
    colours = [0, 60, 120, 200, 255]
    features = keras.Model(model.inputs, model.get_layer("head").input)(  # [5, f]: what the head sees
        np.stack([np.full((16, 16, 3), c, np.uint8) for c in colours]), training=False).numpy()
    finite, broken_colour, feature = next((u, v, j) for j in range(features.shape[1]) for u in range(len(colours))
                                          for v in range(len(colours)) if features[u, j] == 0 and features[v, j] > 0.05)
    head = model.get_layer("head")
    kernel, bias = head.get_weights()
    kernel[feature, 0], bias[0] = 3.0e38, 3.4e38  # 0 * 3e38 + 3.4e38 is finite; > 0.05 * 3e38 + 3.4e38 is inf
    head.set_weights([kernel, bias])
    broken = str(tmp_path / "model")
    models.save_checkpoint(model, broken, model_cfg, classes)
    root = tmp_path / "images"
    (root / "a").mkdir(parents=True)
    for name, index in (("bright", finite), ("black", broken_colour)):  # the names of the test as it was
        Image.fromarray(np.full((16, 16, 3), colours[index], np.uint8)).save(root / "a" / f"{name}.png")

    rows = {os.path.basename(r["uri"]): r for r in score_folder(str(root), broken, "entropy").values()}
    assert rows["bright.png"]["error"] == "" and np.isfinite(rows["bright.png"]["score"]), rows
    assert rows["black.png"]["error"] == scorer.NON_FINITE and np.isnan(rows["black.png"]["score"]), rows
    import ray.data

    selection = distributed.select_top_k(ray.data.from_items(list(rows.values())), 2)
    assert [os.path.basename(u) for u in selection.rows["uri"]] == ["bright.png"]
    assert list(selection.skipped["reason"]) == [scorer.NON_FINITE]


@pytest.mark.parametrize("n_blocks", [1, 6, 40])  # 40 blocks: the ids are cut into 5 parts
def test_duplicate_ids_are_found_across_blocks(ray_session, n_blocks):
    import ray.data

    ids = np.random.default_rng(n_blocks).permutation(4000).astype(np.int64)
    first, last = ids[0], ids[-2]
    ids[-1], ids[-3] = first, last  # two repeats, in other blocks than their originals (when there are several)
    blocks = [pa.table({"image_id": part}) for part in np.array_split(ids, n_blocks)]
    assert duplicates.duplicate_ids(ray.data.from_arrow(blocks)) == sorted([int(first), int(last)])
    assert duplicates.duplicate_ids(ray.data.from_arrow(blocks), limit=1) == [min(int(first), int(last))]
    assert duplicates.duplicate_ids(ray.data.from_arrow([pa.table({"image_id": np.arange(10)})])) == []


def test_score_files_grow_with_the_pool_and_a_small_pool_still_gets_several():
    assert scoring.score_file_rows(897) == 113  # the demo pool: up to 8 files, written as scoring goes
    assert scoring.score_file_rows(10_000) == 1250
    assert scoring.score_file_rows(1_000_000) == scoring.SCORE_FILE_ROWS == 4096
    assert scoring.score_file_rows(3) == 1 and scoring.score_file_rows(0) == 1


@pytest.mark.timeout(120)
def test_write_scores_collects_blocks_into_files_of_the_pools_size(ray_session, tmp_path):
    """100 blocks of 20 rows, as a scoring pass hands them to the write: 2,000 rows go into files
    of 250 rows or more (at most 8), not one file per block, and every row is written once."""
    import pyarrow.parquet as pq
    import ray.data

    blocks = [pa.table({"image_id": np.arange(i, i + 20, dtype=np.int64), "score": np.random.default_rng(i).random(20)})
              for i in range(0, 2_000, 20)]
    out = tmp_path / "scores"
    scoring.write_scores(ray.data.from_arrow(blocks), str(out), total=2_000)
    files = sorted(out.glob("*.parquet"))
    sizes = [pq.read_metadata(f).num_rows for f in files]
    assert 4 <= len(files) <= 9 and sum(sizes) == 2_000, sizes
    assert sorted(pq.read_table(out)["image_id"].to_pylist()) == list(range(2_000))
