"""A saved model whose Lambda layer would run code is refused before it is loaded, in every
format Keras saves, unless ``model.trust_code``: the code never runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from raysal.config import ModelConfig
from raysal.errors import ModelRefused

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(300)

_MAKE = """
import sys
import raysal.model.keras_env
import tf_keras as keras
marker, out = sys.argv[1], sys.argv[2]

def touch(x, marker=marker):  # what an attacker's Lambda would do, harmlessly: leave a file
    open(marker, "a").close()
    return x

inputs = keras.Input((16, 16, 3))
x = keras.layers.Lambda(touch, name="innocent_scaling")(keras.layers.Rescaling(1 / 255)(inputs))
x = keras.layers.GlobalAveragePooling2D()(x)
model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
model.save(out) if not out.endswith("saved") else model.save(out, save_format="tf")
"""


@pytest.fixture(scope="module")
def lambda_models(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """The same Lambda model as .h5, .keras and a SavedModel folder; each with its own marker,
    removed after saving (saving calls the layer)."""
    folder = tmp_path_factory.mktemp("lambda")
    made = {}
    for kind, name in (("h5", "model.h5"), ("keras", "model.keras"), ("savedmodel", "saved")):
        marker = folder / f"ran-{kind}"
        done = subprocess.run([sys.executable, "-c", _MAKE, str(marker), str(folder / name)], capture_output=True,
                              text=True, timeout=240, cwd=REPO)
        assert done.returncode == 0, done.stderr[-3000:]
        marker.unlink(missing_ok=True)
        made[kind] = (folder / name, marker)
    return made


@pytest.mark.parametrize("kind", ["h5", "keras", "savedmodel"])
def test_a_lambda_model_is_refused_and_its_code_never_runs(lambda_models, kind):
    from raysal.model import models

    path, marker = lambda_models[kind]
    cfg = ModelConfig(kind="keras", path=str(path), input_size=16, use="classifier")
    with pytest.raises(ModelRefused, match=r"has layers that run Python code stored in the file, "
                                           r"'innocent_scaling' \(Lambda\).*model.trust_code = true"):
        models.build_model(cfg, 3)
    assert not marker.exists()


def test_a_trusted_lambda_model_loads_and_its_code_runs(lambda_models):
    from raysal.model import models

    path, marker = lambda_models["h5"]
    model = models.build_model(ModelConfig(kind="keras", path=str(path), input_size=16, use="classifier",
                                           trust_code=True), 3)
    assert model.output_shape == (None, 3) and marker.exists()  # trusted: Keras ran it, as it was told
    marker.unlink()


def test_a_round_with_a_lambda_model_exits_2_before_anything_runs(lambda_models, tmp_path):
    from _jobs import run_job

    path, marker = lambda_models["h5"]
    code, out = run_job("--state", str(tmp_path / "state"), "--set", 'model.kind="keras"', "--set",
                        f'model.path="{path}"', "--set", 'model.use="classifier"', "--set", "model.input_size=16",
                        "--set", "train.head_epochs=0", timeout=120)
    assert code == 2, out[-3000:]
    assert "'innocent_scaling' (Lambda)" in out and "Traceback" not in out
    assert not marker.exists() and not (tmp_path / "state").exists()


_MAKE_CUSTOM = """
import sys
import raysal.model.keras_env
import tf_keras as keras
out = sys.argv[1]

@keras.saving.register_keras_serializable(package="elsewhere")
class Scale(keras.layers.Layer):  # a custom object: loading it imports the class its config names
    def call(self, x):
        return x / 255.0

inputs = keras.Input((16, 16, 3))
x = Scale(name="custom_scaling")(inputs) * 1.0  # and a TensorFlow op: a built-in TFOpLambda layer
x = keras.layers.GlobalAveragePooling2D()(x)
model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
model.save(out) if not out.endswith("saved") else model.save(out, save_format="tf")
"""


@pytest.mark.parametrize("kind", ["h5", "keras", "savedmodel"])
def test_a_model_with_a_custom_layer_is_refused_naming_it(tmp_path, kind):
    from raysal.model import models

    path = tmp_path / {"h5": "model.h5", "keras": "model.keras", "savedmodel": "saved"}[kind]
    done = subprocess.run([sys.executable, "-c", _MAKE_CUSTOM, str(path)], capture_output=True, text=True,
                          timeout=240, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    cfg = ModelConfig(kind="keras", path=str(path), input_size=16, use="classifier")
    with pytest.raises(ModelRefused, match=r"no Keras built-in \(custom objects\), 'custom_scaling' \("):
        models.build_model(cfg, 3)


def test_a_model_of_built_in_layers_and_tensorflow_ops_is_not_refused(tmp_path):
    """The functional API turns TensorFlow ops into TFOpLambda layers: built-in, no code stored."""
    import tf_keras as keras

    from raysal.model import models

    inputs = keras.Input((16, 16, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs / 255.0)
    keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x[:, :3])).save(tmp_path / "model.keras")
    cfg = ModelConfig(kind="keras", path=str(tmp_path / "model.keras"), input_size=16, use="classifier")
    assert models.build_model(cfg, 3).output_shape == (None, 3)


def test_trust_code_is_only_for_keras_models():
    from raysal.config import ConfigError

    with pytest.raises(ConfigError, match="model.trust_code: is only read when model.kind = 'keras'"):
        ModelConfig(kind="small_cnn", trust_code=True)


def test_a_published_model_whose_file_changed_is_refused(tiny_checkpoint, tmp_path, s3):
    """model.json records the sha256 of the files published beside it; a file changed since (a
    byte, or another model's weights) is refused before it is loaded, locally and on S3."""
    import json
    import shutil

    import boto3

    from raysal.model import embeddings, models

    local = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, local)
    recorded = json.loads((local / embeddings.CONFIG_FILE).read_text())[embeddings.FILE_DIGESTS]
    assert set(recorded) == {path.name for path in local.iterdir()} - {embeddings.CONFIG_FILE}
    assert models.WEIGHTS_FILE in recorded
    models.load_checkpoint(str(local))
    weights = local / models.WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:-1] + bytes([weights.read_bytes()[-1] ^ 1]))
    with pytest.raises(ModelRefused, match=f"{models.WEIGHTS_FILE} is not the file that was published"):
        models.load_checkpoint(str(local))

    client = boto3.client("s3")
    prefix = f"tampered-{tmp_path.name}"
    for path in Path(tiny_checkpoint).iterdir():
        client.upload_file(str(path), "raysal-test", f"{prefix}/{path.name}")
    uri = f"s3://raysal-test/{prefix}"
    embeddings.check_files(uri)
    client.put_object(Bucket="raysal-test", Key=f"{prefix}/{models.WEIGHTS_FILE}", Body=b"other weights")
    with pytest.raises(ModelRefused, match=f"{models.WEIGHTS_FILE} is not the file that was published"):
        embeddings.check_files(f"{uri}/")  # another spelling of the folder: checked again, not from memory


@pytest.mark.timeout(600)
def test_a_round_whose_last_model_changed_exits_2_before_scoring(waiting_state, tmp_path):
    from raysal.model import models

    from _jobs import FAST, copy_state, run_job

    state = copy_state(waiting_state, tmp_path / "state", keep_rounds=False)
    weights = state / "models" / "0000" / models.WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # the same size: a file of another size would make the model look half-published (retrained)
    weights.write_bytes(bytes(data))
    code, out = run_job("--state", str(state), *FAST, env={"RAYSAL_PROGRESS_S": "1"})  # a scored batch would show
    assert code == 2, out[-3000:]
    assert f"{models.WEIGHTS_FILE} is not the file that was published" in out and "stage score: started" in out
    assert "scoring:" not in out  # no image was scored with it
    assert not list((state / "rounds" / "0001").glob("g*/scores/*"))
