"""The run folder's owner (vggcifar.rundir): what is written reads back the
same, names and places are as documented; and the command line's mapping of a
run's outcome to an exit status."""

import json
import signal

import numpy as np
import pytest

from vggcifar.cli import exit_status
from vggcifar.config import make_config
from vggcifar.rundir import HISTORY_FIELDS, CompareDir, ResultDir, RunDir
from vggcifar.loop import Diverged, Interrupted


def test_config_run_and_environment_read_back_as_written(tmp_path):
    run = RunDir(tmp_path / "run")
    config = make_config("vgg16-bn", epochs=3, width=0.25, augment=["flip"], val_split=12)
    run.write_config(config)
    assert run.read_config() == config
    assert json.loads(run.config_path.read_text())["augment"] == ["flip"]
    run.write_run([1, 3], {"dataset": "synthetic", "data": None})
    assert run.read_run() == {"milestones": [1, 3], "data": {"dataset": "synthetic", "data": None}}
    assert run.resume_arguments() == (config, run.read_run())
    env = {"backend": "tensorflow", "dataset": {"name": "synthetic"}}
    run.write_environment(env)
    assert run.read_environment() == env


def test_history_reads_back_with_types_and_empty_values(tmp_path):
    run = RunDir(tmp_path)
    rows = [{"epoch": 1, "loss": 2.5, "accuracy": 0.125, "val_loss": None, "val_accuracy": None, "lr": 0.01,
             "seconds": 3.0, "train_inference_accuracy": 0.1, "inference_mismatch": 0},
            {"epoch": 2, "loss": 1.0, "accuracy": 0.5, "val_loss": 1.25, "val_accuracy": 0.375, "lr": 0.005,
             "seconds": 2.75, "train_inference_accuracy": 0.5, "inference_mismatch": 1}]
    run.write_history(rows)
    assert run.history_path.read_text().splitlines()[0] == ",".join(HISTORY_FIELDS)
    back = run.read_history()
    assert back == rows
    assert isinstance(back[0]["epoch"], int) and back[0]["val_loss"] is None


def test_metrics_and_confusion_table(tmp_path):
    folder = ResultDir(tmp_path / "eval")
    metrics = {"epoch": 2, "test_accuracy": 0.5, "confusion_matrix": [[1, 2], [3, 4]]}
    folder.write_metrics(metrics)
    assert folder.has_metrics() and folder.read_metrics() == metrics
    folder.write_confusion_csv(np.array([[1, 2], [3, 4]]), ["cat", "dog"])
    assert folder.confusion_csv.read_text() == "true\\predicted,cat,dog\ncat,1,2\ndog,3,4\n"


def test_places_in_a_run_folder(tmp_path):
    run = RunDir(tmp_path)
    assert run.milestone(10).path == tmp_path / "epochs-010"
    assert run.evaluation().path == tmp_path / "evaluation"
    assert run.evaluation("flip").path == tmp_path / "evaluation-flip"
    assert run.checkpoint(42) == tmp_path / "checkpoints" / "ckpt-000000042"
    assert CompareDir(tmp_path).recipe("spec-he").path == tmp_path / "spec-he"
    assert {ResultDir(tmp_path).model.name, run.metrics.name, run.report.name, run.curves.name} == {
        "model.keras", "metrics.json", "report.md", "curves.png"}


def test_checkpoints_are_listed_in_step_order_and_make_a_run(tmp_path):
    run = RunDir(tmp_path)
    assert run.list_checkpoints() == [] and not run.holds_run()
    for step in (120, 7, 1000):
        run.checkpoint(step).mkdir(parents=True)
    (run.checkpoints / ".ckpt-000000999.abc.tmp").mkdir()  # a half-written one is not listed
    (run.checkpoints / "notes.txt").write_text("x")
    assert [p.name for p in run.list_checkpoints()] == ["ckpt-000000007", "ckpt-000000120", "ckpt-000001000"]
    assert run.holds_run()


def test_resume_arguments_name_what_is_missing(tmp_path):
    run = RunDir(tmp_path)
    with pytest.raises(ValueError, match=r"config\.json is missing: .* is not a vggcifar run folder"):
        run.resume_arguments()
    run.config_path.write_text("{not json")
    run.write_run([1], {})
    with pytest.raises(ValueError, match=r"config\.json is not valid JSON"):
        run.resume_arguments()


def test_publish_copies_a_milestone_to_the_top(tmp_path):
    run = RunDir(tmp_path)
    m = run.milestone(3)
    m.path.mkdir()
    for name in ResultDir.NAMES:
        (m.path / name).write_bytes(name.encode())
    run.publish(3)
    for name in ResultDir.NAMES:
        assert (tmp_path / name).read_bytes() == name.encode()
    assert run.done_milestones([1, 3]) == [3]


@pytest.mark.parametrize("stop, status", [
    (Diverged("the training loss became nan"), 3),
    (Interrupted("interrupted (Ctrl-C)", signal.SIGINT), 130),
    (Interrupted("terminated (SIGTERM)", signal.SIGTERM), 143),
    (Interrupted("stopped", None), 1),
])
def test_exit_status_of_each_outcome(stop, status):
    assert exit_status(stop) == status
