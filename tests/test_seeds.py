"""`vggcifar experiment --seeds`: one normal run folder per seed, and
seeds.json / report.md over them, checked against the seeds' own files with
the statistics module and NumPy as oracles."""

import statistics

import numpy as np
import pytest

from conftest import TINY_ARGS
from vggcifar import fsutil
from vggcifar.cli import main
from vggcifar.metrics import mean_std
from vggcifar.comparison import compare_runs, summarize_seeds
from vggcifar.report import comparison_markdown, seeds_markdown


def test_mean_std_is_the_sample_statistics():
    values = [0.5, 0.75, 0.8]
    assert mean_std(values) == {"mean": pytest.approx(statistics.mean(values)),
                                "std": pytest.approx(statistics.stdev(values)), "n": 3}
    assert mean_std([0.5]) == {"mean": 0.5, "std": None, "n": 1}
    assert mean_std([]) == {"mean": None, "std": None, "n": 0}


def _fake_seed(folder, seed, accuracies, status, milestones=(1, 2)):
    fsutil.write_json(folder / "run.json", {"milestones": list(milestones), "data": {}})
    fsutil.write_json(folder / "config.json", {"recipe": "spec-he", "seed": seed})
    fsutil.write_json(folder / "environment.json", {"dataset": {"name": "cifar10", "synthetic": False}})
    for m, acc in zip(milestones, accuracies):
        cm = [[seed + m, 1], [2, 3]]
        fsutil.write_json(folder / f"epochs-{m:03d}" / "metrics.json",
                          {"epoch": m, "test_accuracy": acc, "confusion_matrix": cm, "class_names": ["a", "b"],
                           "train_seconds": 10.0 * m + seed})
    fsutil.write_json(folder / "metrics.json", {"epoch": milestones[len(accuracies) - 1], "status": status,
                                                "test_accuracy": accuracies[-1], "collapse": None,
                                                "train_seconds": 10.0 * len(accuracies) + seed,
                                                "train_images": 100, "synthetic": False})


def test_summary_from_seed_folders(tmp_path):
    a = tmp_path / "a"
    _fake_seed(a / "seed-0", 0, [0.5, 0.7], "complete")
    _fake_seed(a / "seed-1", 1, [0.6, 0.9], "complete")
    _fake_seed(a / "seed-2", 2, [0.4], "failed")  # diverged in epoch 2
    s = summarize_seeds(a, [0, 1, 2])
    assert s["seeds"] == [0, 1, 2] and s["recipe"] == "spec-he" and s["class_names"] == ["a", "b"]
    one, two = s["milestones"]["1"], s["milestones"]["2"]
    assert one["test_accuracy"] == [0.5, 0.6, 0.4] and one["n"] == 3 and one["seeds"] == [0, 1, 2]
    assert one["mean"] == pytest.approx(0.5) and one["std"] == pytest.approx(statistics.stdev([0.5, 0.6, 0.4]))
    assert two["test_accuracy"] == [0.7, 0.9] and two["n"] == 2 and two["seeds"] == [0, 1]
    assert one["confusion_matrix"] == [[1 + 2 + 3, 3], [6, 9]] and two["confusion_matrix"] == [[2 + 3, 2], [4, 6]]
    assert two["train_seconds"] == pytest.approx(statistics.mean([20.0, 21.0]))
    assert [r["status"] for r in s["runs"]] == ["complete", "complete", "failed"]
    assert one["top_5_accuracy"] == {"mean": None, "std": None, "n": 0}  # two classes: never measured
    md = seeds_markdown(s)
    assert "| 1 | 50.00% ± 10.00% (3) | 0:00:11 |" in md and "top-5" not in md
    assert "| [seed 2](seed-2/report.md) | 40.00% | — | failed | no | 0:00:12 |" in md
    assert "* epochs = 2, 2 seeds (0, 1):" in md

    # Compared with another recipe over one seed: mean ± std (n); one seed has no std.
    fsutil.write_json(a / "seeds.json", s)
    _fake_seed(tmp_path / "b" / "seed-5", 5, [0.3, 0.35], "complete")
    fsutil.write_json(tmp_path / "b" / "seeds.json", summarize_seeds(tmp_path / "b", [5]))
    table = compare_runs(tmp_path, ["a", "b"])
    ra, rb = table["rows"]
    assert ra["kind"] == rb["kind"] == "seeds" and ra["seeds"] == [0, 1, 2] and rb["seeds"] == [5]
    assert ra["status"] == "2 of 3 seeds complete" and ra["final_accuracy"] is None
    assert rb["status"] == "complete" and rb["final_accuracy"] == 0.35 and rb["spread"]["final"] == {"std": None, "n": 1}
    assert ra["spread"]["2"] == {"std": pytest.approx(statistics.stdev([0.7, 0.9])), "n": 2}
    # images/s: the mean of the seeds' own (100 images x epochs / seconds).
    assert ra["images_per_second"] == pytest.approx(statistics.mean([100 * 2 / 20.0, 100 * 2 / 21.0, 100 * 1 / 12.0]))
    md = comparison_markdown(table)
    assert ("| [`a`](a/report.md) | spec-he | 2 | 50.00% ± 10.00% (3) | 80.00% ± 14.14% (2) | "
            "2 of 3 seeds complete | — |") in md
    assert "| [`b`](b/report.md) | spec-he | 2 | 30.00% ± — (1) | 35.00% ± — (1) | 35.00% ± — (1) | — |" in md
    assert "images/s is training images times epochs over that time.\n\nOver seeds: mean ± standard deviation" in md

    # Milestones in epoch order, also from a seeds.json read back (its keys sorted as text).
    _fake_seed(tmp_path / "c" / "seed-0", 0, [0.1, 0.2], "complete", milestones=(5, 10))
    fsutil.write_json(tmp_path / "c" / "seeds.json", summarize_seeds(tmp_path / "c", [0]))
    md = seeds_markdown(fsutil.read_json(tmp_path / "c" / "seeds.json"))
    assert md.index("| 5 | 10.00% ± — (1)") < md.index("| 10 | 20.00% ± — (1)")


def _seeds(run_dir, *extra, recipe="spec-he", seeds="0,1"):
    return main(["experiment", "--recipe", recipe, "--seeds", seeds, "--dataset", "synthetic", "--limit-train", "40",
                 "--limit-test", "16", "--milestones", "1", "--batch-size", "16", "--precision", "float32", "--quiet",
                 "--run-dir", str(run_dir), *TINY_ARGS, *extra])


@pytest.mark.slow
def test_experiment_over_seeds(tmp_path, capsys):
    run_dir = tmp_path / "seeds"
    assert _seeds(run_dir) == 0
    saved = fsutil.read_json(run_dir / "seeds.json")
    own = [fsutil.read_json(run_dir / f"seed-{s}" / "metrics.json") for s in (0, 1)]
    # Each seed is a normal run folder, trained with its own seed.
    for s, metrics in zip((0, 1), own):
        folder = run_dir / f"seed-{s}"
        assert fsutil.read_json(folder / "config.json")["seed"] == s and metrics["status"] == "complete"
        assert (folder / "report.md").is_file() and (folder / "model.keras").is_file()
        assert fsutil.read_json(folder / "epochs-001" / "metrics.json")["test_accuracy"] == metrics["test_accuracy"]
    accuracies = [m["test_accuracy"] for m in own]
    entry = saved["milestones"]["1"]
    assert list(saved["milestones"]) == ["1"]
    assert entry["test_accuracy"] == accuracies and entry["n"] == 2
    assert entry["mean"] == pytest.approx(statistics.mean(accuracies))
    assert entry["std"] == pytest.approx(statistics.stdev(accuracies))
    assert entry["std"] == pytest.approx(np.std(accuracies, ddof=1))
    assert entry["confusion_matrix"] == np.sum([m["confusion_matrix"] for m in own], axis=0).tolist()
    assert entry["train_seconds"] == pytest.approx(statistics.mean(m["train_seconds"] for m in own))
    report = (run_dir / "report.md").read_text()
    assert f"| 1 | {100 * entry['mean']:.2f}% ± {100 * entry['std']:.2f}% (2) |" in report
    assert "[seed 0](seed-0/report.md)" in report and "[seed 1](seed-1/report.md)" in report
    assert f"over seeds: {run_dir / 'report.md'}" in capsys.readouterr().out

    # Again without --resume: refused before anything trains.
    assert _seeds(run_dir) == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    # --resume continues every seed: seed 0 is complete, seed 1 (lost) trains again as it did.
    import shutil

    shutil.rmtree(run_dir / "seed-1")
    assert main(["experiment", "--resume", "--run-dir", str(run_dir), "--seeds", "0,1", "--quiet"]) == 0
    again = fsutil.read_json(run_dir / "seeds.json")
    assert again["milestones"]["1"]["test_accuracy"] == entry["test_accuracy"]
    assert fsutil.read_json(run_dir / "seed-1" / "config.json") == fsutil.read_json(run_dir / "seed-0" / "config.json") | {"seed": 1}

    # Several recipes over seeds: a seeds folder each, compared as mean ± std (one seed: no std).
    compare = tmp_path / "compare"
    assert _seeds(compare, recipe="spec,spec-he", seeds="3") == 0
    table = fsutil.read_json(compare / "comparison.json")
    md = (compare / "comparison.md").read_text()
    for row in table["rows"]:
        summary = fsutil.read_json(compare / row["recipe"] / "seeds.json")
        final = fsutil.read_json(compare / row["recipe"] / "seed-3" / "metrics.json")["test_accuracy"]
        assert summary["milestones"]["1"]["test_accuracy"] == [final] and row["final_accuracy"] == final
        assert f"{100 * final:.2f}% ± — (1)" in md


def test_bad_seed_lists_are_refused(tmp_path, capsys):
    assert _seeds(tmp_path / "a", seeds="1,1") == 2
    assert "names a seed twice" in capsys.readouterr().err
    assert _seeds(tmp_path / "b", "--seed", "4") == 2
    assert "--seed and --seeds" in capsys.readouterr().err
    assert _seeds(tmp_path / "c", "--separate-runs") == 2
    assert "--separate-runs and --seeds" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["experiment", "--seeds", "a,b"])
    assert "expected seeds separated by commas" in capsys.readouterr().err
    assert not any((tmp_path / name).exists() for name in "abc")
