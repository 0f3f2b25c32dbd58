"""vggcifar bench: the FLOP count, the figures' consistency, and that it times the training path.

Speed itself is never asserted: these tests check what is measured and how,
on tiny networks and a handful of steps.
"""

import json
import math

import numpy as np
import pytest

from vggcifar import backend, bench
from vggcifar import loop as T
from vggcifar import build, order
from vggcifar.cli import main
from vggcifar.config import make_config
from vggcifar.data import load_synthetic
from vggcifar.model import CONFIGS, build_vgg

TINY_PLAN = bench.BenchPlan(warmup_steps=1, windows=2, steps_per_window=2, predict_batches_per_window=1)


def tiny_config(**overrides):
    return make_config("spec", **{"width": 0.0625, "dense_units": 16, "batch_size": 8, **overrides})


def tiny_settings(images: int, **overrides):
    """tiny_config resolved for ``images`` training images, as the bench and fit take it."""
    from vggcifar.settings import resolve

    return resolve(tiny_config(**overrides), images)


# --------------------------------------------------------------------------- #
# FLOPs
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("padding", ["explicit", "same"])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_flops_of_a_small_model_by_hand(padding, data_format):
    model = build_vgg([4, "M"], num_classes=3, dense_units=5, input_shape=(8, 8, 3), padding=padding,
                      data_format=data_format, input_layout="channels_last")
    conv = 8 * 8 * (3 * 3 * 3) * 4  # output positions x (kernel entries x input channels) x filters
    dense = (4 * 4 * 4) * 5 + 5 * 5 + 5 * 3  # flatten(4x4x4) -> 5 -> 5 -> 3
    assert bench.flops(model) == 2 * (conv + dense)


def test_flops_of_the_spec_network(spec_network):
    model = spec_network
    # Independent count from the configuration table: 3x3 convs at 32, 16, 8, 4, 2 pixels.
    macs, side, channels = 0, 32, 3
    for item in CONFIGS["vgg16"]:
        if item == "M":
            side //= 2
        else:
            macs += side * side * 9 * channels * item
            channels = item
    macs += 512 * 4096 + 4096 * 4096 + 4096 * 10
    assert bench.flops(model) == 2 * macs
    assert bench.flops(model) == pytest.approx(0.664e9, rel=0.02)  # the published forward figure


def test_flops_count_through_a_nested_training_model():
    config = tiny_config(augment=("flip",))
    model, train_model = build.build_training(config, 10, steps_per_epoch=4)
    assert train_model is not model  # augmentation wraps the saved network
    assert bench.flops(train_model) == bench.flops(model) > 0


# --------------------------------------------------------------------------- #
# the training path is what is timed
# --------------------------------------------------------------------------- #
def _count_calls(monkeypatch, module, name):
    calls = []
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        calls.append((args, kwargs))
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


def _count_runs(monkeypatch) -> list:
    """(runner, rows) of every call of the training runners made from now on."""
    calls = []
    real = T.make_runner

    def make(train_model, *args, **kwargs):
        runner = real(train_model, *args, **kwargs)
        run = runner.run

        def counted(rows):
            calls.append((train_model, rows))
            return run(rows)

        runner.run = counted
        return runner

    monkeypatch.setattr(T, "make_runner", make)
    return calls


def test_bench_times_the_training_step_that_fit_runs(monkeypatch, tmp_path):
    data = load_synthetic(train=24, test=8)
    builds = _count_calls(monkeypatch, build, "build_training")
    calls = _count_runs(monkeypatch)
    settings = tiny_settings(24, steps_per_execution=1)
    out = bench.measure_training(settings, data.x_train, data.y_train, 10, TINY_PLAN)
    assert len(builds) == 1 and builds[0][0][0] is settings.config
    assert sum(len(rows) for _, rows in calls) == TINY_PLAN.warmup_steps + TINY_PLAN.timed_steps
    assert calls[0][0] is out["train_model"]
    # fit drives the same runner, one call per step at steps_per_execution 1
    calls.clear()
    T.fit(tiny_settings(24, epochs=1, steps_per_execution=1), data, tmp_path / "run", verbose=0,
          log=lambda *_: None)
    assert [len(rows) for _, rows in calls] == [1] * math.ceil(24 / 8)
    # ...and in calls of K steps that never cross an epoch's end
    calls.clear()
    out = bench.measure_training(tiny_settings(24, steps_per_execution=2), data.x_train, data.y_train, 10,
                                 TINY_PLAN)
    assert out["steps_per_execution"] == 2 and [len(rows) for _, rows in calls][:3] == [2, 1, 2]


def test_bench_batches_follow_fits_shuffle_across_epochs(monkeypatch):
    data = load_synthetic(train=20, test=4)  # 3 steps an epoch (8, 8, 4): the timed steps wrap around
    calls = _count_runs(monkeypatch)
    made = _count_calls(monkeypatch, T.steps, "make_runner")
    config = tiny_config(steps_per_execution=1)
    bench.measure_training(tiny_settings(20, steps_per_execution=1), data.x_train, data.y_train, 10, TINY_PLAN)
    seen = [rows[0] for _, rows in calls]
    expected = [order.batch_indices(order.epoch_permutation(config.seed, e, 20), s, 8) for e in (0, 1) for s in range(3)]
    assert len(seen) == 5
    for got, want in zip(seen, expected):
        np.testing.assert_array_equal(got, want)
    x = made[0][0][1]
    assert x is data.x_train and x.dtype == np.uint8  # the set goes to the device as uint8: no float copy


def test_baseline_is_the_spec_model_on_float_input():
    model = bench.baseline_model(tiny_config(), 10)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("ZeroPadding2D") == kinds.count("Conv2D") == 13
    assert "Rescaling" not in kinds
    assert model.inputs[0].dtype == "float32"


# --------------------------------------------------------------------------- #
# the figures
# --------------------------------------------------------------------------- #
REQUIRED = {
    "backend": str, "device": dict, "batch_size": int, "train_images_per_second": float,
    "predict_images_per_second": float, "baseline_train_images_per_second": float,
    "speedup_vs_baseline": float, "achieved_gflops": float, "peak_gflops": float,
    "fraction_of_peak": float, "peak_rss_mib": float, "versions": dict,
}


@pytest.fixture
def small_peak(monkeypatch):
    """The peak measured on small products: the test checks plumbing, not speed."""
    original = bench.matmul_peak_gflops
    monkeypatch.setattr(bench, "matmul_peak_gflops", lambda **kw: original(**{**kw, "max_n": 512, "repeats": 2}))


def test_bench_json_has_the_figures_and_they_agree(capsys, small_peak):
    status = main(["bench", "--quick", "--json", "--width", "0.0625", "--dense-units", "16", "--batch-size", "8",
                   "--images", "64", "--windows", "2", "--steps-per-window", "1"])
    assert status == 0
    out = capsys.readouterr().out
    r = json.loads(out)  # one JSON object, nothing else on stdout
    for key, kind in REQUIRED.items():
        assert isinstance(r[key], kind), (key, r.get(key))
    for key in ("train_images_per_second", "predict_images_per_second", "baseline_train_images_per_second",
                "achieved_gflops", "peak_gflops", "peak_rss_mib"):
        assert r[key] > 0, key
    assert r["batch_size"] == 8 and r["width"] == 0.0625 and r["padding"] == "same"
    assert r["backend"] in r["versions"] and "keras" in r["versions"]
    model = build_vgg(width=0.0625, dense_units=16)
    assert r["forward_gflop_per_image"] == pytest.approx(bench.flops(model) / 1e9)
    assert r["train_gflop_per_image"] == pytest.approx(3 * r["forward_gflop_per_image"])
    assert r["achieved_gflops"] == pytest.approx(r["train_images_per_second"] * r["train_gflop_per_image"])
    assert r["fraction_of_peak"] == pytest.approx(r["achieved_gflops"] / r["peak_gflops"])
    assert r["speedup_vs_baseline"] == pytest.approx(
        r["train_images_per_second"] / r["baseline_train_images_per_second"])
    for key in ("train_images_per_second", "predict_images_per_second", "baseline_train_images_per_second"):
        s = r[key + "_spread"]
        assert s["n"] == 2 and s["min"] <= s["median"] == r[key] <= s["max"]
    assert r["peak_rss_mib"] >= r["train_peak_rss_mib"] > 0


def test_bench_without_baseline_says_so(small_peak):
    r = bench.run_benchmark(tiny_config(), images=32, plan=bench.BenchPlan(
        warmup_steps=0, windows=1, steps_per_window=1, predict_batches_per_window=1, baseline=False))
    assert r["baseline_train_images_per_second"] is None and r["speedup_vs_baseline"] is None
    assert "baseline" not in bench.format_report(r).split("\n")[4]


def test_matmul_peak_grows_n_up_to_the_cap():
    peak = bench.matmul_peak_gflops(max_n=1024, min_seconds=10.0, repeats=1)
    assert peak["n"] == 1024  # 10 s per product is never reached: n stops at the cap
    assert peak["gflops"] == max(peak["backend_gflops"], peak["numpy_gflops"]) > 0


def test_spread_and_plan_checks():
    assert bench.spread([3, 1, 2]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    with pytest.raises(ValueError, match="Received: windows=0"):
        bench.BenchPlan(windows=0)
    assert bench.QUICK.windows >= 5 and bench.FULL.windows >= 5  # the published figures are medians of >= 5


# --------------------------------------------------------------------------- #
# the speed defaults keep the spec's function
# --------------------------------------------------------------------------- #
def test_auto_layout_is_the_backends_faster_one():
    assert backend.resolve_data_format("auto", "torch") == "channels_first"
    assert backend.resolve_data_format("auto", "tensorflow") == "channels_last"
    assert backend.resolve_data_format("channels_last", "torch") == "channels_last"
    with pytest.raises(ValueError, match="Received: data_format='nchw'"):
        make_config("spec", data_format="nchw")


def test_training_defaults_compute_the_spec_function_with_the_spec_weights():
    """The spec recipe trains Conv2D(padding="same") in the backend's layout:
    at the same seed its weights and outputs equal the spec's ZeroPadding2D,
    channels-last network's."""
    import keras

    fast_config = tiny_config()
    spec_config = tiny_config(padding="explicit", data_format="channels_last")
    assert fast_config.padding == "same" and fast_config.data_format == "auto"
    keras.utils.set_random_seed(0)
    fast = build.build_model(fast_config, 10)
    keras.utils.set_random_seed(0)
    spec = build.build_model(spec_config, 10)
    assert [type(l).__name__ for l in spec.layers].count("ZeroPadding2D") == 13
    assert "ZeroPadding2D" not in [type(l).__name__ for l in fast.layers]
    for a, b in zip(fast.get_weights(), spec.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = load_synthetic(train=16, test=1).x_train
    np.testing.assert_allclose(np.asarray(fast.predict_on_batch(x)), np.asarray(spec.predict_on_batch(x)),
                               rtol=1e-5, atol=1e-6)
