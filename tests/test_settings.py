"""Settings resolved once (vggcifar.settings) from a request (vggcifar.request):
no "auto" left below the resolver, one rule for the images an epoch trains
on, and the command that continues a stopped run named once, for the command
that started it."""

import dataclasses
import signal

import pytest

from conftest import TINY, TINY_ARGS
from vggcifar import backend, fsutil
from vggcifar.cli import main
from vggcifar.config import make_config
from vggcifar.request import make_request, read_config_file
from vggcifar.settings import RunSettings, resolve, usable_images


def test_resolve_leaves_no_auto_and_checks_the_milestones():
    config = make_config("vgg16-bn", **TINY, epochs=4)
    assert "auto" in (config.precision, config.data_format, config.steps_per_execution) and config.val_split is None
    s = resolve(config, 1000, [2, 4])
    c = s.config
    assert "auto" not in (c.precision, c.data_format, c.steps_per_execution, c.devices)
    assert c.val_split == 100 and s.val_images == 100 and s.train_images == 900
    assert s.steps_per_epoch == -(-900 // c.batch_size) and s.milestones == (2, 4) and s.devices
    with pytest.raises(ValueError, match="less than the last milestone 5"):
        resolve(config, 1000, [5])
    # Resolving what is resolved changes nothing (a resumed run's config.json).
    assert resolve(c, 1000, [2, 4]) == s


def test_unresolved_settings_are_a_programming_error(tmp_path):
    from vggcifar import loop
    from vggcifar.data import load_synthetic

    config = make_config("spec", **TINY)
    with pytest.raises(TypeError, match="precision='auto'"):
        RunSettings(dataclasses.replace(config, precision="auto"), ("cpu",), 10, 0, 1, (1,))
    with pytest.raises(TypeError, match="val_split=None"):
        RunSettings(dataclasses.replace(config, val_split=None), ("cpu",), 10, 0, 1, (1,))
    with pytest.raises(TypeError, match="settings vggcifar.settings.resolve makes"):
        loop.fit(config, load_synthetic(16, 4), tmp_path / "run")


def test_one_rule_for_the_images_an_epoch_trains_on(monkeypatch):
    # 2 devices, 1,001 training images, batch 32: the short last batch (9)
    # does not split between 2 devices, so an epoch trains on 1,000.
    assert usable_images(1001, 32, 2) == 1000 and usable_images(1001, 32, 1) == 1001
    assert usable_images(1000, 32, 2) == 1000 and usable_images(1003, 32, 4) == 1000
    monkeypatch.setattr(backend, "resolve_devices", lambda devices, batch_size: ["gpu:0", "gpu:1"][:devices])
    s = resolve(make_config("spec", **TINY, devices=2), 1001)
    assert (s.train_images, s.steps_per_epoch, s.config.devices) == (1000, 32, 2)
    s = resolve(make_config("spec-he", **TINY, batch_size=32, devices=2, val_split=100), 1101)
    assert (s.val_images, s.train_images) == (100, 1000)


def test_metrics_record_the_images_an_epoch_trained_on(tmp_path):
    from vggcifar.data import load_synthetic
    from vggcifar.runs import train_run

    # 70 images, 20 held out: 50 a epoch (spec-he), recorded as such.
    config = make_config("spec-he", **TINY, epochs=1, batch_size=16, val_split=20, precision="float32")
    metrics = train_run(config, load_synthetic(70, 8), tmp_path / "run", verbose=0, log=lambda *_: None)
    assert (metrics["train_images"], metrics["val_images"]) == (50, 20)
    saved = fsutil.read_json(tmp_path / "run" / "config.json")
    assert "auto" not in saved.values() and saved["val_split"] == 20 and saved["devices"] == 1


def _stop_on_sigterm(monkeypatch):
    """Training raises what Ctrl-C's sibling SIGTERM makes the loop raise."""
    from vggcifar import loop
    from vggcifar.stops import Interrupted

    def fit(settings, data, run_dir, **kwargs):
        raise Interrupted("terminated (SIGTERM); the state is saved", signal.SIGTERM)

    monkeypatch.setattr(loop, "fit", fit)


@pytest.mark.parametrize("argv,resume", [
    (["train"], "vggcifar train --resume --run-dir {run}"),
    (["experiment", "--milestones", "1"], "vggcifar experiment --resume --run-dir {run}"),
    (["experiment", "--milestones", "1", "--recipe", "spec,spec-he"],
     "vggcifar experiment --resume --run-dir {run} --recipe spec,spec-he"),
    (["experiment", "--milestones", "1", "--seeds", "0,1"], "vggcifar experiment --resume --run-dir {run} --seeds 0,1"),
    (["experiment", "--milestones", "1", "--separate-runs"],
     "vggcifar experiment --resume --run-dir {run} --separate-runs"),
])
def test_a_stopped_run_names_the_command_that_continues_it(monkeypatch, capsys, tmp_path, argv, resume):
    _stop_on_sigterm(monkeypatch)
    run = tmp_path / "run"
    status = main([*argv, "--dataset", "synthetic", "--limit-train", "32", "--limit-test", "8", "--epochs", "1",
                   *TINY_ARGS, "--run-dir", str(run), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 128 + signal.SIGTERM
    assert err == [f"vggcifar: terminated (SIGTERM); the state is saved: continue with `{resume.format(run=run)}`"]


def test_a_config_file_is_the_starting_settings_and_options_go_over_it(tmp_path, capsys):
    run_config = make_config("spec-he", **TINY, epochs=3, seed=4, batch_size=16, precision="float32")
    path = tmp_path / "config.json"
    path.write_text(run_config.to_json())
    request = make_request("train", config=path)
    assert request.recipes == ("spec-he",) and request.config() == run_config
    assert make_request("train", config=path, seed=9).config() == dataclasses.replace(run_config, seed=9)
    # What `vggcifar recipes NAME --json` prints is such a file too.
    assert main(["recipes", "vgg16-bn", "--json"]) == 0
    shown = tmp_path / "recipe.json"
    shown.write_text(capsys.readouterr().out)
    assert read_config_file(shown)["recipe"] == "vgg16-bn"
    assert make_request("train", config=shown).config() == make_config("vgg16-bn")
    (tmp_path / "bad.json").write_text("[1, 2]")
    assert main(["train", "--config", str(tmp_path / "bad.json")]) == 2
    assert "does not hold a JSON object of config fields" in capsys.readouterr().err


def test_the_same_config_file_and_seed_repeat_a_run_bit_for_bit(tmp_path):
    from conftest import final_variables

    first = tmp_path / "first"
    args = ["--dataset", "synthetic", "--limit-train", "48", "--limit-test", "8", "--quiet"]
    assert main(["train", "--recipe", "spec-he", "--epochs", "2", "--batch-size", "16", "--precision", "float32",
                 *TINY_ARGS, *args, "--run-dir", str(first)]) == 0
    again = tmp_path / "again"
    assert main(["train", "--config", str(first / "config.json"), *args, "--run-dir", str(again)]) == 0
    assert fsutil.read_json(first / "config.json") == fsutil.read_json(again / "config.json")
    for a, b in zip(final_variables(first), final_variables(again), strict=True):
        assert (a == b).all()
