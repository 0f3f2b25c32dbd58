"""Training end to end on small synthetic data: the run folder, the metrics
against an independent oracle, resume, milestones, evaluate (kill -9 and
other injected faults: test_faults.py)."""

import json
import shutil
import signal

import keras
import numpy as np
import pytest

from conftest import TINY, TINY_ARGS, after_each_call, final_variables, hold_lock
from vggcifar import build, fsutil, order
from vggcifar.cli import main
from vggcifar.config import make_config
from vggcifar.data import load_synthetic
from vggcifar.runs import train_run
from vggcifar.checkpoint import read_variables as checkpoint_variables
from vggcifar.rundir import RunDir

RUN_FILES = ["config.json", "run.json", "environment.json", "history.csv", "model.keras", "metrics.json",
             "confusion_matrix.csv", "confusion_matrix.png", "curves.png", "report.md"]


@pytest.fixture(scope="module")
def data():
    return load_synthetic(train=160, test=64, seed=3)


def tiny_config(**kw):
    return make_config("spec", **{**TINY, "epochs": 2, "batch_size": 32, "lr": 0.05, **kw})


def test_run_folder_is_complete_and_consistent(tmp_path, data):
    run = tmp_path / "run"
    metrics = train_run(tiny_config(), data, run, milestones=[1, 2], verbose=0, log=lambda *_: None)
    for name in RUN_FILES:
        assert (run / name).is_file(), name
    for m in (1, 2):
        for name in ("model.keras", "metrics.json", "confusion_matrix.csv", "confusion_matrix.png"):
            assert (run / f"epochs-{m:03d}" / name).is_file()
    saved = fsutil.read_json(run / "metrics.json")
    assert saved == json.loads(json.dumps(metrics))
    for key in ("epoch", "test_accuracy", "test_loss", "confusion_matrix", "class_names", "per_class",
                "train_seconds", "wall_seconds"):
        assert key in saved
    assert saved["epoch"] == 2 and 0 <= saved["test_accuracy"] <= 1
    assert 0 < saved["train_seconds"] <= saved["wall_seconds"]
    assert np.asarray(saved["confusion_matrix"]).sum() == 64
    # "auto" settings are written down as what they meant on this machine.
    written = fsutil.read_json(run / "config.json")
    assert written["data_format"] == {"torch": "channels_first"}.get(keras.backend.backend(), "channels_last")
    assert written["precision"] in ("float32", "mixed_bfloat16")
    assert fsutil.read_json(run / "environment.json")["data_format"] == written["data_format"]
    history = RunDir(run).read_history()
    assert [h["epoch"] for h in history] == [1, 2]
    assert set(history[0]) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds",
                               "train_inference_accuracy", "inference_mismatch"}
    # The spec's decay: lr / (1 + 1e-6 * iterations), 5 steps an epoch.
    assert history[1]["lr"] == pytest.approx(0.05 / (1 + 1e-6 * 10), rel=1e-6)
    # The last epoch's validation on the test set is the reported test accuracy.
    assert history[1]["val_accuracy"] == pytest.approx(saved["test_accuracy"])
    env = fsutil.read_json(run / "environment.json")
    assert env["backend"] and env["dataset"]["synthetic"] is True
    assert {"keras", "numpy", "python"} <= set(env["versions"])
    report = (run / "report.md").read_text()
    assert "* epochs = 1 **accuracy = " in report and "* epochs = 2 **accuracy = " in report
    assert "epochs-002/confusion_matrix.png" in report and "Time of learning process: **0:00:" in report
    assert "Synthetic data" in report
    assert not (run / "lock").exists()


def test_metrics_agree_with_scikit_learn(tmp_path, data):
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    from vggcifar.inference import load_model
    from vggcifar.inference import predict_probs

    run = tmp_path / "run"
    train_run(tiny_config(epochs=1), data, run, verbose=0, log=lambda *_: None)
    saved = fsutil.read_json(run / "metrics.json")
    y_pred = predict_probs(load_model(run / "model.keras"), data.x_test).argmax(1)
    np.testing.assert_array_equal(saved["confusion_matrix"], confusion_matrix(data.y_test, y_pred, labels=range(10)))
    p, r, f, _ = precision_recall_fscore_support(data.y_test, y_pred, labels=range(10), zero_division=0)
    np.testing.assert_allclose(saved["per_class"]["precision"], p)
    np.testing.assert_allclose(saved["per_class"]["recall"], r)
    np.testing.assert_allclose(saved["per_class"]["f1"], f)
    assert saved["test_accuracy"] == pytest.approx((y_pred == data.y_test).mean())


def test_one_run_milestones_equal_separate_shorter_run(tmp_path, data):
    long_run, short_run = tmp_path / "long", tmp_path / "short"
    train_run(tiny_config(epochs=3), data, long_run, milestones=[1, 3], verbose=0, log=lambda *_: None)
    train_run(tiny_config(epochs=1), data, short_run, verbose=0, log=lambda *_: None)
    a = fsutil.read_json(long_run / "epochs-001" / "metrics.json")
    b = fsutil.read_json(short_run / "metrics.json")
    assert a["confusion_matrix"] == b["confusion_matrix"]
    assert a["test_loss"] == b["test_loss"]
    import keras

    wa = keras.saving.load_model(long_run / "epochs-001" / "model.keras").get_weights()
    wb = keras.saving.load_model(short_run / "model.keras").get_weights()
    for x, y in zip(wa, wb):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("recipe,images", [("spec", 96), ("spec-he", 96), ("vgg16-bn", 96)])
def test_resume_mid_epoch_is_bit_identical(tmp_path, recipe, images):
    # Stopped mid-epoch 1 and mid-epoch 2: what crosses each resume is
    # spec's plain SGD and inverse-time decay; spec-he's AdamW moments,
    # cosine schedule, dropout and the crop/flip augmentation's random state;
    # vgg16-bn's batch-norm statistics too.
    from vggcifar.loop import TrainingStopped

    # 3 steps of 32 an epoch: spec's 96 images; spec-he and vgg16-bn hold a
    # tenth out (32, 32, then a short batch, the first step after the first
    # resume: under batch norm too, the step is the one traced for any batch).
    data = load_synthetic(train=images, test=32, seed=3)
    config = make_config(recipe, **TINY, epochs=2, batch_size=32, lr=0.05, precision="float32")
    full, parts = tmp_path / "full", tmp_path / "parts"
    quiet = dict(verbose=0, log=lambda *_: None)
    train_run(config, data, full, **quiet)
    with pytest.raises(TrainingStopped):
        train_run(config, data, parts, max_steps=2, **quiet)  # stops mid-epoch 1
    state = fsutil.read_json(RunDir(parts).list_checkpoints()[-1] / "state.json")
    assert (state["epoch"], state["step_in_epoch"]) == (0, 2)
    with pytest.raises(TrainingStopped):
        train_run(config, data, parts, resume=True, max_steps=3, **quiet)  # into epoch 2
    state = fsutil.read_json(RunDir(parts).list_checkpoints()[-1] / "state.json")
    assert (state["epoch"], state["step_in_epoch"]) == (1, 2)
    train_run(config, data, parts, resume=True, **quiet)
    for x, y in zip(final_variables(full), final_variables(parts), strict=True):
        np.testing.assert_array_equal(x, y)
    assert fsutil.read_json(full / "metrics.json")["test_loss"] == fsutil.read_json(parts / "metrics.json")["test_loss"]
    h_full, h_parts = RunDir(full).read_history(), RunDir(parts).read_history()
    for key in ("loss", "accuracy", "val_loss", "lr", "train_inference_accuracy"):
        assert [h[key] for h in h_full] == [h[key] for h in h_parts], key


def test_corrupt_newest_checkpoint_falls_back(tmp_path, data):
    run = tmp_path / "run"
    quiet = dict(verbose=0, log=lambda *_: None)
    train_run(tiny_config(epochs=3), data, run, milestones=[3], **quiet)
    reference = final_variables(run)
    # Back to the end of epoch 2: damage the newest (epoch 3), keep epoch 2.
    newest, previous = RunDir(run).list_checkpoints()[-1], RunDir(run).list_checkpoints()[-2]
    (newest / "variables.npz").write_bytes(b"not a zip file")
    messages = []
    import shutil

    for name in ("metrics.json",):
        (run / name).unlink()
    shutil.rmtree(run / "epochs-003")
    train_run(tiny_config(epochs=3), data, run, milestones=[3], resume=True, verbose=0, log=messages.append)
    assert any("unusable" in m and newest.name in m for m in messages)
    assert any("resuming from epoch 2" in m for m in messages)
    for x, y in zip(reference, final_variables(run)):
        np.testing.assert_array_equal(x, y)
    # The damaged checkpoint was replaced by a whole one of the same step; the one before it stays.
    assert RunDir(run).list_checkpoints() == [previous, newest]
    assert fsutil.read_json(newest / "state.json")["epoch"] == 3
    for x, y in zip(reference, checkpoint_variables(newest)):
        np.testing.assert_array_equal(x, y)


def test_evaluate_reproduces_metrics(tmp_path, capsys):
    # A run trained from an archive (--data), killed after its first epoch,
    # resumed through run.json; evaluate then finds the same archive there and
    # reproduces the run's metrics from its saved model.
    from vggcifar import fixtures

    arrays = fixtures.random_arrays(64, 32, seed=5)
    archive = fixtures.write_archive(tmp_path / "cifar-10-python.tar.gz", *arrays)
    run = tmp_path / "run"
    args = ["train", "--data", str(archive), "--epochs", "2", "--batch-size", "32", "--lr", "0.05", "--quiet",
            *TINY_ARGS, "--run-dir", str(run)]
    assert main(args) == 0
    finished = final_variables(run)
    shutil.rmtree(RunDir(run).list_checkpoints()[-1])  # as if killed before epoch 2 was checkpointed
    assert main(["train", "--resume", "--run-dir", str(run), "--quiet"]) == 0
    assert "resuming from epoch 1" in capsys.readouterr().out
    for x, y in zip(finished, final_variables(run)):
        np.testing.assert_array_equal(x, y)

    saved = fsutil.read_json(run / "metrics.json")
    # its data from run.json, the default folder; in float32 as the run trained
    assert main(["evaluate", str(run), "--precision", "float32"]) == 0
    assert "on 32 images, computed in float32; files in " + str(run / "evaluation") in capsys.readouterr().out
    again = fsutil.read_json(run / "evaluation" / "metrics.json")
    assert again["epoch"] == saved["epoch"] == 2
    assert again["confusion_matrix"] == saved["confusion_matrix"] and again["per_class"] == saved["per_class"]
    assert again["test_accuracy"] == saved["test_accuracy"]
    assert again["test_loss"] == pytest.approx(saved["test_loss"], rel=1e-6)
    # A model file: its data named, the default folder beside it.
    assert main(["evaluate", str(run / "model.keras"), "--data", str(archive), "--precision", "float32"]) == 0
    assert fsutil.read_json(run / "model-evaluation" / "metrics.json")["confusion_matrix"] == saved["confusion_matrix"]
    # A dataset with another number of classes is refused, naming both counts.
    names = [f"c{i}" for i in range(100)]
    other = fixtures.write_archive(tmp_path / "cifar-100-python.tar.gz", *fixtures.random_arrays(8, 8, 100),
                                   layout="cifar100", fine_names=names)
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(other)]) == 2
    err = capsys.readouterr().err
    assert "has 10 outputs but the dataset has 100 classes" in err and err.count("\n") == 1


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_loss_stops_and_keeps_last_good(tmp_path, data, monkeypatch, bad):
    from vggcifar import loop as T

    run = tmp_path / "run"
    quiet = dict(verbose=0, log=lambda *_: None)
    train_run(tiny_config(epochs=1), data, run, **quiet)
    good = final_variables(run)
    after_each_call(monkeypatch, lambda n, model, losses: np.full_like(losses, bad) if n == 2 else losses)
    with pytest.raises(T.Diverged) as stop:
        train_run(tiny_config(epochs=2), data, run, resume=True, **quiet)
    assert f"the training loss became {bad}" in stop.value.reason
    saved = fsutil.read_json(run / "metrics.json")
    assert saved["status"] == "failed" and str(bad) in saved["reason"]
    assert saved["epoch"] == 1  # the result on disk is still the last good one
    for x, y in zip(good, final_variables(run)):
        np.testing.assert_array_equal(x, y)


def test_second_process_on_a_run_folder_is_refused(tmp_path, data):
    run = tmp_path / "run"
    holder = hold_lock(run)
    try:
        with pytest.raises(OSError, match=f"in use by process {holder.pid}"):
            train_run(tiny_config(epochs=1), data, run, verbose=0, log=lambda *_: None)
        assert holder.poll() is None
    finally:
        holder.kill()
        holder.wait()
    # The holder is dead now: the kernel released its lock, and it is taken.
    train_run(tiny_config(epochs=1), data, run, verbose=0, log=lambda *_: None)
    assert (run / "metrics.json").exists() and not (run / "lock").exists()


TRAIN_ARGS = ["train", "--dataset", "synthetic", "--limit-train", "192", "--limit-test", "32",
              "--epochs", "3", "--batch-size", "16", "--lr", "0.05", "--quiet", *TINY_ARGS]


@pytest.mark.slow
@pytest.mark.parametrize("signum,status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "Ctrl-C"])
def test_sigterm_saves_and_exits_cleanly(tmp_path, forker, signum, status):
    # 500 steps an epoch and no timed checkpoint (every 10 minutes): the only
    # checkpoint a signal mid-epoch can leave is the one it saves itself. The
    # run is a process of its own (conftest.forker).
    run = tmp_path / "run"
    p = forker(["train", "--dataset", "synthetic", "--limit-train", "4000", "--limit-test", "16", "--epochs", "1",
                "--batch-size", "8", *TINY_ARGS, "--run-dir", str(run)])
    lines = []
    # The first plain progress line comes after a tenth of the epoch (step 50),
    # however fast the machine: the loop is running, 450 steps from its end.
    for line in p.stdout:
        lines.append(line)
        if " step " in line and line.startswith("epoch 1/1"):
            break
    assert RunDir(run).list_checkpoints() == [], lines
    p.send_signal(signum)
    out = "".join(lines) + p.communicate(timeout=120)[0]
    assert p.returncode == status, out
    assert f"continue with `vggcifar train --resume --run-dir {run}`" in out
    assert not (run / "lock").exists()
    (checkpoint,) = RunDir(run).list_checkpoints()
    state = fsutil.read_json(checkpoint / "state.json")
    assert state["epoch"] == 0 and 50 <= state["step_in_epoch"] < 500 and state["global_step"] == state["step_in_epoch"]


def test_cli_errors(tmp_path, capsys):
    assert main(["train", "--resume", "--quiet"]) == 2
    assert "--resume needs --run-dir" in capsys.readouterr().err
    assert main(["train", "--resume", "--run-dir", str(tmp_path / "nothing")]) == 2
    assert "not a vggcifar run folder" in capsys.readouterr().err
    assert main(["train", "--dataset", "synthetic", "--set", "width=wide"]) == 2
    assert "Received: width='wide'" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "model.h5"), "--dataset", "synthetic"]) == 2
    assert "only .keras model files" in capsys.readouterr().err
    assert main(["experiment", "--dataset", "synthetic", "--milestones", "2,5", "--epochs", "3"]) == 2
    assert "less than the last milestone 5" in capsys.readouterr().err


@pytest.mark.parametrize("precision,compute", [("float32", "float32"), ("mixed_bfloat16", "bfloat16"),
                                               ("mixed_float16", "float16")])
def test_precision_sets_compute_dtype_keeps_float32_weights_and_scales_float16_loss(data, precision, compute):
    from vggcifar import loop as T

    model, train_model = build.build_training(tiny_config(precision=precision), data.num_classes, 5)
    conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    assert conv.compute_dtype == compute and conv.kernel.dtype == "float32"
    # float16's small range makes gradients underflow: its loss is scaled.
    scaled = isinstance(train_model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert scaled == (precision == "mixed_float16")
    idx = order.batch_indices(order.epoch_permutation(0, 0, len(data.x_train)), 0, 32)
    losses, _ = T.make_runner(train_model, data.x_train, data.y_train, data.num_classes).run(idx[None])
    assert np.isfinite(losses).all()
    probs = T.predict_probs(model, data.x_test[:8])
    assert probs.dtype == np.float32 and np.allclose(probs.sum(axis=1), 1, atol=1e-3)
    # The precision is the built layers' own: Keras' global policy is as it was.
    assert keras.config.dtype_policy().name == "float32"
