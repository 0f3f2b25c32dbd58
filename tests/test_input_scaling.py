"""How a model maps its uint8 pixels (config.input_scaling), and the kernels centred at initialisation:
the statistics come from the run's own training split and travel inside the saved model, which plain
Keras loads and which predicts what the run measured; the spec still rescales."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import QUIET, TINY
from vggcifar import build, fsutil
from vggcifar.config import make_config
from vggcifar.data import load_synthetic
from vggcifar.rundir import RunDir
from vggcifar.runs import train_run


def test_channel_statistics_equal_numpy_in_float64():
    images = np.random.default_rng(1).integers(0, 256, (37, 8, 5, 3)).astype(np.uint8)
    images[..., 1] //= 4  # channels of different means and spreads
    mean, variance = build.channel_statistics(images)
    as_float = images.astype(np.float64)
    np.testing.assert_allclose(mean, as_float.mean(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(variance, as_float.var(axis=(0, 1, 2)), rtol=1e-10)
    with pytest.raises(ValueError, match="Expected uint8 images"):
        build.channel_statistics(as_float)


def test_a_flat_channel_is_divided_by_one_and_a_rescaling_config_has_no_statistics():
    images = np.zeros((4, 6, 6, 3), np.uint8)
    images[..., 0] = 200
    images[..., 2] = np.arange(6)
    config = make_config("spec-he", input_scaling="standardize")
    mean, variance = build.input_statistics(config, images)
    assert mean[:2] == [200.0, 0.0] and variance[:2] == [1.0, 1.0] and variance[2] == pytest.approx(35 / 12)
    assert build.input_statistics(make_config("spec-he"), images) is None
    # Without images (a bare model): a uniform pixel's statistics.
    assert build.input_statistics(config, None) == ([127.5] * 3, [(256**2 - 1) / 12] * 3)


def test_the_spec_rescales_and_builds_no_standardizing_layer():
    config = make_config("spec")
    assert config.input_scaling == "rescale" and not config.centred_kernels and config.head_initializer is None
    names = [layer.name for layer in build.build_model(make_config("spec", **TINY), 10).layers]
    assert "rescale" in names and "standardize" not in names


def test_standardizing_layer_is_numpys_per_channel_standardization():
    images = np.random.default_rng(2).integers(0, 256, (6, 32, 32, 3)).astype(np.uint8)
    images[..., 0] //= 3
    config = make_config("spec-he", **TINY, input_scaling="standardize", precision="mixed_bfloat16")
    with build.dtype_policy("mixed_bfloat16"):
        model = build.build_model(config, 10, images)
    import keras

    layer = model.get_layer("standardize")
    assert layer.compute_dtype == "float32"  # full precision whatever the model computes in
    out = keras.Model(model.inputs, layer.output).predict_on_batch(images)
    as_float = images.astype(np.float64)
    expected = (as_float - as_float.mean(axis=(0, 1, 2))) / as_float.std(axis=(0, 1, 2))
    np.testing.assert_allclose(np.asarray(out, np.float64), expected, atol=1e-5)


def test_centred_kernels_sum_to_zero_over_their_fan_in_at_the_gain():
    import keras

    plain = make_config("spec-he", **TINY, seed=4)
    centred = make_config("spec-he", **TINY, seed=4, centred_kernels=True)
    before, _ = build.build_training(plain, 10, 5)
    after, _ = build.build_training(centred, 10, 5)
    layers = [(a, b) for a, b in zip(before.layers, after.layers) if isinstance(a, (keras.layers.Conv2D,
                                                                                      keras.layers.Dense))]
    assert len(layers) == 16
    for i, (a, b) in enumerate(layers):
        k0, k1 = (keras.ops.convert_to_numpy(x.kernel).astype(np.float64) for x in (a, b))
        fan_in = tuple(range(k0.ndim - 1))
        np.testing.assert_allclose(k1.sum(axis=fan_in), 0, atol=1e-5)
        gain = 1.0 if i == 0 else build.CENTRED_GAIN  # the first takes pixels, not relu outputs
        np.testing.assert_allclose(k1, (k0 - k0.mean(axis=fan_in, keepdims=True)) * gain, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def standardized_run(tmp_path_factory):
    data = load_synthetic(train=160, test=48, seed=6)
    run = tmp_path_factory.mktemp("standardized") / "run"
    config = make_config("spec-he", **TINY, epochs=1, batch_size=32, val_split=32, precision="float32",
                         input_scaling="standardize", centred_kernels=True)
    train_run(config, data, run, **QUIET)
    return data, run


def test_a_run_standardizes_by_its_training_split_and_saves_the_statistics(standardized_run):
    import keras

    data, run = standardized_run
    model = keras.saving.load_model(RunDir(run).model)
    layer = model.get_layer("standardize").get_config()
    trained_on = data.x_train[:-32].astype(np.float64)  # the validation split's 32 images left out
    np.testing.assert_allclose(layer["mean"], trained_on.mean(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(layer["variance"], trained_on.var(axis=(0, 1, 2)), rtol=1e-10)
    whole = data.x_train.astype(np.float64).mean(axis=(0, 1, 2))
    assert not np.allclose(layer["mean"], whole, rtol=1e-6)
    assert fsutil.read_json(run / "config.json")["input_scaling"] == "standardize"


def test_a_standardized_model_loads_in_plain_keras_and_predicts_the_runs_results(standardized_run, tmp_path):
    data, run = standardized_run
    # A fresh interpreter that imports keras alone: no custom objects, no vggcifar.
    x_test = tmp_path / "x_test.npy"
    np.save(x_test, data.x_test)
    code = ("import json, sys, numpy as np, keras\n"
            "m = keras.saving.load_model(sys.argv[1])\n"
            "print(json.dumps(m.predict(np.load(sys.argv[2]), verbose=0).argmax(1).tolist()))\n")
    out = subprocess.run([sys.executable, "-c", code, str(RunDir(run).model), str(x_test)], capture_output=True,
                         text=True, check=True)
    predicted = np.array(json.loads(out.stdout.strip().splitlines()[-1]))
    saved = fsutil.read_json(run / "metrics.json")
    assert (predicted == data.y_test).mean() == pytest.approx(saved["test_accuracy"])
    from sklearn.metrics import confusion_matrix

    np.testing.assert_array_equal(confusion_matrix(data.y_test, predicted, labels=range(10)),
                                  saved["confusion_matrix"])


def test_a_bare_standardizing_model_takes_a_uniform_pixels_statistics():
    import vggcifar

    model = vggcifar.build_model("spec-he", **TINY, input_scaling="standardize")
    layer = model.get_layer("standardize").get_config()
    assert layer["mean"] == [127.5] * 3 and layer["variance"] == [(256**2 - 1) / 12] * 3
