"""A run's model.keras is a float32 network whatever precision it trained in:
it loads with float32 policies in plain Keras, in a process that never imports
vggcifar, on TensorFlow and on JAX; evaluate and predict choose the precision
they compute in per machine (--precision auto|float32|mixed_bfloat16)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import TINY_ARGS

from vggcifar import fsutil
from vggcifar.cli import main
from vggcifar.data import load_synthetic

# A fresh interpreter that loads the model with Keras alone and prints every
# layer's policy, its probabilities on the pictures, and whether vggcifar was
# ever imported.
PLAIN_KERAS = """
import json, sys
import numpy as np
import keras
model = keras.saving.load_model(sys.argv[1])
x = np.load(sys.argv[2])
print(json.dumps({"backend": keras.backend.backend(),
                  "policies": sorted({layer.dtype_policy.name for layer in model.layers}),
                  "probs": np.asarray(model.predict_on_batch(x), np.float64).tolist(),
                  "vggcifar": any(m.split(".")[0] == "vggcifar" for m in sys.modules)}))
"""


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory):
    """A tiny run trained in mixed bfloat16, and test pictures."""
    root = tmp_path_factory.mktemp("bf16")
    run = root / "run"
    assert main(["train", "--dataset", "synthetic", "--limit-train", "96", "--limit-test", "32", "--epochs", "1",
                 "--batch-size", "32", "--precision", "mixed_bfloat16", "--quiet", "--run-dir", str(run),
                 *TINY_ARGS]) == 0
    assert json.loads((run / "config.json").read_text())["precision"] == "mixed_bfloat16"
    pictures = root / "x.npy"
    np.save(pictures, load_synthetic(1, 8, seed=3).x_test)
    return run, pictures


@pytest.mark.parametrize("keras_backend", ["tensorflow", "jax"])
def test_a_bfloat16_run_saves_a_float32_model_that_plain_keras_loads(bf16_run, keras_backend):
    from vggcifar.inference import load_model, predict_probs

    run, pictures = bf16_run
    env = {**os.environ, "KERAS_BACKEND": keras_backend}
    out = subprocess.run([sys.executable, "-c", PLAIN_KERAS, str(run / "model.keras"), str(pictures)], env=env,
                         capture_output=True, text=True, timeout=300, cwd=run)
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["backend"] == keras_backend and seen["vggcifar"] is False
    assert seen["policies"] == ["float32"]
    # The same numbers as vggcifar's own float32 load of the file.
    x = np.load(pictures)
    ours = predict_probs(load_model(run / "model.keras", "float32"), x)
    np.testing.assert_allclose(seen["probs"], ours, rtol=1e-4, atol=1e-6)


def test_load_model_computes_in_the_precision_asked(bf16_run):
    from vggcifar.inference import load_model, predict_probs

    run, pictures = bf16_run
    x = np.load(pictures)
    f32 = load_model(run / "model.keras", "float32")
    bf16 = load_model(run / "model.keras", "mixed_bfloat16")
    convs = [layer for layer in bf16.layers if layer.name.endswith("conv1")]
    assert convs and {layer.compute_dtype for layer in convs} == {"bfloat16"}
    assert {layer.variable_dtype for layer in convs} == {"float32"}
    assert bf16.get_layer("softmax").compute_dtype == "float32"  # the output stays float32
    assert {layer.compute_dtype for layer in f32.layers[1:]} == {"float32"}
    p32, p16 = predict_probs(f32, x), predict_probs(bf16, x)
    assert p16.dtype == np.float32 and np.abs(p32 - p16).max() < 0.05
    assert not np.array_equal(p32, p16)  # it did compute in bfloat16
    with pytest.raises(ValueError, match="Received: precision='float16'"):
        load_model(run / "model.keras", "float16")


def test_a_model_saved_with_mixed_policies_is_loaded_in_float32(tmp_path):
    # As runs saved bfloat16-trained models before: every layer's policy in the file.
    import keras

    from vggcifar.inference import load_model, predict_probs
    from vggcifar.model import build_vgg

    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        old = build_vgg("vgg11", width=0.0625, dense_units=8, rescale=1 / 255, input_layout="channels_last")
    finally:
        keras.config.set_dtype_policy("float32")
    old.save(tmp_path / "old.keras")
    assert old.get_layer("block1_conv1").dtype_policy.name == "mixed_bfloat16"
    model = load_model(tmp_path / "old.keras", "float32")
    assert {layer.dtype_policy.name for layer in model.layers[1:]} == {"float32"}
    assert model.inputs[0].dtype == "uint8"
    x = load_synthetic(1, 4).x_test
    f32 = build_vgg("vgg11", width=0.0625, dense_units=8, rescale=1 / 255, input_layout="channels_last")
    f32.set_weights(old.get_weights())
    np.testing.assert_allclose(predict_probs(model, x), predict_probs(f32, x), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("bfloat16_unit,expected", [(None, "float32"), ("avx512_bf16", "mixed_bfloat16")])
def test_auto_follows_the_machine(bf16_run, monkeypatch, bfloat16_unit, expected):
    # A machine without accelerators: its CPU's bfloat16 units decide, as in training.
    from vggcifar import backend
    from vggcifar.inference import load_model

    run, _ = bf16_run
    monkeypatch.setattr(backend, "accelerators", lambda *_: backend.Accelerators())
    monkeypatch.setattr(backend, "cpu_bfloat16", lambda *_: bfloat16_unit)
    model = load_model(run / "model.keras", "auto")
    assert model.get_layer("block1_conv1").dtype_policy.name == expected


def test_evaluate_and_predict_take_a_precision(bf16_run, tmp_path, capsys):
    from PIL import Image

    run, pictures = bf16_run
    for precision in ("float32", "mixed_bfloat16"):
        out = tmp_path / precision
        assert main(["evaluate", str(run), "--precision", precision, "--out", str(out)]) == 0
        assert f"computed in {precision}; files in {out}" in capsys.readouterr().out
        assert fsutil.read_json(out / "metrics.json")["precision"] == precision
    picture = tmp_path / "p.png"
    Image.fromarray(np.load(pictures)[0]).save(picture)
    answers = {}
    for precision in ("float32", "mixed_bfloat16"):
        assert main(["predict", str(run / "model.keras"), str(picture), "--json", "--precision", precision]) == 0
        answers[precision] = json.loads(capsys.readouterr().out)[0]["top_k"]
    assert answers["float32"] != answers["mixed_bfloat16"]  # two computations, not one
    with pytest.raises(SystemExit):
        main(["predict", str(run / "model.keras"), str(picture), "--precision", "mixed_float16"])
