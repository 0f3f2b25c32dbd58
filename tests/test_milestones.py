"""What a report's milestones are: points of one run, or separate runs of
each length (``experiment --separate-runs``), and what report.md says of them."""

import numpy as np
import pytest

from conftest import TINY_ARGS, final_variables
from vggcifar import fsutil
from vggcifar.cli import main
from vggcifar.config import make_config
from vggcifar.report import milestones_note
from vggcifar.rundir import RunDir

# 64 images at batch 32, of which spec-he holds 6 out: 2 steps an epoch.
ARGS = ["--dataset", "synthetic", "--limit-train", "64", "--limit-test", "32", "--batch-size", "32", "--quiet",
        *TINY_ARGS]


@pytest.mark.parametrize("recipe,independent", [("spec", True), ("spec-he", False), ("vgg16-bn", False)])
def test_the_note_says_what_holds_for_the_recipes_schedule(recipe, independent):
    config = make_config(recipe)
    assert config.epoch_independent_schedule == independent
    note = milestones_note(recipe, config.schedule, config.epoch_independent_schedule, [10, 20, 50, 100])
    if independent:
        assert "depends only on the step count" in note and "equals separate runs" in note
        assert "100 epochs of compute instead of 180" in note
    else:
        assert "separate runs" not in note and "depends only on the step count" not in note
        assert "each milestone is a point on one 100-epoch schedule, not the result of a shorter run" in note
        assert "--separate-runs" in note
    separate = milestones_note(recipe, config.schedule, independent, [10, 20], separate=True)
    assert "separate run of that many epochs" in separate and "30 epochs of compute" in separate


def test_constant_schedule_is_step_count_only():
    assert make_config("spec", schedule="constant").epoch_independent_schedule


def same_variables(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.slow
def test_separate_runs_equal_runs_of_each_length_and_resume(tmp_path, capsys):
    one, separate, short = tmp_path / "one", tmp_path / "separate", tmp_path / "short"
    common = ["--recipe", "spec-he", "--epochs", "2", *ARGS]
    assert main(["experiment", *common, "--milestones", "1,2", "--run-dir", str(one)]) == 0
    assert main(["experiment", *common, "--milestones", "1,2", "--separate-runs", "--run-dir", str(separate)]) == 0
    assert main(["train", *ARGS, "--recipe", "spec-he", "--epochs", "1", "--run-dir", str(short)]) == 0

    # The one-run report says its milestones are points on one schedule; the
    # separate runs' report says they are runs of their own.
    one_report, separate_report = (one / "report.md").read_text(), (separate / "report.md").read_text()
    assert "point on one 2-epoch schedule, not the result of a shorter run" in one_report
    assert "equals separate runs" not in one_report
    assert "Each milestone is a separate run of that many epochs" in separate_report
    assert "epochs-001/confusion_matrix.png" in separate_report and "epochs-002/confusion_matrix.png" in separate_report

    # A separate run of 1 epoch is a 1-epoch run, weights and metrics; the one
    # run's epoch-1 milestone is not (its cosine rate spans 2 epochs).
    runs = RunDir(separate)
    assert runs.read_run()["separate_runs"] is True and runs.holds_run()
    assert fsutil.read_json(runs.separate_run(1).config_path)["epochs"] == 1
    assert same_variables(final_variables(runs.separate_run(1).path), final_variables(short))
    a, b = fsutil.read_json(runs.milestone(1).metrics), fsutil.read_json(short / "metrics.json")
    assert (a["test_loss"], a["confusion_matrix"]) == (b["test_loss"], b["confusion_matrix"])
    assert fsutil.read_json(one / "epochs-001" / "metrics.json")["test_loss"] != b["test_loss"]
    # The 2-epoch separate run is the one run (same length, same seed); its files are published on top.
    assert same_variables(final_variables(runs.separate_run(2).path), final_variables(one))
    assert fsutil.read_json(separate / "metrics.json") == fsutil.read_json(runs.milestone(2).metrics)

    # A new run into the folder is refused; --resume continues every separate run
    # (here the 2-epoch one is gone, as if killed before it began).
    assert main(["experiment", *common, "--milestones", "1,2", "--separate-runs", "--run-dir", str(separate)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    reference = final_variables(runs.separate_run(2).path)
    import shutil

    shutil.rmtree(runs.separate_run(2).path)
    assert main(["experiment", "--resume", "--run-dir", str(separate), "--quiet"]) == 0
    assert same_variables(final_variables(runs.separate_run(2).path), reference)
    assert same_variables(final_variables(runs.separate_run(1).path), final_variables(short))
    assert main(["experiment", "--resume", "--separate-runs", "--run-dir", str(one), "--quiet"]) == 2
    assert "drop --separate-runs" in capsys.readouterr().err
