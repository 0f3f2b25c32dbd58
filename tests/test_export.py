"""vggcifar export: ONNX, LiteRT (TFLite) and SavedModel artifacts of a saved
model, each run here in its own runtime (onnxruntime, LiteRT's interpreter,
tf.saved_model) against the Keras model's probabilities: the same most
probable class and probabilities within 1e-3, on the inputs model.keras takes."""

import numpy as np
import pytest

from vggcifar.cli import main
from vggcifar.data import load_synthetic

# Each runtime driven directly, as a user of the artifact would: the oracle
# does not go through vggcifar.export's own runner.


def onnx_probs(path, x):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (given,) = session.get_inputs()
    assert given.type == {"uint8": "tensor(uint8)", "float32": "tensor(float)"}[str(x.dtype)]
    assert given.shape[1:] == [32, 32, 3]
    return session.run(None, {given.name: x})[0]


def tflite_probs(path, x):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    (given,) = interpreter.get_input_details()
    assert given["dtype"] == x.dtype and list(given["shape_signature"]) == [-1, 32, 32, 3]
    interpreter.resize_tensor_input(given["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(given["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def saved_model_probs(path, x):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    (spec,) = loaded.signatures["serving_default"].structured_input_signature[1].values()
    assert spec.dtype.name == str(x.dtype) and spec.shape.as_list() == [None, 32, 32, 3]
    return loaded.serve(x).numpy()


RUNTIMES = {"onnx": (onnx_probs, "m.onnx"), "tflite": (tflite_probs, "m.tflite"),
            "saved_model": (saved_model_probs, "m_saved_model")}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """A tiny VGG-16 as a run saves it, its last layer fitted by least squares
    to the synthetic set's classes so that pictures have clear, different most
    probable classes (an untrained one answers within 1e-3 of 1/10 everywhere,
    where the top class would be a coin toss)."""
    import keras

    from vggcifar.model import build_vgg
    from vggcifar.rundir import ResultDir

    keras.utils.set_random_seed(0)  # the initial weights (build_vgg's seed is its dropout's)
    model = build_vgg("vgg16", width=0.0625, dense_units=16, rescale=1 / 255, input_layout="channels_last", seed=0)
    data = load_synthetic(400, 1, seed=9)
    features = keras.Model(model.inputs, model.get_layer("fc2_relu").output).predict(data.x_train, verbose=0)
    # Ridge regression on the standardised live features: an untrained deep
    # network's features are tiny and nearly collinear, and a plain least
    # squares fit of them takes weights of 1e4-1e7, which turn the runtimes'
    # float32 rounding into differences of whole probabilities.
    features = features.astype(np.float64)
    live = features.std(0) > 1e-9
    mean, scale = features[:, live].mean(0), features[:, live].std(0)
    design = np.hstack([(features[:, live] - mean) / scale, np.ones((len(features), 1))])
    targets = 8 * (np.eye(10)[data.y_train] - 0.1)  # logits
    solution = np.linalg.solve(design.T @ design + np.eye(design.shape[1]), design.T @ targets)
    kernel = np.zeros((features.shape[1], 10))
    kernel[live] = solution[:-1] / scale[:, None]
    bias = solution[-1] - (mean / scale) @ solution[:-1]
    model.get_layer("predictions").set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    folder = ResultDir(tmp_path_factory.mktemp("export"))
    folder.save_model(model)
    return folder.model


@pytest.fixture(scope="module")
def keras_reference(model_path):
    from vggcifar.inference import load_model, predict_probs

    x = load_synthetic(1, 12, seed=4).x_test
    probs = predict_probs(load_model(model_path, "float32"), x)
    top2 = np.sort(probs, axis=1)[:, -2:]
    # Each picture's class is clear (well above the runtimes' rounding), and not all the same.
    assert (top2[:, 1] - top2[:, 0]).min() > 1e-3 and len(set(probs.argmax(1))) > 1
    return x, probs


@pytest.mark.parametrize("fmt", sorted(RUNTIMES))
def test_each_format_runs_in_its_runtime_as_the_keras_model(fmt, model_path, keras_reference, tmp_path):
    from vggcifar.export import export_model

    x, expected = keras_reference
    run, name = RUNTIMES[fmt]
    done = export_model(model_path, fmt, tmp_path / name, check=False)
    assert done.path == tmp_path / name and done.checked == 0 and done.not_checked == "not asked"
    got = np.asarray(run(tmp_path / name, x))
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_array_equal(got.argmax(1), expected.argmax(1))
    assert np.abs(got - expected).max() < 1e-3
    # No temporary left beside it.
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_float_pixels_are_taken_as_they_are(model_path, keras_reference, tmp_path):
    # --input-dtype float32: pixels 0-255 as floats, not rounded to uint8 on the way in.
    from vggcifar.export import export_model

    x, expected = keras_reference
    export_model(model_path, "onnx", tmp_path / "f.onnx", input_dtype="float32", check=False)
    got = onnx_probs(tmp_path / "f.onnx", x.astype(np.float32))
    assert np.abs(got - expected).max() < 1e-3
    shifted = onnx_probs(tmp_path / "f.onnx", x.astype(np.float32) + 0.4)
    assert np.abs(shifted - got).max() > 0  # 0.4 more on every pixel is seen, not truncated away


def test_the_command_checks_the_artifact_in_its_runtime(model_path, tmp_path, capsys):
    out = tmp_path / "model.tflite"
    assert main(["export", str(model_path), "--format", "tflite", "--output", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"exported LiteRT (TFLite) to {out} (") and "taking uint8 pixels 0-255" in lines[0]
    assert lines[1].startswith("checked in the LiteRT interpreter: the same class as the Keras model on 16 pictures")
    assert out.stat().st_size > 10_000


def test_an_artifact_that_disagrees_is_not_kept(model_path, tmp_path, monkeypatch, capsys):
    from vggcifar import export

    monkeypatch.setattr(export, "run_artifact", _reversed)  # each picture's probabilities in reverse order
    assert main(["export", str(model_path), "--format", "onnx", "--output", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exported to ONNX is not kept: in onnxruntime, the artifact disagrees" in err
    assert list(tmp_path.iterdir()) == []


def _reversed(path, fmt, x):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0][:, ::-1]


def test_a_model_keras_cannot_export_says_why_in_one_line(model_path, tmp_path, monkeypatch, capsys):
    import keras

    def fail(self, *args, **kwargs):
        raise NotImplementedError("this layer has no conversion\nand more lines")

    monkeypatch.setattr(keras.Model, "export", fail)
    assert main(["export", str(model_path), "--format", "saved_model", "--output", str(tmp_path / "sm")]) == 2
    err = capsys.readouterr().err
    assert err == (f"vggcifar: error: {model_path} cannot be exported to TensorFlow SavedModel on the tensorflow "
                   "backend: this layer has no conversion\n")
    assert list(tmp_path.iterdir()) == []


def test_what_a_backend_cannot_write_is_refused_with_the_fix(monkeypatch):
    import importlib.util

    from vggcifar import export

    with pytest.raises(ValueError, match=r"from the tensorflow or torch backend, not jax: run the command again "
                                         r"with KERAS_BACKEND=tensorflow"):
        export.check_exportable("tflite", "jax")
    with pytest.raises(ValueError, match=r"from the tensorflow or jax backend, not torch"):
        export.check_exportable("saved_model", "torch")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tf2onnx" else real(name, *a))
    with pytest.raises(ValueError, match=r"through tf2onnx, which is not installed: pip install -e '.\[export\]'"):
        export.check_exportable("onnx", "tensorflow")
    export.check_exportable("saved_model", "tensorflow")


@pytest.mark.parametrize("fmt,output,message", [
    ("tflite", "m.onnx", "LiteRT (TFLite) model files end in .tflite; pass --output m.tflite"),
    ("onnx", "m", "ONNX model files end in .onnx; pass --output m.onnx"),
])
def test_an_output_of_the_wrong_kind_is_refused_before_exporting(model_path, tmp_path, fmt, output, message, capsys):
    assert main(["export", str(model_path), "--format", fmt, "--output", str(tmp_path / output)]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_run_folder_exports_its_model_unchecked_without_the_runtime(model_path, tmp_path, monkeypatch, capsys):
    # The fixture's folder holds model.keras as a run folder does.
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    assert main(["export", str(model_path.parent), "--format", "onnx", "--output", str(tmp_path / "r.onnx")]) == 0
    assert capsys.readouterr().out.splitlines()[1] == ("not checked in its runtime: onnxruntime is not installed "
                                                       "(pip install -e '.[export]')")
    assert (tmp_path / "r.onnx").stat().st_size > 10_000
    assert main(["export", str(tmp_path), "--format", "onnx", "--output", str(tmp_path / "x.onnx")]) == 2
    assert "holds no model.keras: it is not a finished run folder" in capsys.readouterr().err
