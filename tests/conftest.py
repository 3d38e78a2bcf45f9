"""Shared fixtures: one small local Ray session for the whole test run, tiny models and images."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import raysal.model.keras_env  # noqa: F401  (before anything imports TensorFlow)

from _servers import free_port

RAY_CPUS = 2
BUCKET = "raysal-test"  # the bucket s3_env creates; test modules that use it name it too


@pytest.fixture(scope="session")
def waiting_state(tmp_path_factory):
    """A demo run with its round-0 model trained, round 1 scored, selected and waiting for labels.

    Made once (a real job in a subprocess), with a relative ``--state`` as a user would type it;
    tests copy it, so they share one round-0 model.
    """
    from _jobs import FAST, HUMAN, run_job

    base = tmp_path_factory.mktemp("base")
    code, out = run_job("--state", "state", *FAST, *HUMAN, cwd=base)
    assert code == 5, out[-3000:]  # waiting for labels
    assert "round 1 is waiting for labels" in out
    return base / "state"


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray with the CPUs of a small CI machine; shut down at the end of the session."""
    import ray

    from raysal.model.keras_env import worker_env

    ray.init(address="local", num_cpus=RAY_CPUS, include_dashboard=False, runtime_env={"env_vars": worker_env()},
             log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> str:
    """A random-init small CNN (16x16 input, 3 classes) saved as a raysal checkpoint."""
    import tf_keras as keras

    from raysal.config import ModelConfig
    from raysal.model import models

    keras.utils.set_random_seed(1)
    cfg = ModelConfig(kind="small_cnn", input_size=16)
    model = models.build_model(cfg, num_classes=3)
    directory = str(tmp_path_factory.mktemp("tiny_model"))
    models.save_checkpoint(model, directory, cfg, ["a", "b", "c"])
    return directory


@pytest.fixture(scope="session")
def tiny_ensemble_checkpoint(tmp_path_factory) -> str:
    """``tiny_checkpoint``'s model with three heads (``model.heads = 3``), random init."""
    import tf_keras as keras

    from raysal.config import ModelConfig
    from raysal.model import models

    keras.utils.set_random_seed(2)
    cfg = ModelConfig(kind="small_cnn", input_size=16, heads=3)
    directory = str(tmp_path_factory.mktemp("tiny_ensemble"))
    models.save_checkpoint(models.build_model(cfg, num_classes=3), directory, cfg, ["a", "b", "c"])
    return directory


@pytest.fixture()
def image_folder(tmp_path) -> tuple[str, dict[str, str]]:
    """Class subfolders with good images in many modes and a set of broken files.

    Returns the folder and, per relative path, "ok" or a fragment of the expected skip reason.
    """
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
    files: dict[str, tuple[bytes, str]] = {}

    def save(img: Image.Image, fmt: str, **kw) -> bytes:
        buffer = io.BytesIO()
        img.save(buffer, format=fmt, **kw)
        return buffer.getvalue()

    files["a/rgb.jpg"] = (save(Image.fromarray(rgb), "JPEG"), "ok")
    files["a/gray.png"] = (save(Image.fromarray(rgb[..., 0]), "PNG"), "ok")
    files["b/rgba.png"] = (save(Image.fromarray(np.dstack([rgb, rgb[..., :1]])), "PNG"), "ok")
    files["b/cmyk.jpg"] = (save(Image.fromarray(rgb).convert("CMYK"), "JPEG"), "ok")
    files["c/palette.png"] = (save(Image.fromarray(rgb).convert("P"), "PNG"), "ok")
    files["c/sixteen.png"] = (save(Image.fromarray(rgb[..., 0].astype(np.uint16) * 257), "PNG"), "ok")
    good_jpeg = save(Image.fromarray(rgb), "JPEG")
    files["a/truncated.jpg"] = (good_jpeg[: len(good_jpeg) // 2], "corrupt or truncated")
    files["b/empty.png"] = (b"", "empty file")
    files["c/notes.txt"] = (b"these are not pixels\n" * 10, "not an image")
    files["c/garbage.jpg"] = (bytes(rng.integers(0, 255, 500, dtype=np.uint8)), "not an image")
    for rel, (data, _) in files.items():
        path = tmp_path / "images" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return str(tmp_path / "images"), {rel: outcome for rel, (_, outcome) in files.items()}


@pytest.fixture(scope="session")
def s3_env() -> dict[str, str]:
    """Start moto's S3 server; the environment that points pyarrow, boto3 and Ray workers at it."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail("moto S3 server did not start")
            time.sleep(0.2)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "test",
           "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    import boto3

    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1", aws_access_key_id="test",
                 aws_secret_access_key="test").create_bucket(Bucket=BUCKET)
    yield env
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture()
def s3(s3_env, monkeypatch) -> dict[str, str]:
    for key, value in s3_env.items():
        monkeypatch.setenv(key, value)
    from raysal import storage

    storage._filesystem.cache_clear()  # filesystems read the endpoint when created
    return s3_env


@pytest.fixture(scope="session")
def gpu_cluster():
    """A local Ray with one fake GPU slot (``ray start --head --num-gpus=1``, its own --temp-dir):
    Ray schedules GPU actors and workers as on a GPU node, and TensorFlow, finding no CUDA
    device, runs them on the CPU. Jobs join it through ``RAY_ADDRESS`` and its auth token."""
    from _cluster import start_head

    cluster = start_head(num_cpus=RAY_CPUS, num_gpus=1)
    cluster.wait_for_nodes(1)
    yield cluster
    cluster.stop()
