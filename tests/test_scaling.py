"""The learning rate follows the batch size (linear rule, explicit lr wins, the
spec keeps its document's rate), and the short-run check counts a run's
optimizer steps and proposes a fix that is enough."""

import json

import pytest

from conftest import QUIET, TINY, TINY_ARGS
from vggcifar.budget import MIN_BN_STEPS_PER_EPOCH, MIN_STEPS, short_run, step_budget, warmup_steps
from vggcifar.cli import _request, build_parser, main
from vggcifar.config import RECIPES, TrainConfig, config_from_dict, make_config
from vggcifar.report import learning_rate_text, short_run_message
from vggcifar.rundir import RunDir

LEARNING = [r for r in RECIPES if make_config(r).lr_scaling == "linear"]


def test_the_learning_recipes_scale_and_the_spec_keeps_its_rate():
    assert LEARNING == ["spec-he", "vgg16-bn"]
    for recipe in LEARNING:
        own = make_config(recipe)
        assert own.batch_size == own.lr_batch_size and own.lr == RECIPES[recipe]["lr"]  # nothing changes
        for batch in (16, 64, 100, 512):
            c = make_config(recipe, batch_size=batch)
            assert c.lr == pytest.approx(RECIPES[recipe]["lr"] * batch / RECIPES[recipe]["lr_batch_size"], rel=1e-12)
            assert (c.lr_batch_size, c.lr_scaling, c.warmup_epochs) == (own.lr_batch_size, "linear", own.warmup_epochs)
    # The cases measured on real images: 0.1 at 256 -> 0.025 at 64; 6e-4 at 128 -> 3e-4 at 64.
    assert make_config("vgg16-bn", batch_size=64).lr == 0.025
    assert make_config("spec-he", batch_size=64).lr == 0.0003
    # The spec: fidelity to the document wins over the rule.
    for batch in (16, 32, 128):
        c = make_config("spec", batch_size=batch)
        assert (c.lr, c.lr_scaling) == (0.01, "none")


def test_an_explicit_lr_wins_and_is_recorded_as_not_scaled():
    c = make_config("vgg16-bn", batch_size=64, lr=0.05)
    assert (c.lr, c.lr_scaling, c.lr_batch_size) == (0.05, "none", 256)
    parser = build_parser()
    for extra in (["--lr", "0.05"], ["--set", "lr=0.05"]):
        args = parser.parse_args(["train", "--recipe", "vgg16-bn", "--batch-size", "64", *extra])
        assert _request(args).config().lr == 0.05
    args = parser.parse_args(["train", "--recipe", "vgg16-bn", "--set", "batch_size=64"])
    assert _request(args).config().lr == 0.025


def test_config_json_reads_back_the_rate_used():
    for c in (make_config("vgg16-bn", batch_size=64), make_config("spec-he", batch_size=32, lr=0.3),
              make_config("spec", batch_size=8)):
        assert config_from_dict(json.loads(c.to_json()), "config.json") == c
    # A config.json written before the rule existed: its lr is the rate it ran at.
    old = make_config("vgg16-bn").to_dict()
    del old["lr_batch_size"], old["lr_scaling"]
    old["batch_size"] = 64
    assert config_from_dict(old, "config.json").lr == 0.1


def test_bad_rules_are_refused():
    with pytest.raises(ValueError, match="lr_scaling"):
        make_config("spec-he", lr_scaling="sqrt")
    with pytest.raises(ValueError, match="lr_batch_size"):
        make_config("spec-he", lr_batch_size=0)


def test_learning_rate_text_says_how_the_rate_was_set():
    scaled = learning_rate_text(make_config("vgg16-bn", batch_size=64).to_dict())
    assert scaled == ("learning rate 0.025 at batch 64: the recipe's 0.1 at batch 256, scaled linearly "
                      "(--lr sets it)")
    assert "given for" in learning_rate_text(make_config("vgg16-bn").to_dict())
    assert "as given" in learning_rate_text(make_config("vgg16-bn", batch_size=64, lr=0.05).to_dict())
    assert "the recipe's at any batch size" in learning_rate_text(make_config("spec", batch_size=64).to_dict())


def test_the_scaled_rate_is_the_schedule_peak_and_warm_up_stays_in_epochs():
    from vggcifar.build import make_schedule

    for batch, peak in ((64, 0.025), (256, 0.1)):
        c = make_config("vgg16-bn", batch_size=batch, epochs=15)
        budget = step_budget(c, 1197)
        schedule = make_schedule(c, budget.steps_per_epoch)
        assert budget.warmup_steps == round(c.warmup_epochs * budget.steps_per_epoch)  # 2 epochs of steps
        assert float(schedule(0)) == 0.0
        assert float(schedule(budget.warmup_steps)) == pytest.approx(peak, rel=1e-6)
        assert float(schedule(budget.steps)) == pytest.approx(0.0, abs=1e-9)


def test_step_budget_counts_as_the_loop_does():
    c = make_config("spec-he", batch_size=64, epochs=15)
    b = step_budget(c, 1197)
    assert (b.steps_per_epoch, b.steps, b.warmup_steps) == (19, 285, 38)
    assert step_budget(make_config("vgg16-bn", epochs=15), 1197).steps == 75
    # The warm-up is at most a fifth of the run; other schedules have none.
    assert warmup_steps(make_config("vgg16-bn", epochs=5), 19) == 19
    assert warmup_steps(make_config("spec"), 100) == 0


def test_short_runs_are_told_with_a_fix_that_is_enough():
    # The measured cases (1,197 training images, 15 epochs).
    assert short_run(make_config("vgg16-bn", batch_size=64, epochs=15), 1197) is None
    assert short_run(make_config("spec-he", batch_size=64, epochs=15), 1197) is None
    bn = short_run(make_config("vgg16-bn", epochs=15), 1197)
    assert bn["reasons"] == ["steps", "bn_steps_per_epoch"] and bn["steps"] == 75
    assert bn["fixes"] == [{"batch_size": 64}]
    he = short_run(make_config("spec-he", epochs=15), 1197)
    assert he["reasons"] == ["steps"] and he["fixes"] == [{"batch_size": 64}, {"epochs": 25}]
    line = short_run_message(he)
    assert "\n" not in line and "150 optimizer steps" in line and "pass --batch-size 64 or --epochs 25" in line
    # CIFAR-10 at the recipes' own settings is long enough.
    assert short_run(make_config("vgg16-bn"), 45000) is None and short_run(make_config("spec-he"), 45000) is None
    # Whatever the run, each proposed fix makes it long enough.
    for recipe in RECIPES:
        for images in (40, 300, 1197, 5000):
            for batch in (16, 64, 256):
                for epochs in (1, 3, 15):
                    c = make_config(recipe, batch_size=batch, epochs=epochs)
                    found = short_run(c, images)
                    steps = step_budget(c, images)
                    long_enough = steps.steps >= MIN_STEPS and (
                        not c.batch_norm or steps.steps_per_epoch >= MIN_BN_STEPS_PER_EPOCH)
                    assert (found is None) == long_enough
                    for fix in (found or {}).get("fixes", []):
                        assert short_run(TrainConfig(**{**c.__dict__, **fix}), images) is None, (c, fix)


@pytest.mark.slow
def test_a_short_run_says_so_once_and_records_it(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", "--recipe", "vgg16-bn", "--dataset", "synthetic", "--limit-train", "90", "--limit-test",
                 "16", "--epochs", "1", "--batch-size", "16", "--quiet", "--run-dir", str(run_dir), *TINY_ARGS]) == 0
    out = capsys.readouterr().out
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["lr"], config["lr_batch_size"], config["lr_scaling"]) == (0.00625, 256, "linear")
    said = [line for line in out.splitlines() if line.startswith("learning rate")]
    assert said == ["learning rate 0.00625 at batch 16: the recipe's 0.1 at batch 256, scaled linearly (--lr sets it)"]
    warned = [line for line in out.splitlines() if "too short to learn" in line]
    assert len(warned) == 1 and "6 optimizer steps in all" in warned[0]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["short_run"]["steps"] == 6 and metrics["train_images"] == 81
    # One epoch: each threshold the validation split reached was reached at it, after all of its learning.
    reached = metrics["time_to"]["50%"]
    history = RunDir(run_dir).read_history()
    assert (reached is not None) == (float(history[0]["val_accuracy"]) >= 0.5)
    assert reached is None or reached == {"epoch": 1, "train_seconds": metrics["train_seconds"]}
    # The budget counted the steps the loop took.
    assert RunDir(run_dir).list_checkpoints()[-1].name == RunDir(run_dir).checkpoint(6).name
    report = (run_dir / "report.md").read_text()
    assert "**Too short to learn.** 6 optimizer steps in all" in report
    assert "learning rate 0.00625 at batch 16: the recipe's 0.1 at batch 256" in report

    # Long enough: no word, nothing recorded (train_run, 260 steps of 1 image at the recipe's rule, 6e-4 / 128).
    from vggcifar.data import load_synthetic
    from vggcifar.runs import train_run

    lines = []
    c = make_config("spec-he", epochs=1, batch_size=1, val_split=0, **TINY)
    metrics = train_run(c, load_synthetic(260, 8), tmp_path / "long", **{**QUIET, "log": lines.append})
    assert metrics["short_run"] is None and not any("too short" in str(line) for line in lines)
    assert sum(str(line).startswith(f"learning rate {c.lr:g} at batch 1:") for line in lines) == 1
