"""The live view: --tensorboard writes a scalar per epoch for each figure,
read back with TensorBoard's own reader; curves.png is redrawn after every
epoch with whole-number epoch ticks."""

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import QUIET, TINY, TINY_ARGS
from vggcifar.config import make_config
from vggcifar.data import load_synthetic
from vggcifar.liveview import SCALARS, SPLITS, EpochScalars
from vggcifar.rundir import RunDir


def scalars(folder) -> dict[str, list]:
    """{tag: [(step, value), ...]} as TensorBoard reads ``folder``."""
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def row(epoch, **kw):
    return {"epoch": epoch, "loss": 2.0 / epoch, "accuracy": 0.1 * epoch, "val_loss": 2.5 / epoch,
            "val_accuracy": 0.09 * epoch, "lr": 0.01, "seconds": 4.0, "train_inference_accuracy": 0.1,
            "inference_mismatch": 0, **kw}


def test_each_figure_has_one_scalar_per_epoch(tmp_path):
    run = RunDir(tmp_path)
    live = EpochScalars(run.tensorboard_folders(SPLITS), images_per_epoch=1000)
    for epoch in (1, 2, 3):
        live.write(row(epoch))
        # Flushed at once: TensorBoard sees each epoch while the run goes on.
        assert [s for s, _ in scalars(run.tensorboard / "train")["loss"]] == list(range(1, epoch + 1))
    live.close()
    train, val = scalars(run.tensorboard / "train"), scalars(run.tensorboard / "validation")
    assert set(train) == {"loss", "accuracy", "learning_rate", "images_per_second", "inference_mode_accuracy"}
    assert set(val) == {"loss", "accuracy"}
    assert train["loss"] == [(e, pytest.approx(2.0 / e)) for e in (1, 2, 3)]
    assert val["accuracy"] == [(e, pytest.approx(0.09 * e)) for e in (1, 2, 3)]
    assert train["images_per_second"] == [(e, pytest.approx(250.0)) for e in (1, 2, 3)]
    assert {split for split, _ in SCALARS.values()} == set(SPLITS)


def test_no_validation_writes_no_validation_points(tmp_path):
    live = EpochScalars(RunDir(tmp_path).tensorboard_folders(SPLITS), images_per_epoch=10)
    live.write(row(1, val_loss=None, val_accuracy=None))
    live.close()
    assert not (tmp_path / "tensorboard" / "validation").exists()


def test_a_resumed_run_that_repeats_epochs_keeps_one_point_per_epoch(tmp_path):
    # Epochs 1-3 were written, but the checkpoint was taken after epoch 2:
    # the resumed process writes epoch 3 again, and TensorBoard keeps the new one.
    folders = RunDir(tmp_path).tensorboard_folders(SPLITS)
    first = EpochScalars(folders, images_per_epoch=10)
    for epoch in (1, 2, 3):
        first.write(row(epoch, loss=float(epoch)))
    first.close()
    again = EpochScalars(folders, images_per_epoch=10)
    for epoch in (3, 4):
        again.write(row(epoch, loss=10.0 * epoch))
    again.close()
    assert len(list((tmp_path / "tensorboard" / "train").iterdir())) == 2  # an event file each
    assert scalars(tmp_path / "tensorboard" / "train")["loss"] == [(1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]


@pytest.mark.slow
def test_a_run_with_tensorboard_writes_a_scalar_per_epoch_and_redraws_its_curves(tmp_path, monkeypatch):
    from vggcifar import plots
    from vggcifar.cli import main
    from vggcifar.rundir import read_json_or_empty

    drawn = []
    real = plots.curves_figure

    def recorded(history, **kw):
        fig = real(history, **kw)
        ticks = fig.axes[0].get_xticks()
        lo, hi = fig.axes[0].get_xlim()
        drawn.append((len(history), [t for t in ticks if lo <= t <= hi]))
        return fig

    monkeypatch.setattr(plots, "curves_figure", recorded)
    run = RunDir(tmp_path / "run")
    argv = ["experiment", "--dataset", "synthetic", "--limit-train", "64", "--limit-test", "16", "--epochs", "3",
            "--milestones", "3", "--batch-size", "32", "--tensorboard", "--quiet", "--run-dir", str(run.path),
            *TINY_ARGS]
    assert main(argv) == 0
    assert read_json_or_empty(run.config_path)["tensorboard"] is True
    train, val = scalars(run.tensorboard / "train"), scalars(run.tensorboard / "validation")
    history = run.read_history()
    for tag, key in (("loss", "loss"), ("accuracy", "accuracy"), ("learning_rate", "lr"),
                     ("inference_mode_accuracy", "train_inference_accuracy")):
        assert [s for s, _ in train[tag]] == [1, 2, 3], tag
        np.testing.assert_allclose([v for _, v in train[tag]], [h[key] for h in history], rtol=1e-6)
    assert [s for s, _ in train["images_per_second"]] == [1, 2, 3]
    np.testing.assert_allclose([v for _, v in val["accuracy"]], [h["val_accuracy"] for h in history], rtol=1e-6)
    # curves.png after every epoch, not only at the milestone, ticks on whole epochs.
    assert [n for n, _ in drawn] == [1, 2, 3]
    for _, ticks in drawn:
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_without_the_option_no_event_files(tmp_path):
    from vggcifar.runs import train_run

    run = RunDir(tmp_path / "run")
    train_run(make_config("spec", **TINY, epochs=1, batch_size=32), load_synthetic(train=32, test=8, seed=0),
              run.path, **QUIET)
    assert not run.tensorboard.exists() and run.curves.exists()


@pytest.mark.parametrize("epochs", [1, 2, 3, 5, 7, 100])
def test_curves_tick_whole_epochs(epochs):
    from vggcifar.plots import curves_figure

    history = [{"epoch": e, "loss": 1 / e, "accuracy": 0.1, "val_loss": 1.0, "val_accuracy": 0.1}
               for e in range(1, epochs + 1)]
    fig = curves_figure(history)
    for ax in fig.axes:
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    fig.clf()


def test_the_event_files_need_no_tensorflow(tmp_path):
    # With TensorFlow made unimportable (a torch or jax install without it),
    # the tensorboard package's writer still writes what its reader reads.
    import subprocess
    import sys

    code = f"""
import sys
sys.modules["tensorflow"] = None
from vggcifar.liveview import SPLITS, EpochScalars
from vggcifar.rundir import RunDir
live = EpochScalars(RunDir({str(tmp_path)!r}).tensorboard_folders(SPLITS), images_per_epoch=10)
for e in (1, 2):
    live.write({{"epoch": e, "loss": 1.0 / e, "accuracy": 0.5, "seconds": 1.0}})
live.close()
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator({str(tmp_path / "tensorboard" / "train")!r})
acc.Reload()
print("STEPS", [e.step for e in acc.Scalars("loss")], "TF", sys.modules["tensorflow"])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "STEPS [1, 2] TF None" in out.stdout, out.stderr[-2000:]
