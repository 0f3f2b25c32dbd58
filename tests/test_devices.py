"""Training on several devices: the same run on one and on two (virtual CPU)
devices under keras.distribution on JAX, and the errors that name the fix."""

import json
import os
import subprocess
import sys

import pytest

from conftest import xla_flags
from vggcifar.cli import main
from vggcifar.backend import resolve_devices

# Runs `vggcifar train` twice in one process (one JAX start-up), on one device
# and on two, and records every batch Keras' own train function is handed
# (the global batch's shape, over how many devices it lies, one shard's shape).
CHILD = r"""
import json, sys
from keras.src.backend.jax import trainer as jax_trainer
from vggcifar import fsutil
from vggcifar.cli import main
from vggcifar.rundir import RunDir

seen = []
make = jax_trainer.JAXTrainer.make_train_function

def spying_make(self, force=False):
    make(self, force)
    step = self.train_function
    if getattr(step, "spy", False):
        return
    def spy(state, data):
        batch = list(data)
        x = batch[0][0]
        seen.append({"shape": list(x.shape), "devices": len(x.sharding.device_set),
                     "shard": list(x.addressable_shards[0].data.shape)})
        return step(state, iter(batch))
    spy.spy = True
    self.train_function = spy

jax_trainer.JAXTrainer.make_train_function = spying_make
out = {}
for devices in ("1", "2"):
    seen.clear()
    run = f"{sys.argv[1]}/run{devices}"
    status = main(["train", "--dataset", "synthetic", "--limit-train", "128", "--limit-test", "32",
                   "--epochs", "2", "--batch-size", "32", "--lr", "0.01", "--seed", "5", "--quiet",
                   "--set", "width=0.0625", "--set", "dense_units=16", "--devices", devices, "--run-dir", run])
    out[devices] = {"status": status, "seen": seen[:], "metrics": fsutil.read_json(f"{run}/metrics.json"),
                    "history": RunDir(run).read_history()}
# 105 images at batch 32 on two devices: three whole batches and a short one of
# 9, which splits in two halves of 4 (the image left over is not trained on).
run = f"{sys.argv[1]}/odd"
status = main(["train", "--dataset", "synthetic", "--limit-train", "105", "--val-split", "0", "--limit-test", "32",
               "--epochs", "1", "--batch-size", "32", "--quiet", "--set", "width=0.0625", "--set", "dense_units=16",
               "--devices", "2", "--run-dir", run])
out["odd"] = {"status": status, "metrics": fsutil.read_json(f"{run}/metrics.json")}
print("RESULT " + json.dumps(out))
"""


def _has_jax() -> bool:
    probe = subprocess.run([sys.executable, "-c", "import jax"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.slow
def test_two_devices_train_like_one(tmp_path):
    if not _has_jax():
        pytest.skip("jax is not installed (pip install -e '.[test]' installs it)")
    env = {**os.environ, "KERAS_BACKEND": "jax", "XLA_FLAGS": xla_flags("--xla_force_host_platform_device_count=2"),
           "JAX_PLATFORMS": "cpu", "PYTHONPATH": os.pathsep.join(filter(None, ["src", os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    one, two = result["1"], result["2"]
    assert one["status"] == two["status"] == 0
    # One device and two: vggcifar.steps' compiled call, never Keras' train_function
    # (each step's batch split among the devices: tests/test_device_path.py).
    assert len(one["seen"]) == len(two["seen"]) == 0
    # Same seed, same batches, same function: the same run. Not bit for bit:
    # each device sums the gradient of its half and an all-reduce adds the two
    # halves, so float32 sums are taken in another order (observed: ~1e-7 relative).
    for a, b in zip(one["history"], two["history"]):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        assert b["accuracy"] == a["accuracy"]
        assert b["val_accuracy"] == a["val_accuracy"]
    assert two["metrics"]["test_accuracy"] == one["metrics"]["test_accuracy"]
    assert two["metrics"]["test_loss"] == pytest.approx(one["metrics"]["test_loss"], rel=1e-4)
    assert two["metrics"]["confusion_matrix"] == one["metrics"]["confusion_matrix"]
    odd = result["odd"]
    assert odd["status"] == 0 and odd["metrics"]["train_images"] == 3 * 32 + 8


def test_more_than_one_device_needs_jax_on_this_backend(tmp_path, capsys):
    import keras

    if keras.backend.backend() == "jax":
        pytest.skip("this backend trains on several devices")
    code = main(["train", "--dataset", "synthetic", "--limit-train", "64", "--limit-test", "16", "--epochs", "1",
                 "--devices", "2", "--run-dir", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "KERAS_BACKEND=jax" in err and "--devices 1" in err
    assert not (tmp_path / "run").exists()


def test_device_count_checks():
    import keras

    backend = keras.backend.backend()
    assert resolve_devices(1, 32) == resolve_devices("all", 32)[:1]
    with pytest.raises(ValueError, match="split evenly among 2 devices.*multiple of 2"):
        resolve_devices(2, 33, backend="jax") if backend == "jax" else resolve_devices_fake(2, 33)
    with pytest.raises(ValueError, match="more devices than the 2 visible"):
        resolve_devices_fake(3, 32)
    assert resolve_devices_fake("all", 32) == ["cpu:0", "cpu:1"]


def resolve_devices_fake(devices, batch_size):
    """resolve_devices as on a JAX host with two devices."""
    from unittest import mock

    with mock.patch("vggcifar.backend.visible_devices", return_value=["cpu:0", "cpu:1"]):
        return resolve_devices(devices, batch_size, backend="jax")


def test_devices_argument_is_checked(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--devices", "some"])
    assert exc.value.code == 2
    assert "expected 'all' or a positive integer, received 'some'" in capsys.readouterr().err
    from vggcifar.config import make_config

    with pytest.raises(ValueError, match="devices"):
        make_config("spec", devices=0)
    assert make_config("spec", devices="all").devices == "all"
