"""Fit for a GPU, checked on any backend: predict queues every batch before it
reads one, the bench times windows large enough for a GPU, the finite check
reads the device once, and the prepared GPU check's parts fit its 8 minutes."""

import subprocess
from pathlib import Path

import numpy as np

import keras

from vggcifar import backend, bench, inference
from vggcifar.model import build_vgg

ROOT = Path(__file__).resolve().parents[1]


def _events(monkeypatch):
    """Record 'call' for each compiled inference call and 'read' for each tensor read back."""
    events = []
    compiled_for = backend.compiled_for

    def recording_compiled_for(obj, fn):
        call = compiled_for(obj, fn)

        def recorded(*args):
            events.append("call")
            return call(*args)

        return recorded

    convert = keras.ops.convert_to_numpy

    def recording_convert(x):
        events.append("read")
        return convert(x)

    monkeypatch.setattr(backend, "compiled_for", recording_compiled_for)
    monkeypatch.setattr(keras.ops, "convert_to_numpy", recording_convert)
    return events


def test_predict_queues_every_batch_before_reading_any(monkeypatch):
    model = build_vgg(width=0.0625, dense_units=16, rescale=1 / 255, input_layout="channels_last")
    x = np.random.default_rng(0).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    expected = np.asarray(model.predict(x, verbose=0))
    events = _events(monkeypatch)
    got = inference.predict_probs(model, x, batch_size=16)  # 16, 16, 8
    assert events == ["call"] * 3 + ["read"] * 3
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # A set put on the device once gives the same, batches queued alike.
    events.clear()
    placed = inference.on_device(x, batch_size=16)
    assert len(placed) == 40 and np.shares_memory(np.asarray(placed), x)
    np.testing.assert_array_equal(inference.predict_probs(model, placed), got)
    assert events == ["call"] * 3 + ["read"] * 3


def test_the_finite_check_is_one_compiled_reduction_read_once(monkeypatch):
    from vggcifar import loop as T

    model = build_vgg(width=0.0625, dense_units=16)
    variables = list(model.variables)
    bad = variables[3]
    bad.assign(np.full(bad.shape, np.nan, "float32"))
    events = _events(monkeypatch)
    assert T.nonfinite_variables(variables) == [bad.path]
    assert events == ["read"]
    assert list(backend.finite_flags([keras.ops.ones((2,)), keras.ops.convert_to_tensor([1.0, np.inf])])) == [
        True, False]


def test_bench_windows_hold_enough_images_for_a_gpu():
    plan = bench.QUICK
    assert bench.plan_for_device(plan, "cpu", 32) is plan
    for batch in (32, 256):
        gpu = bench.plan_for_device(plan, "gpu", batch)
        assert gpu.steps_per_window * batch >= bench.ACCELERATOR_WINDOW_IMAGES > 512
        assert gpu.warmup_steps >= gpu.steps_per_window and gpu.windows == plan.windows
        assert gpu.predict_batches_per_window * inference.INFERENCE_BATCH >= bench.ACCELERATOR_WINDOW_IMAGES


def test_the_gpu_checks_parts_fit_eight_minutes():
    out = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "plan"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines()]
    limits = {name: int(seconds) for name, seconds, *_ in rows if name not in ("total",)}
    assert {"bench-jax-spec", "bench-jax-bn", "train-jax-k1", "train-jax-kauto", "levers-jax-loop", "peer-torch-bn",
            "bench-torch-spec", "bench-torch-bn", "peer-torch-spec"} <= set(limits)
    assert sum(limits.values()) <= 8 * 60
    assert rows[-1][:2] == ["total", str(sum(limits.values()))]
