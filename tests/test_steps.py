"""Training steps K at a time (vggcifar.steps, order.chunks): the same maths as
one step a call, the same calls after a resume, a non-finite loss inside a call
stops the run; and what "auto" means for the precision and the steps per call
on CPUs with and without bfloat16 units and on GPUs."""

import json
import os
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest


from conftest import BACKEND_CHOICE_PROBE, TINY, after_each_call, final_variables
from vggcifar import backend, order
from vggcifar import loop as T
from vggcifar.config import make_config
from vggcifar.data import load_synthetic
from vggcifar.runs import train_run
from vggcifar.rundir import RunDir

QUIET = dict(verbose=0, log=lambda *_: None)


@pytest.fixture(scope="module")
def data():
    # 200 images at batch 16: 12 full steps and a short last one (8 images) an epoch.
    return load_synthetic(train=200, test=32, seed=4)


def bn_config(**kw):
    # Momentum slots, batch-norm statistics, augmentation and dropout RNG, the cosine schedule.
    return make_config("vgg16-bn", **{**TINY, "model": "vgg11", "epochs": 2, "batch_size": 16, "val_split": 0,
                                      "precision": "float32", "checkpoint_minutes": 1e-5, **kw})


@pytest.fixture(scope="module")
def eight_a_call(tmp_path_factory, data):
    """The run folder of bn_config at 8 steps a call, uninterrupted (made once)."""
    run = tmp_path_factory.mktemp("k8") / "run"
    train_run(bn_config(steps_per_execution=8), data, run, **QUIET)
    return run


# --------------------------------------------------------------------------- #
# the calls
# --------------------------------------------------------------------------- #
def test_calls_end_at_multiples_of_k_never_cross_an_epoch_and_keep_the_short_batch_apart():
    calls = order.chunks(seed=0, images=200, batch_size=16, per_call=5)
    got = [(e, s, rows.shape) for e, s, rows in (next(calls) for _ in range(8))]
    assert got == [(0, 0, (5, 16)), (0, 5, (5, 16)), (0, 10, (2, 16)), (0, 12, (1, 8)),
                   (1, 0, (5, 16)), (1, 5, (5, 16)), (1, 10, (2, 16)), (1, 12, (1, 8))]
    # The rows are the epoch's shuffle, step by step, as one step a call takes them.
    one = [rows[0] for _, _, rows in (next(order.chunks(0, 200, 16, 1, epoch=1, step=s)) for s in range(13))]
    again = order.chunks(0, 200, 16, 5, epoch=1)
    five = [r for _, _, rows in (next(again) for _ in range(4)) for r in rows]
    assert len(five) == 13
    for a, b in zip(one, five):
        np.testing.assert_array_equal(a, b)
    # Resumed mid-epoch, the calls line up with the uninterrupted run's again at the next multiple.
    resumed = order.chunks(0, 200, 16, 5, epoch=0, step=3)
    assert [(s, rows.shape[0]) for _, s, rows in (next(resumed) for _ in range(3))] == [(3, 2), (5, 5), (10, 2)]


def test_a_step_computes_its_learning_rate_once_and_trains_as_before(data, monkeypatch):
    # vgg16-bn: SGD with weight decay under a warm-up then cosine, for which
    # Keras' optimizer reads the learning rate once for each decayed variable.
    import contextlib

    import keras

    from vggcifar import steps
    from vggcifar.build import build_training

    evaluated, real = [0], keras.optimizers.schedules.CosineDecay.__call__

    def counted(self, step):
        evaluated[0] += 1
        return real(self, step)

    monkeypatch.setattr(keras.optimizers.schedules.CosineDecay, "__call__", counted)
    rows = [r for _, _, r in (next(order.chunks(0, 200, 16, 1, step=s)) for s in range(3))]

    def train():
        config = bn_config(epochs=4, warmup_epochs=1.0)
        _, model = build_training(config, 10, 13)
        assert model.optimizer.weight_decay and config.warmup_epochs
        runner = steps.make_runner(model, data.x_train, data.y_train, 10)
        evaluated[0] = 0
        for r in rows:
            runner.run(r)
        return [keras.ops.convert_to_numpy(v.value) for v in model.variables + model.optimizer.variables], evaluated[0]

    once, reads = train()
    # Once a step: at the one trace (TensorFlow, JAX) or at each step (torch).
    assert reads == (len(rows) if keras.backend.backend() == "torch" else 1), reads
    monkeypatch.setattr(steps, "one_learning_rate", lambda *a, **k: contextlib.nullcontext())
    each, reads = train()
    assert reads > len(rows)  # Keras' own reads: one for each decayed variable, and one more
    for a, b in zip(once, each, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_eight_steps_a_call_end_with_the_weights_of_one(tmp_path, data, eight_a_call):
    train_run(bn_config(steps_per_execution=1), data, tmp_path / "k1", **QUIET)
    a, b = final_variables(tmp_path / "k1"), final_variables(eight_a_call)
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    h1, h8 = RunDir(tmp_path / "k1").read_history(), RunDir(eight_a_call).read_history()
    for r1, r8 in zip(h1, h8):
        assert r1["loss"] == pytest.approx(r8["loss"], rel=1e-5)
    assert json.loads((eight_a_call / "config.json").read_text())["steps_per_execution"] == 8


@pytest.mark.slow
def test_resume_at_eight_steps_a_call_is_bit_identical(tmp_path, data, eight_a_call):
    with pytest.raises(T.Interrupted):
        train_run(bn_config(steps_per_execution=8), data, tmp_path / "parts", max_steps=8, **QUIET)
    with pytest.raises(T.Interrupted):  # 8 + 5 + 3 steps: into epoch 2, through a short batch and a short call
        train_run(bn_config(steps_per_execution=8), data, tmp_path / "parts", resume=True, max_steps=9, **QUIET)
    train_run(bn_config(steps_per_execution=8), data, tmp_path / "parts", resume=True, **QUIET)
    for x, y in zip(final_variables(eight_a_call), final_variables(tmp_path / "parts")):
        np.testing.assert_array_equal(x, y)


def test_a_non_finite_loss_inside_a_call_stops_and_keeps_the_last_good_checkpoint(tmp_path, data, monkeypatch):
    run = tmp_path / "run"
    config = bn_config(epochs=1, steps_per_execution=4)

    def poisoned(n, model, losses):
        if n == 2:  # the second call's third step
            losses = losses.copy()
            losses[2] = np.inf
        return losses

    after_each_call(monkeypatch, poisoned)
    with pytest.raises(T.Diverged, match=r"became inf at epoch 1, step 7 \(global step 7\)"):
        train_run(config, data, run, **QUIET)
    # The checkpoint of the first call (4 steps) is the last; nothing of the bad call was kept.
    assert [p.name for p in RunDir(run).list_checkpoints()] == ["ckpt-000000004"]
    assert json.loads((run / "metrics.json").read_text())["status"] == "failed"


# --------------------------------------------------------------------------- #
# "auto"
# --------------------------------------------------------------------------- #
NO_GPU = backend.Accelerators()
GPU_BF16 = backend.Accelerators("gpu", "NVIDIA H100", 1, True)
GPU_OLD = backend.Accelerators("gpu", "Tesla V100", 1, False)


@pytest.mark.parametrize("flags, acc, name, expected", [
    ({"avx2", "avx512f"}, NO_GPU, "tensorflow", "float32"),  # AMD Zen 3, older Xeons
    ({"avx512f", "avx512_bf16"}, NO_GPU, "tensorflow", "mixed_bfloat16"),  # AMD Zen 4
    ({"avx512_bf16", "amx_bf16", "amx_tile"}, NO_GPU, "tensorflow", "mixed_bfloat16"),  # Xeon with AMX
    ({"avx512_bf16", "amx_bf16"}, NO_GPU, "torch", "mixed_bfloat16"),
    ({"avx512_bf16"}, NO_GPU, "torch", "float32"),  # not measured faster there
    ({"avx512_bf16", "amx_bf16"}, NO_GPU, "jax", "float32"),  # not measured
    ({"avx2"}, GPU_BF16, "tensorflow", "mixed_bfloat16"),
    ({"avx512_bf16", "amx_bf16"}, GPU_OLD, "tensorflow", "float32"),  # the GPU trains, not the CPU
])
def test_auto_precision_follows_the_device_that_trains(flags, acc, name, expected):
    with mock.patch.object(backend, "cpu_flags", return_value=frozenset(flags)), \
            mock.patch.object(backend, "accelerators", return_value=acc), \
            mock.patch.object(backend, "name", return_value=name):
        assert backend.resolve_precision("auto") == expected
        assert backend.resolve_precision("float32") == "float32"  # an explicit policy is kept
        assert backend.resolve_steps_per_execution("auto") == backend.STEPS_PER_EXECUTION[
            "gpu" if acc.count else "cpu"]
        assert backend.resolve_steps_per_execution(3) == 3


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    # On this machine: whatever it has; the parser itself on a sample of each kind.
    text = "processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_bf16\nbogomips\t: 1\n"
    backend.cpu_flags.cache_clear()
    try:
        with mock.patch("builtins.open", mock.mock_open(read_data=text)):
            assert {"avx512_bf16", "amx_bf16"} <= backend.cpu_flags()
    finally:
        backend.cpu_flags.cache_clear()
    assert isinstance(backend.cpu_flags(), frozenset)


@pytest.mark.slow
def test_bfloat16_learns_like_float32(tmp_path):
    # Same seed, same data: final accuracy within a few points.
    data = load_synthetic(train=640, test=200, seed=7)
    accuracy = {}
    for precision in ("float32", "mixed_bfloat16"):
        config = make_config("vgg16-bn", model="vgg11", width=0.125, dense_units=32, dropout=0.0, augment=(),
                             label_smoothing=0.0, weight_decay=0.0, warmup_epochs=0.0, lr=0.02, batch_size=32,
                             epochs=4, val_split=0, precision=precision)
        accuracy[precision] = train_run(config, data, tmp_path / precision, **QUIET)["test_accuracy"]
    assert accuracy["float32"] > 0.5, accuracy  # it learns at all
    assert abs(accuracy["float32"] - accuracy["mixed_bfloat16"]) <= 0.05, accuracy


@pytest.mark.slow
@pytest.mark.parametrize("other", ["jax", "torch"])
def test_other_backends_take_k_steps_a_call_within_float_rounding(other, tmp_path):
    pytest.importorskip(other)
    script = """
import keras
import numpy as np
from vggcifar import build, order
from vggcifar.config import make_config
from vggcifar.data import load_synthetic
data = load_synthetic(train=96, test=16, seed=4)
rows = np.stack([order.batch_indices(order.epoch_permutation(0, 0, 96), s, 16) for s in range(6)])
from vggcifar import steps
out = {}
# K steps a call; on JAX also the one-call lax.scan over them.
loops = [(1, "calls"), (3, "calls")] + ([(3, "scan")] if keras.backend.backend() == "jax" else [])
for k, loop in loops:
    c = make_config("spec-he", model="vgg11", width=0.0625, dense_units=16, epochs=1, batch_size=16,
                    val_split=0, precision="float32", augment=["flip"])
    _, model = build.build_training(c, 10, 6)
    runner = steps.make_runner(model, data.x_train, data.y_train, 10, jax_loop=loop)
    for start in range(0, 6, k):
        losses, _ = runner.run(rows[start:start + k])
        assert losses.shape == (len(rows[start:start + k]),) and np.isfinite(losses).all(), losses
    out[k, loop] = [keras.ops.convert_to_numpy(v.value) for v in model.variables + model.optimizer.variables]
worst = max(float(np.max(np.abs(a - b) / (np.abs(b) + 1e-3)))
            for key in loops[1:] for a, b in zip(out[1, "calls"], out[key]))
print("WORST", worst, len(loops))
"""
    env = {**os.environ, "KERAS_BACKEND": other}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    worst, compared = done.stdout.split("WORST")[1].split()[:2]
    assert int(compared) == (3 if other == "jax" else 2)
    assert float(worst) < 1e-3, worst


@pytest.mark.parametrize("gpu, plugin, expected", [
    (False, False, "tensorflow"), (False, True, "tensorflow"), (True, False, "tensorflow"), (True, True, "jax")])
def test_default_backend_follows_the_hardware(monkeypatch, gpu, plugin, expected):
    import vggcifar

    monkeypatch.setattr(vggcifar, "_has_nvidia_gpu", lambda: gpu)
    monkeypatch.setattr(vggcifar, "_has_jax_cuda", lambda: plugin)
    monkeypatch.setattr(vggcifar, "_cuda_probe", lambda: (13000, 1, (9, 0)))  # a GPU JAX can use (H100)
    chosen, why = vggcifar.default_backend()
    assert chosen == expected and why
    if gpu and not plugin:
        assert "pip install -e '.[gpu]'" in why


def test_a_users_backend_wins_and_the_choice_is_recorded(tmp_path):
    # (The package's default, said and recorded the same way: tests/test_cli.py.)
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    out = subprocess.run([sys.executable, "-c", BACKEND_CHOICE_PROBE], env=env, capture_output=True, text=True,
                         timeout=120)
    said = "KERAS_BACKEND set by the user"
    assert out.stdout.strip().split(" | ") == ["jax", said, said], out.stdout + out.stderr[-2000:]
