"""The Python API (vggcifar.api): docs/python.md's examples run as written,
Keras callbacks get fit's hooks from the project's own loop, and errors are
raised, never exits."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY
from vggcifar import fsutil

PAGE = Path(__file__).resolve().parents[1] / "docs" / "python.md"
SMALL = dict(dataset="synthetic", limit_train=96, limit_test=32, batch_size=32, quiet=True, **TINY)


@pytest.mark.slow
def test_the_python_page_runs_as_written(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) >= 5
    script = tmp_path / "page.py"
    script.write_text("\n".join(f"exec({b!r}, {{}})" for b in blocks))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[1] / "src"),
                                                                      os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    # Nothing of TensorFlow's start-up reached the notebook's stderr.
    assert "cpu_feature_guard" not in done.stderr and "oneDNN" not in done.stderr, done.stderr[-2000:]
    assert (tmp_path / "runs" / "python-demo" / "report.md").exists()
    assert (tmp_path / "runs" / "python-compare" / "comparison.md").exists()


class Recorder:
    """A Keras callback that writes down each hook with its arguments."""

    def __init__(self, stop_at=None):
        import keras

        recorder = self

        class _Callback(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                recorder.calls.append(("train_begin",))

            def on_epoch_begin(self, epoch, logs=None):
                recorder.calls.append(("epoch_begin", epoch))

            def on_train_batch_end(self, batch, logs=None):
                recorder.calls.append(("batch_end", batch, sorted(logs)))
                if stop_at == ("batch", recorder.epoch, batch):
                    self.model.stop_training = True

            def on_epoch_end(self, epoch, logs=None):
                recorder.epoch = epoch + 1
                recorder.calls.append(("epoch_end", epoch, dict(logs)))
                if stop_at == ("epoch", epoch):
                    self.model.stop_training = True

            def on_train_end(self, logs=None):
                recorder.calls.append(("train_end",))

        self.calls, self.epoch, self.callback = [], 0, _Callback()


def test_callbacks_get_fits_hooks_at_each_call_and_epoch(tmp_path):
    import vggcifar

    rec = Recorder()
    run = vggcifar.train("spec-he", epochs=2, steps_per_execution=2, callbacks=[rec.callback],
                         run_dir=tmp_path / "run", **SMALL)
    # 96 images, 10% held out: 87 a epoch in batches of 32, 3 steps, calls of 2 and 1.
    kinds = [c[0] for c in rec.calls]
    assert kinds == ["train_begin", "epoch_begin", "batch_end", "batch_end", "epoch_end",
                     "epoch_begin", "batch_end", "batch_end", "epoch_end", "train_end"]
    assert [c[1] for c in rec.calls if c[0] == "batch_end"] == [1, 2, 1, 2]  # each call's last step
    assert all(c[2] == ["accuracy", "loss"] for c in rec.calls if c[0] == "batch_end")
    ends = [c[2] for c in rec.calls if c[0] == "epoch_end"]
    history = run.history
    assert [e["loss"] for e in ends] == [h["loss"] for h in history]
    assert [e["val_accuracy"] for e in ends] == [h["val_accuracy"] for h in history]
    assert set(ends[0]) == {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"}
    assert run.metrics["status"] == "complete"


def test_keras_early_stopping_and_csv_logger_work_as_under_fit(tmp_path):
    import keras

    import vggcifar

    csv = tmp_path / "epochs.csv"
    # min_delta 1: no epoch improves the loss by a whole unit, so it stops after patience + 1 epochs.
    stop = keras.callbacks.EarlyStopping(monitor="loss", min_delta=1.0, patience=1)
    run = vggcifar.train("spec", epochs=5, callbacks=[keras.callbacks.CSVLogger(str(csv)), stop],
                         run_dir=tmp_path / "run", **SMALL)
    assert run.metrics["status"] == "stopped" and run.metrics["epoch"] == 2
    assert "callback" in run.metrics["reason"]
    assert (run.path / "epochs-002" / "model.keras").exists()  # the epoch it stopped at, evaluated
    rows = csv.read_text().strip().splitlines()
    assert rows[0].split(",")[:3] == ["epoch", "accuracy", "learning_rate"] and len(rows) == 3
    assert "stopped early" in run.report.read_text()
    # The state is checkpointed: --resume goes on to the last epoch.
    resumed = vggcifar.train(resume=True, run_dir=run.path, quiet=True)
    assert resumed.metrics["status"] == "complete" and resumed.metrics["epoch"] == 5


def test_a_stop_asked_mid_epoch_checkpoints_that_step(tmp_path):
    import vggcifar
    from vggcifar.rundir import RunDir

    rec = Recorder(stop_at=("batch", 1, 0))  # the first call of epoch 2
    run = vggcifar.train("spec", epochs=3, callbacks=[rec.callback], run_dir=tmp_path / "run", **SMALL)
    state = fsutil.read_json(RunDir(run.path).list_checkpoints()[-1] / "state.json")
    assert (state["epoch"], state["step_in_epoch"]) == (1, 1)
    assert run.metrics["status"] == "stopped" and not (run.path / "epochs-002").exists()
    assert rec.calls[-1] == ("train_end",)


def test_api_errors_are_raised_in_one_line_never_an_exit(tmp_path):
    import vggcifar

    with pytest.raises(ValueError, match="Received: recipe='vgg99'"):
        vggcifar.train("vgg99", **SMALL)
    with pytest.raises(ValueError, match="Unknown config key 'widht'"):
        vggcifar.train("spec", widht=0.5, run_dir=tmp_path / "x", dataset="synthetic")
    with pytest.raises(ValueError, match="--resume needs --run-dir"):
        vggcifar.train(resume=True)
    with pytest.raises(ValueError, match="evaluate takes dataset"):
        vggcifar.evaluate(tmp_path, batch=3)


def test_load_data_predict_and_evaluate_take_what_a_notebook_has(tmp_path):
    from PIL import Image

    import vggcifar

    (x_train, y_train), (x_test, y_test) = data = vggcifar.load_data("synthetic", limit_train=40, limit_test=12)
    assert x_train.shape == (40, 32, 32, 3) and x_train.dtype == np.uint8
    assert y_train.shape == (40, 1) and y_test.shape == (12, 1) and data.class_names[0] == "disc"
    run = vggcifar.train("spec", epochs=1, run_dir=tmp_path / "run", **SMALL)
    model = run.load_model()
    png = tmp_path / "a.png"
    Image.fromarray(x_test[0]).save(png)
    # In float32, as the run trained and as run.load_model() is (the default, auto, is the machine's choice).
    by_path = vggcifar.predict(run, [png], top_k=3, precision="float32")
    by_pil = vggcifar.predict(model, [Image.open(png)], top_k=3)
    by_array = vggcifar.predict(run.path, x_test[0], top_k=3, precision="float32")
    assert by_path == by_array and len(by_path[0]) == 3
    assert by_path[0][0][0] in data.class_names and 0 <= by_path[0][0][1] <= 1  # the run's own class names
    # A bare model knows no names (CIFAR-10's for 10 outputs): the same probabilities.
    assert [p for _, p in by_pil[0]] == [p for _, p in by_path[0]]
    # A run folder's own data by default; a model object: on the data named, nothing written.
    assert vggcifar.evaluate(run, precision="float32")["test_accuracy"] == pytest.approx(run.metrics["test_accuracy"])
    in_memory = vggcifar.evaluate(model, dataset="synthetic", limit_test=32)
    assert in_memory["test_accuracy"] == pytest.approx(run.metrics["test_accuracy"])
