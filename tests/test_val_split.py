"""The validation split: one rule for every training set size, recorded in the
run folder, and the test set kept for the reports when a split is held out."""

import numpy as np
import pytest

from conftest import QUIET, TINY, TINY_ARGS
from vggcifar import fsutil
from vggcifar.cli import main
from vggcifar.config import effective_val_split, make_config
from vggcifar.data import load_synthetic
from vggcifar.metrics import cross_entropy
from vggcifar.runs import train_run
from vggcifar.rundir import RunDir



@pytest.mark.parametrize(
    "recipe, overrides, train_images, expected",
    [
        ("spec", {}, 50000, 0),  # the spec validates on the test set
        ("spec-he", {}, 50000, 5000),  # the usual 5,000 of CIFAR-10's 50,000
        ("spec-he", {}, 300, 30),  # a small set: 10% of it
        ("vgg16-bn", {}, 300, 30),  # 10%, and 270 left >= batch 256
        ("vgg16-bn", {}, 280, 24),  # 10% would leave 252 < batch 256: 24 keeps 256
        ("spec-he", {}, 100, 0),  # fewer images than a batch: no split
        ("spec-he", {"val_split": 0}, 50000, 0),  # 0: no split
        ("spec-he", {"val_split": 268, "batch_size": 32}, 300, 268),  # explicit: exactly N, 32 left
        ("spec", {"val_split": 40, "validate_on_test": False}, 300, 40),
    ],
)
def test_effective_split_rule(recipe, overrides, train_images, expected):
    assert effective_val_split(make_config(recipe, **overrides), train_images) == expected


def test_explicit_split_larger_than_the_set_is_an_error():
    with pytest.raises(ValueError, match=r"of the 300 training images.*Received: val_split=400"):
        effective_val_split(make_config("spec-he", val_split=400), 300)
    # Leaving fewer than one batch to train on is refused too.
    with pytest.raises(ValueError, match="batch_size=128"):
        effective_val_split(make_config("spec-he", val_split=200), 300)


def test_split_with_validation_on_the_test_set_is_refused():
    with pytest.raises(ValueError, match="to be 0 while validate_on_test is true"):
        make_config("spec", val_split=100, validate_on_test=True)
    # Asked for alone, a held-out split replaces the spec's validation on the test set.
    assert make_config("spec", val_split=100).validate_on_test is False
    assert make_config("spec", val_split=0).validate_on_test is True


@pytest.mark.slow
def test_held_out_split_feeds_the_history_and_the_test_set_only_the_reports(tmp_path, monkeypatch):
    from vggcifar import record
    from vggcifar import loop as T
    from vggcifar.inference import load_model

    data = load_synthetic(train=300, test=48, seed=5)
    calls = []
    real = T.predict_probs

    def recording(model, x, *a, **k):
        calls.append("test" if np.shares_memory(x, data.x_test) else
                     "train" if np.shares_memory(x, data.x_train) else "other")
        return real(model, x, *a, **k)

    monkeypatch.setattr(T, "predict_probs", recording)  # validation, in the loop
    monkeypatch.setattr(record, "predict_probs", recording)  # the test set, at a milestone
    config = make_config("spec-he", **TINY, epochs=2, batch_size=32, precision="float32")
    run = tmp_path / "run"
    train_run(config, data, run, milestones=[2], **QUIET)
    # Validation after each epoch on the held-out training images; the test
    # set once, for the only milestone. ("other": the end-of-epoch check of
    # inference-mode accuracy, on a sample gathered from the training images.)
    assert [c for c in calls if c != "other"] == ["train", "train", "test"]
    assert calls.count("other") == 2
    saved = fsutil.read_json(run / "config.json")
    metrics = fsutil.read_json(run / "metrics.json")
    assert saved["val_split"] == 30 and saved["validate_on_test"] is False
    assert (metrics["train_images"], metrics["val_images"]) == (270, 30)
    # The last epoch's validation figures are the saved model's on the last 30
    # training images, not on the test set.
    model = load_model(run / "model.keras")
    held_out = np.asarray(model.predict(data.x_train[270:], verbose=0))
    last = RunDir(run).read_history()[-1]
    assert last["val_loss"] == pytest.approx(cross_entropy(held_out, data.y_train[270:]), rel=1e-5)
    assert last["val_accuracy"] == pytest.approx(float((held_out.argmax(1) == data.y_train[270:]).mean()))
    test_probs = np.asarray(model.predict(data.x_test, verbose=0))
    assert metrics["test_loss"] == pytest.approx(cross_entropy(test_probs, data.y_test), rel=1e-5)
    assert last["val_loss"] != pytest.approx(metrics["test_loss"], rel=1e-5)
    assert "30 images held out of the training set" in (run / "report.md").read_text()


def _train(tmp_path, name, *extra):
    run = tmp_path / name
    status = main(["train", "--dataset", "synthetic", "--limit-train", "96", "--limit-test", "32", "--epochs", "1",
                   "--batch-size", "32", "--precision", "float32", "--quiet", "--run-dir", str(run),
                   *TINY_ARGS, *extra])
    return status, run


def test_cli_val_split_option(tmp_path, capsys):
    status, run = _train(tmp_path, "none", "--recipe", "spec-he", "--val-split", "0")
    assert status == 0
    assert fsutil.read_json(run / "config.json")["val_split"] == 0
    assert RunDir(run).read_history()[0]["val_loss"] is None
    # On the spec, --val-split N replaces validation on the test set.
    status, run = _train(tmp_path, "spec", "--val-split", "40")
    assert status == 0
    saved = fsutil.read_json(run / "config.json")
    assert (saved["val_split"], saved["validate_on_test"]) == (40, False)
    assert fsutil.read_json(run / "metrics.json")["train_images"] == 56
    capsys.readouterr()
    status, run = _train(tmp_path, "big", "--recipe", "spec-he", "--val-split", "400")
    err = capsys.readouterr().err
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "Received: val_split=400" in err and "--val-split" in err
    assert not (run / "config.json").exists()
