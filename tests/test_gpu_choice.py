"""What a machine with a GPU is told to run on, decided with each kind of GPU
mocked: the default backend only where JAX can use the GPU (the driver's CUDA
version, the GPU's age, no GPU visible), the precision by what the GPU computes
in, TF32 said and recorded, and full float32 when asked."""

from unittest import mock

import pytest

import vggcifar
from vggcifar import backend

H100 = (13000, 1, (9, 0))


@pytest.fixture
def gpu_machine(monkeypatch):
    """A machine with an NVIDIA GPU and JAX's CUDA 13 plugin; returns a setter for the driver's answer."""
    monkeypatch.setattr(vggcifar, "_has_nvidia_gpu", lambda: True)
    monkeypatch.setattr(vggcifar, "_jax_cuda_plugin", lambda: "jax_cuda13_plugin")

    def answer(probe):
        monkeypatch.setattr(vggcifar, "_cuda_probe", lambda: probe)

    return answer


@pytest.mark.parametrize("probe, expected, why", [
    (H100, "jax", "NVIDIA GPU and JAX's CUDA plugin"),
    ((12040, 1, (9, 0)), "tensorflow", "supports CUDA 12.4, jax_cuda13_plugin needs 13: update the driver or "
                                       "pip install -e '.[gpu-cuda12]'"),
    ((13000, 1, (6, 1)), "tensorflow", "compute capability 6.1 is older than jax_cuda13_plugin supports (7.5)"),
    ("no GPU is visible (CUDA_VISIBLE_DEVICES='')", "tensorflow", "CUDA_VISIBLE_DEVICES=''"),
    ("CUDA cannot start (cuInit returned error 999)", "tensorflow", "cuInit returned error 999"),
])
def test_jax_is_the_default_only_where_it_can_use_the_gpu(gpu_machine, probe, expected, why):
    gpu_machine(probe)
    chosen, reason = vggcifar.default_backend()
    assert chosen == expected
    assert why in reason and "\n" not in reason
    if expected == "tensorflow":
        assert reason.startswith("the default on the CPU: JAX's CUDA plugin is installed but")


def test_a_gpu_jax_cannot_use_on_a_machine_without_tensorflow_runs_jax_on_the_cpu_and_says_why(gpu_machine,
                                                                                                 monkeypatch):
    gpu_machine((12040, 1, (9, 0)))
    real = vggcifar._util.find_spec
    monkeypatch.setattr(vggcifar._util, "find_spec",
                        lambda name, *a: None if name == "tensorflow" else object() if name == "jax" else real(name, *a))
    chosen, reason = vggcifar.default_backend()
    assert chosen == "jax"
    assert reason == ("the backend installed (tensorflow, the default, is not), on the CPU: JAX's CUDA plugin is "
                      "installed but the NVIDIA driver supports CUDA 12.4, jax_cuda13_plugin needs 13: update the "
                      "driver or pip install -e '.[gpu-cuda12]'")


def test_an_empty_cuda_visible_devices_is_seen_without_asking_the_driver(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with mock.patch("ctypes.CDLL", side_effect=AssertionError("the driver was asked")):
        assert vggcifar._cuda_probe() == "no GPU is visible (CUDA_VISIBLE_DEVICES='')"


def test_the_probe_on_this_machine_answers_without_importing_a_framework():
    import sys

    before = {m for m in ("jax", "torch", "tensorflow") if m in sys.modules}
    found = vggcifar._cuda_probe()
    assert isinstance(found, (str, tuple))
    assert {m for m in ("jax", "torch", "tensorflow") if m in sys.modules} == before


@pytest.mark.parametrize("capability, precision, tf32", [
    ((9, 0), "mixed_bfloat16", True),   # H100, H200
    ((8, 0), "mixed_bfloat16", True),   # A100
    ((8, 6), "mixed_bfloat16", True),   # RTX 30xx, A10
    ((7, 5), "mixed_float16", False),   # T4, RTX 20xx: float16 tensor cores, no bfloat16
    ((7, 0), "mixed_float16", False),   # V100
    ((6, 1), "float32", False),         # P4, GTX 10xx
])
def test_auto_precision_and_tf32_follow_the_gpus_compute_capability(monkeypatch, capability, precision, tf32):
    acc = backend.Accelerators("gpu", "NVIDIA", 1, capability >= (8, 0), capability)
    monkeypatch.delenv(backend.STRICT_FLOAT32_ENV, raising=False)
    with mock.patch.object(backend, "accelerators", return_value=acc):
        assert backend.resolve_precision("auto") == precision
        assert backend.resolve_precision("float32") == "float32"
        assert backend.tf32() is tf32
        env = backend.environment()
        assert env["float32_matmul"] == ("tf32" if tf32 else "float32")
        assert env["device"]["compute_capability"] == f"{capability[0]}.{capability[1]}"
        line = backend.describe()
        assert ("TF32" in line) is tf32 and "\n" not in line
        monkeypatch.setenv(backend.STRICT_FLOAT32_ENV, "1")
        assert backend.tf32() is False and backend.environment()["float32_matmul"] == "float32"
        assert "TF32" not in backend.describe()


def test_mixed_float16_trains_with_loss_scaling():
    import keras

    from vggcifar.build import build_training
    from vggcifar.config import make_config

    _, train_model = build_training(make_config("spec", width=0.0625, dense_units=16, precision="mixed_float16"), 10, 4)
    assert isinstance(train_model.optimizer, keras.optimizers.LossScaleOptimizer)


def test_the_compute_capability_is_read_from_each_backends_wording():
    assert backend._capability("9.0") == (9, 0)
    assert backend._capability((8, 6)) == (8, 6)
    assert backend._capability("8") == (8, 0)
    assert backend._capability(None) is None and backend._capability("gfx90a") is None


def test_strict_float32_turns_tf32_off_in_the_backend(monkeypatch):
    import keras

    monkeypatch.delenv(backend.STRICT_FLOAT32_ENV, raising=False)
    assert backend.use_strict_float32() is False
    if keras.backend.backend() != "tensorflow":
        pytest.skip("checked here on TensorFlow, the suite's backend")
    import tensorflow as tf

    monkeypatch.setenv(backend.STRICT_FLOAT32_ENV, "1")
    try:
        assert backend.use_strict_float32() is True
        assert tf.config.experimental.tensor_float_32_execution_enabled() is False
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(True)
