"""Command-line options that change what a run does, each checked for its
effect without training where it can be (the runs themselves: test_train.py)."""

import numpy as np
import pytest

from conftest import TINY
from vggcifar import api, cli, runs
from vggcifar import build, order
from vggcifar.cli import build_parser, main
from vggcifar.cluster import MULTI_HOST_ENV
from vggcifar.config import make_config
from vggcifar.rundir import RunDir


def parse(*argv):
    return build_parser().parse_args(list(argv))


def test_set_twice_keeps_the_last_and_an_option_and_set_together_are_refused(capsys):
    args = parse("train", "--set", "lr=0.1", "--set", "lr=0.2", "--set", "augment=[\"flip\"]", "--set", "seed=3")
    config = cli._request(args).config()
    assert config.lr == 0.2 and config.augment == ("flip",) and config.seed == 3
    assert main(["train", "--dataset", "synthetic", "--seed", "1", "--set", "seed=2"]) == 2
    assert "seed is given twice (as an option and with --set)" in capsys.readouterr().err
    assert main(["train", "--dataset", "synthetic", "--set", "lr"]) == 2
    assert "--set expects KEY=VALUE, received 'lr'" in capsys.readouterr().err
    assert cli._request(parse("train", "--set", "kernel-initializer=he_normal")).config().kernel_initializer == \
        "he_normal"


def test_devices_with_resume_replaces_only_the_device_count(tmp_path):
    run = RunDir(tmp_path / "run")
    config = make_config("spec-he", **TINY, epochs=3, seed=7)
    run.write_config(config)
    run.write_run([1, 3], {"dataset": "synthetic"})
    def plan(*argv):
        return runs.resume_plan(cli._request(parse(*argv)))

    resumed = plan("train", "--resume", "--run-dir", str(run.path), "--devices", "all")
    assert resumed.resume and resumed.config.devices == "all"
    assert resumed.config == make_config("spec-he", **TINY, epochs=3, seed=7, devices="all")
    assert resumed.milestones == [1, 3] and resumed.source == {"dataset": "synthetic"}
    assert plan("train", "--resume", "--run-dir", str(run.path)).config.devices == 1
    # Other options do not change a resumed run: its config.json does.
    assert plan("train", "--resume", "--run-dir", str(run.path), "--lr", "9").config.lr == config.lr


def test_bench_threads_and_no_baseline_reach_the_benchmark(monkeypatch, capsys):
    from vggcifar import backend, bench

    seen = {}
    monkeypatch.setattr(backend, "set_torch_threads", lambda n: seen.setdefault("threads", n))
    monkeypatch.setattr(bench, "run_benchmark",
                        lambda config, images, plan: seen.update(config=config, images=images, plan=plan) or {})
    monkeypatch.setattr(bench, "format_report", lambda result: "report\n")
    assert main(["bench", "--quick", "--threads", "3", "--no-baseline", "--windows", "2", "--width", "0.5"]) == 0
    assert seen["threads"] == 3 and seen["plan"].baseline is False and seen["plan"].windows == 2
    assert seen["images"] == 5000 and seen["config"].width == 0.5
    assert main(["bench", "--quick"]) == 0
    assert seen["plan"].baseline is True and seen["threads"] == 3  # not called again without --threads


def test_threads_on_another_backend_is_refused(capsys):
    import keras

    if keras.backend.backend() == "torch":
        pytest.skip("the torch backend takes --threads")
    assert main(["bench", "--threads", "2"]) == 2
    assert "--threads is for the torch backend" in capsys.readouterr().err


def test_multi_host_options_reach_keras_distribution(monkeypatch):
    from vggcifar import backend

    calls = []
    monkeypatch.setattr(backend, "initialize_hosts", lambda *a: calls.append(a))
    for key in MULTI_HOST_ENV.values():
        monkeypatch.delenv(key, raising=False)
    def join(*argv):
        api.join_hosts(cli._request(parse(*argv)))

    join("train")
    assert calls == []  # one host: nothing to join
    join("train", "--coordinator", "10.0.0.1:1234", "--num-processes", "2", "--process-id", "1")
    assert calls == [("10.0.0.1:1234", 2, 1)]
    monkeypatch.setenv("KERAS_DISTRIBUTION_NUM_PROCESSES", "2")
    join("train")
    assert calls[-1] == (None, None, None)  # keras reads the variables itself


def test_seed_sets_the_weights_the_shuffle_and_the_augmentation():
    import keras

    def first_weights(seed):
        model, _ = build.build_training(make_config("spec-he", **TINY, seed=seed, precision="float32"), 10, 5)
        return [np.array(w) for w in model.get_weights()]

    a, b, c = first_weights(0), first_weights(0), first_weights(1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    assert np.array_equal(order.epoch_permutation(0, 3, 100), order.epoch_permutation(0, 3, 100))
    assert not np.array_equal(order.epoch_permutation(0, 3, 100), order.epoch_permutation(1, 3, 100))
    assert not np.array_equal(order.epoch_permutation(0, 3, 100), order.epoch_permutation(0, 4, 100))
    images = np.full((4, 32, 32, 3), 200, np.uint8)

    def augmented(seed):
        layers = build.augmentation_layers(make_config("spec-he", seed=seed), seed)
        x = keras.ops.convert_to_tensor(images)
        for layer in layers:
            x = layer(x, training=True)
        return keras.ops.convert_to_numpy(x)

    assert np.array_equal(augmented(5), augmented(5)) and not np.array_equal(augmented(5), augmented(6))


def test_cutout_erases_one_eight_by_eight_square_in_training_only():
    import keras

    (layer,) = build.augmentation_layers(make_config("spec", augment=["cutout"]), 0)
    images = np.full((8, 32, 32, 3), 200, np.uint8)
    out = keras.ops.convert_to_numpy(layer(keras.ops.convert_to_tensor(images), training=True))
    for picture in out:
        erased = np.argwhere((picture == 0).all(axis=-1))
        rows, cols = erased[:, 0], erased[:, 1]
        assert len(erased) == 64 and np.ptp(rows) == 7 and np.ptp(cols) == 7, erased
        assert (picture[picture != 0] == 200).all()
    same = keras.ops.convert_to_numpy(layer(keras.ops.convert_to_tensor(images), training=False))
    np.testing.assert_array_equal(same, images)


def test_the_report_says_when_a_run_used_a_subset():
    from vggcifar.data import load_synthetic
    from vggcifar.report import render

    whole = load_synthetic(train=100, test=20)
    part = whole.limit(train=64, test=16)
    assert part.describe()["subset"] == {"train": 64, "test": 16} and whole.describe()["subset"] is None

    def text(data):
        return render(title="t", milestones=[], environment={"dataset": data.describe()}, config={})

    assert "> **Subset.** Trained on 64 and tested on 16 images, not the full set." in text(part)
    assert "Subset" not in text(whole)
