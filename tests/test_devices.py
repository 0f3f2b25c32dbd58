"""Asking for several devices: the checks of a device count and the errors
that name the fix. (The same run on one and on two virtual CPU devices under
JAX: tests/test_device_path.py.)"""

import pytest

from vggcifar.cli import main
from vggcifar.backend import resolve_devices


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
