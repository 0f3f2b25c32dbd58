"""The train/inference check: its thresholds, what a run records, two runs
end to end (a healthy batch-norm network, and one whose moving statistics
never follow), and the saved model's behaviour with augmentation in the recipe."""

import numpy as np
import pytest

import keras

from conftest import TINY
from vggcifar import fsutil
from vggcifar.config import make_config
from vggcifar.data import load_synthetic
from vggcifar.metrics import MISMATCH_KEPT_SHARE, MISMATCH_TRAIN_LEAD, MODE_CHECK_IMAGES, mode_mismatch
from vggcifar.report import milestone_section, mismatch_message
from vggcifar.runs import train_run
from vggcifar.rundir import ResultDir, RunDir
from vggcifar.build import build_training
from vggcifar.loop import make_runner


#: A batch-norm VGG-11 that learns the synthetic set in four epochs of 20
#: steps (~4 s on two CPU cores with TensorFlow): no augmentation, dropout,
#: label smoothing or weight decay to slow it, a cosine schedule that ends
#: annealed. Measured with the vgg16-bn recipe's bn_momentum 0.9 on TensorFlow,
#: torch and JAX over several seeds: training accuracy 0.98-1.00 at epoch 4,
#: inference-mode accuracy 0.99-1.00, no epoch flagged; with bn_momentum
#: 0.99999 the same training accuracies and inference-mode accuracy 0.086-0.098
#: (one class predicted) at every epoch.
LEARNS = dict(model="vgg11", width=0.125, dense_units=32, dropout=0.0, augment=(), label_smoothing=0.0,
              weight_decay=0.0, schedule="cosine", warmup_epochs=0.0, lr=0.02, batch_size=32, epochs=4,
              val_split=0, precision="float32")
#: Training accuracy a learning run must reach: far enough above chance (0.1)
#: that the check can fire (MISMATCH_TRAIN_LEAD).
LEARNED = 0.8
#: How far inference-mode accuracy may fall below training-mode accuracy in
#: the healthy run (measured gaps at the last epoch: 0.02 at most, usually
#: inference ahead, as the weights improve during the epoch).
TRACKING_TOLERANCE = 0.05


@pytest.fixture(scope="module")
def learnable():
    # 640 images: all of them are the check's sample (fewer than MODE_CHECK_IMAGES).
    return load_synthetic(train=640, test=64, seed=5)


def batch_statistics_accuracy(model, x, y, batch_size: int) -> float:
    """Accuracy of ``model`` in training mode (batch norm normalises with each
    batch's own statistics), batch by batch as training computes it."""
    right = 0
    for start in range(0, len(x), batch_size):
        probs = keras.ops.convert_to_numpy(model(x[start:start + batch_size], training=True))
        right += int((np.asarray(probs).argmax(1) == y[start:start + batch_size]).sum())
    return right / len(x)


def inference_accuracy(model, x, y) -> float:
    return float((np.asarray(model.predict(x, verbose=0)).argmax(1) == y).mean())


@pytest.mark.parametrize("train, inference, classes, flagged", [
    (0.60, 0.10, 10, True),    # right in training, chance in inference
    (0.60, 0.22, 10, True),    # 0.22 - 0.1 <= 0.25 * 0.5
    (0.60, 0.23, 10, False),   # keeps more than a quarter of the lead
    (0.29, 0.10, 10, False),   # training barely above chance: nothing to compare
    (0.95, 0.94, 10, False),   # healthy
    (0.80, 0.50, 2, True),     # two classes: chance is 0.5
    (0.30, 0.01, 100, True),
])
def test_mismatch_thresholds(train, inference, classes, flagged):
    # Worked out by hand from the documented rule (more cases at the edges: test_metrics.py).
    assert mode_mismatch(train, inference, classes) is flagged


def test_run_records_inference_accuracy_on_its_training_sample(tmp_path):
    data = load_synthetic(train=96, test=32, seed=4)
    config = make_config("vgg16-bn", **TINY, epochs=1, batch_size=32, val_split=0, precision="float32",
                         augment=())
    run = tmp_path / "run"
    metrics = train_run(config, data, run, verbose=0, log=lambda *_: None)
    row = RunDir(run).read_history()[0]
    # Recompute from the saved model on the check's sample (every training image: fewer than the cap).
    assert len(data.x_train) < MODE_CHECK_IMAGES
    model = keras.models.load_model(run / "model.keras")
    acc = float((np.asarray(model.predict(data.x_train, verbose=0)).argmax(1) == data.y_train).mean())
    assert row["train_inference_accuracy"] == pytest.approx(acc, abs=1e-9)
    assert row["inference_mismatch"] == float(mode_mismatch(row["accuracy"], acc, 10))
    saved = fsutil.read_json(run / "metrics.json")
    assert saved["epoch"] == metrics["epoch"] == 1
    assert saved["train_inference_accuracy"] == pytest.approx(acc, abs=1e-9)
    assert saved["inference_mismatch"] is bool(row["inference_mismatch"])
    assert saved["mismatch_epochs"] == ([1] if row["inference_mismatch"] else [])


def test_healthy_batch_norm_run_agrees_in_both_modes(tmp_path, learnable):
    config = make_config("vgg16-bn", **LEARNS)
    assert config.batch_norm and config.bn_momentum == 0.9
    run = tmp_path / "run"
    logs = []
    train_run(config, learnable, run, verbose=0, log=logs.append)
    history = RunDir(run).read_history()
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    last = history[-1]
    assert last["accuracy"] >= LEARNED  # learned, so a mismatch could have been flagged
    assert last["accuracy"] - 0.1 >= MISMATCH_TRAIN_LEAD
    # Inference mode keeps up with training mode, and no epoch is flagged.
    assert last["train_inference_accuracy"] >= last["accuracy"] - TRACKING_TOLERANCE
    assert [h["inference_mismatch"] for h in history] == [0, 0, 0, 0]
    saved = fsutil.read_json(run / "metrics.json")
    assert saved["inference_mismatch"] is False and saved["mismatch_epochs"] == []
    assert saved["train_inference_accuracy"] == pytest.approx(last["train_inference_accuracy"], abs=1e-9)
    assert not [line for line in logs if "inference-mode accuracy" in line]
    assert "disagree" not in (run / "report.md").read_text()
    # The saved weights, both modes, the same images: batch statistics and the
    # moving statistics give the same answers.
    model = keras.models.load_model(run / "model.keras")
    in_inference = inference_accuracy(model, learnable.x_train, learnable.y_train)
    assert in_inference == pytest.approx(last["train_inference_accuracy"], abs=1e-9)
    in_training = batch_statistics_accuracy(model, learnable.x_train, learnable.y_train, config.batch_size)
    assert in_training >= LEARNED
    assert abs(in_inference - in_training) <= TRACKING_TOLERANCE


def test_moving_statistics_that_never_follow_are_flagged(tmp_path, learnable, capsys):
    # Batch norm as in the recipe, but its moving averages keep 0.99999 of
    # their old value at each step: after 80 steps the moving mean and variance
    # are still their initial 0 and 1, while training normalises with each
    # batch's own statistics and learns.
    config = make_config("vgg16-bn", **LEARNS, bn_momentum=0.99999)
    run = tmp_path / "run"
    train_run(config, learnable, run, verbose=0)  # the default log: print
    out = capsys.readouterr().out
    history = RunDir(run).read_history()
    chance = 1 / learnable.num_classes
    last = history[-1]
    assert last["accuracy"] >= LEARNED and last["accuracy"] > history[0]["accuracy"]
    # Inference mode stays near chance: every epoch in which training has
    # pulled ahead is flagged, the last one included.
    assert last["train_inference_accuracy"] - chance <= MISMATCH_KEPT_SHARE * (last["accuracy"] - chance)
    ahead = [h["epoch"] for h in history if h["accuracy"] - chance >= MISMATCH_TRAIN_LEAD]
    assert ahead and ahead[-1] == 4
    assert [h["epoch"] for h in history if h["inference_mismatch"]] == ahead
    saved = fsutil.read_json(run / "metrics.json")
    assert saved["inference_mismatch"] is True and saved["batch_norm"] is True
    assert saved["mismatch_epochs"] == ahead
    assert saved["train_accuracy"] == pytest.approx(last["accuracy"], abs=1e-9)
    assert saved["train_inference_accuracy"] == pytest.approx(last["train_inference_accuracy"], abs=1e-9)
    # One warning line for each flagged epoch, naming the cause.
    for h in history:
        line = "WARNING: " + mismatch_message(h["epoch"], h["accuracy"], h["train_inference_accuracy"],
                                              learnable.num_classes, batch_norm=True)
        assert (line in out.splitlines()) is bool(h["inference_mismatch"]), h["epoch"]
    assert "bn_momentum" in out
    report = (run / "report.md").read_text()
    assert "Training and inference disagree" in report and f"{last['accuracy']:.3f}" in report
    # The cause, in the saved model: the moving statistics did not move...
    model = keras.models.load_model(run / "model.keras")
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 8  # one after each conv of VGG-11
    for layer in norms:
        np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.moving_mean), 0, atol=0.01)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.moving_variance), 1, atol=0.01)
    # ...and the same weights are right with batch statistics, near chance without.
    in_inference = inference_accuracy(model, learnable.x_train, learnable.y_train)
    assert in_inference == pytest.approx(last["train_inference_accuracy"], abs=1e-9)
    in_training = batch_statistics_accuracy(model, learnable.x_train, learnable.y_train, config.batch_size)
    assert in_training >= LEARNED
    assert in_inference - chance <= MISMATCH_KEPT_SHARE * (in_training - chance)


def test_report_names_a_flagged_epoch():
    metrics = {"epoch": 3, "test_accuracy": 0.1, "test_loss": 2.3, "train_seconds": 5.0,
               "confusion_matrix": np.eye(10, dtype=int).tolist(), "class_names": [str(i) for i in range(10)],
               "train_accuracy": 0.8, "train_inference_accuracy": 0.11, "inference_mismatch": True,
               "batch_norm": True, "mismatch_epochs": [2, 3]}
    text = milestone_section(metrics, {"confusion": "cm.png"}, {})
    assert "Training and inference disagree" in text and "0.800" in text and "0.110" in text
    assert "bn_momentum" in text
    healthy = {**metrics, "inference_mismatch": False, "mismatch_epochs": []}
    assert "disagree" not in milestone_section(healthy, {"confusion": "cm.png"}, {})
    recovered = {**metrics, "inference_mismatch": False}
    assert "at epochs 2, 3" in milestone_section(recovered, {"confusion": "cm.png"}, {})


def test_augmentation_acts_in_training_only_and_is_not_saved(tmp_path):
    config = make_config("vgg16-bn", **TINY, batch_size=16, precision="float32")
    assert config.augment  # the recipe augments
    model, train_model = build_training(config, 10, steps_per_epoch=2)
    data = load_synthetic(train=32, test=16, seed=2)
    make_runner(train_model, data.x_train, data.y_train, 10).run(np.arange(32).reshape(2, 16))
    x = data.x_test
    # Augmentation is active in training: two passes through its layers differ.
    aug = [layer for layer in train_model.layers if layer.name.startswith("aug_")]
    assert [a.name for a in aug] == ["aug_crop", "aug_flip"]

    def augment(images, training):
        out = keras.ops.convert_to_tensor(images)
        for layer in aug:
            out = layer(out, training=training)
        return np.asarray(keras.ops.convert_to_numpy(out))

    first, second = augment(x, True), augment(x, True)
    assert not np.array_equal(first, second)
    assert np.array_equal(augment(x, False), x)  # identity at inference
    # The saved model: none of the augmentation layers, the same predictions on every call,
    # equal to the in-memory model in inference mode.
    path = tmp_path / "model.keras"
    ResultDir(path.parent).save_model(model)
    loaded = keras.models.load_model(path)
    names = {type(layer).__name__ for layer in loaded._flatten_layers()}
    assert not names & {"RandomTranslation", "RandomFlip", "RandomErasing", "RandomCrop", "RandomRotation"}
    a = np.asarray(loaded.predict(x, verbose=0))
    b = np.asarray(loaded.predict(x, verbose=0))
    assert np.array_equal(a, b)
    ref = np.asarray(keras.ops.convert_to_numpy(model(x, training=False)))
    np.testing.assert_allclose(a, ref, rtol=1e-5, atol=1e-6)
    # Every random layer left (dropout) is the identity in inference mode.
    rng = np.random.default_rng(0)
    random_layers = [layer for layer in loaded._flatten_layers(include_self=False)
                     if getattr(layer, "seed_generator", None) is not None]
    assert [layer.name for layer in random_layers] == ["fc1_dropout", "fc2_dropout"]
    for layer in random_layers:
        probe = rng.normal(size=(4, *layer.input.shape[1:])).astype("float32")
        out = np.asarray(keras.ops.convert_to_numpy(layer(probe, training=False)))
        assert np.array_equal(out, probe), layer.name
