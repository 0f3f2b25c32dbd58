"""`vggcifar experiment --recipe a,b`: one run folder per recipe, compared in
comparison.md and comparison.json from the folders' own files; and
`vggcifar compare`, the same comparison of any run folders."""

import pytest

from conftest import TINY_ARGS
from vggcifar import fsutil
from vggcifar.cli import main
from vggcifar.progress import hms
from vggcifar.comparison import compare_runs
from vggcifar.report import comparison_markdown


def _fake_run(folder, milestones, accuracies, final, *, recipe=None, history=None):
    fsutil.write_json(folder / "run.json", {"milestones": milestones, "data": {}})
    fsutil.write_json(folder / "environment.json", {"dataset": {"name": "cifar10", "synthetic": False},
                                                    "backend": "jax", "precision": "float32"})
    fsutil.write_json(folder / "config.json", {"recipe": recipe or folder.name, "val_split": 500})
    for m, acc in zip(milestones, accuracies):
        top5 = final.get("top_5_accuracy") if m == final["epoch"] else None
        fsutil.write_json(folder / f"epochs-{m:03d}" / "metrics.json",
                          {"epoch": m, "test_accuracy": acc, "top_5_accuracy": top5})
    fsutil.write_json(folder / "metrics.json", final)
    if history:
        (folder / "history.csv").write_text("epoch,val_loss,val_accuracy\n"
                                            + "".join(f"{e},{l},{a}\n" for e, l, a in history))


def test_comparison_from_run_folders(tmp_path):
    _fake_run(tmp_path / "a", [1, 2], [0.5, 0.75],
              {"epoch": 2, "test_accuracy": 0.75, "status": "complete", "collapse": None, "train_seconds": 100.0,
               "train_images": 1000, "synthetic": False, "top_5_accuracy": 0.96})
    # Diverged in epoch 2: only the first milestone exists.
    _fake_run(tmp_path / "b", [1, 2], [0.1],
              {"epoch": 1, "test_accuracy": 0.1, "status": "failed", "reason": "nan",
               "collapse": {"class": 0, "share": 1.0, "class_name": "airplane"}, "train_seconds": 40.0,
               "train_images": 900, "synthetic": False})
    result = compare_runs(tmp_path, ["a", "b", "c"])
    assert result["milestones"] == [1, 2] and result["dataset"] == "cifar10" and result["synthetic"] is False
    a, b, c = result["rows"]
    assert a["test_accuracy"] == {"1": 0.5, "2": 0.75} and a["final_accuracy"] == 0.75
    assert a["images_per_second"] == pytest.approx(1000 * 2 / 100.0) and a["collapsed"] is False
    assert a["top_5_accuracy"] == 0.96 and a["epochs"] == 2 and (a["precision"], a["backend"]) == ("float32", "jax")
    assert b["test_accuracy"] == {"1": 0.1, "2": None} and b["final_accuracy"] is None
    assert b["status"] == "failed" and b["collapsed"] is True and b["top_5_accuracy"] is None
    assert b["images_per_second"] == pytest.approx(900 * 1 / 40.0)
    assert c["status"] == "missing" and c["test_accuracy"] == {} and c["images_per_second"] is None
    md = comparison_markdown(result)
    assert "| run | epochs | accuracy after 1 | accuracy after 2 | final accuracy | top-5 | collapsed | " \
           "time of learning | images/s | precision | backend |" in md
    assert "| [`a`](a/report.md) | 2 | 50.00% | 75.00% | 75.00% | 96.00% | no | 0:01:40 | 20 | float32 | jax |" in md
    assert "| [`b`](b/report.md) | 1 | 10.00% | — | failed | — | yes | 0:00:40 | 22 | float32 | jax |" in md
    assert "| [`c`](c/report.md) | — | — | — | missing | — | no | — | — | — | — |" in md
    assert "Synthetic data" not in md


def _experiment(run_dir, *extra):
    return main(["experiment", "--recipe", "spec,spec-he", "--dataset", "synthetic", "--limit-train", "96",
                 "--limit-test", "32", "--milestones", "1", "--batch-size", "16", "--precision", "float32",
                 "--quiet", "--run-dir", str(run_dir), *TINY_ARGS, *extra])


@pytest.mark.slow
def test_experiment_compares_recipes_side_by_side(tmp_path, capsys):
    run_dir = tmp_path / "compare"
    assert _experiment(run_dir) == 0
    saved = fsutil.read_json(run_dir / "comparison.json")
    md = (run_dir / "comparison.md").read_text()
    assert [r["recipe"] for r in saved["rows"]] == ["spec", "spec-he"]
    assert saved["milestones"] == [1] and saved["synthetic"] is True
    assert "Synthetic data" in md
    # Each recipe is a whole run folder; the comparison repeats its figures.
    train_images = {"spec": 96, "spec-he": 96 - 9}  # spec-he holds out 10% of 96
    for row in saved["rows"]:
        folder = run_dir / row["recipe"]
        assert (folder / "report.md").is_file() and (folder / "model.keras").is_file()
        at_1 = fsutil.read_json(folder / "epochs-001" / "metrics.json")
        final = fsutil.read_json(folder / "metrics.json")
        assert fsutil.read_json(folder / "config.json")["recipe"] == row["recipe"]
        assert row["test_accuracy"] == {"1": at_1["test_accuracy"]}
        assert row["final_accuracy"] == final["test_accuracy"]
        assert row["collapsed"] == bool(final["collapse"])
        assert row["images_per_second"] == pytest.approx(train_images[row["recipe"]] / final["train_seconds"])
        acc = f"{100 * final['test_accuracy']:.2f}%"
        line = (f"| [`{row['recipe']}`]({row['recipe']}/report.md) (synthetic) | 1 | {acc} | {acc} | "
                f"{100 * final['top_5_accuracy']:.2f}% | {'yes' if final['collapse'] else 'no'} | "
                f"{hms(final['train_seconds'])} | {row['images_per_second']:.0f} | float32 |")
        assert line in md
    # Again without --resume: refused before anything trains.
    capsys.readouterr()
    assert _experiment(run_dir) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "already holds a run; pass --resume" in err
    # With --resume: each folder continues (here: is already complete) and the comparison is rewritten.
    (run_dir / "comparison.json").unlink()
    assert _experiment(run_dir, "--resume") == 0
    assert fsutil.read_json(run_dir / "comparison.json") == saved

    # One recipe: a plain run folder, no comparison, as before.
    single = tmp_path / "single"
    assert main(["experiment", "--recipe", "spec", "--dataset", "synthetic", "--limit-train", "64", "--limit-test",
                 "16", "--milestones", "1", "--batch-size", "16", "--quiet", "--run-dir", str(single),
                 *TINY_ARGS]) == 0
    assert (single / "report.md").is_file() and not (single / "comparison.md").exists()
    assert not (single / "spec").exists()


def test_bad_recipe_lists_are_refused_before_training(tmp_path, capsys):
    assert _experiment(tmp_path / "x", "--recipe", "spec,spec") == 2
    assert "names a recipe twice" in capsys.readouterr().err
    assert main(["experiment", "--recipe", "spec,nope", "--dataset", "synthetic", "--milestones", "1",
                 "--run-dir", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert "Received: recipe='nope'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "y" / "spec").exists()


@pytest.mark.slow
def test_learning_recipes_learn_and_the_spec_recipe_collapses(tmp_path):
    # The three recipes as shipped, on a VGG-16 of 3/16 width and 2,000
    # synthetic images at batch 64 for 6 epochs; the learning recipes' rates
    # scaled to batch 64 (spec-he's AdamW 3e-4, vgg16-bn 0.025). Measured on
    # an AMD EPYC with avx512_bf16 (about 40 s alone) with --precision
    # float32 / mixed_bfloat16 for all three: spec 9.4% / 9.4% (collapsed),
    # spec-he 61.0% / 61.9%, vgg16-bn 99.3% / 99.1%. Chance is 10%. At a
    # quarter width, spec-he: 3,000 images 85.7% / 88.0%, 2,000 68.9% / 64.5%,
    # 1,600 51.6% / 55.8%, 1,200 35.4% / 33.5% (too near the bar to test); at
    # an eighth with 64 dense units, 2,000 images: 28.5% / 33.2%.
    run_dir = tmp_path / "cmp"
    assert main(["experiment", "--recipe", "spec,spec-he,vgg16-bn", "--dataset", "synthetic",
                 "--limit-train", "2000", "--limit-test", "1000", "--epochs", "6", "--milestones", "6",
                 "--batch-size", "64", "--set", "width=0.1875", "--set", "dense_units=128", "--quiet",
                 "--run-dir", str(run_dir)]) == 0
    rows = {r["recipe"]: r for r in fsutil.read_json(run_dir / "comparison.json")["rows"]}
    final = {name: fsutil.read_json(run_dir / name / "metrics.json") for name in rows}
    assert rows["spec"]["collapsed"] and final["spec"]["test_accuracy"] < 0.2
    assert "collapse" in (run_dir / "spec" / "report.md").read_text().lower()
    assert final["spec-he"]["test_accuracy"] >= 0.3 and not final["spec-he"].get("collapse")
    assert final["vgg16-bn"]["test_accuracy"] >= 0.8 and not final["vgg16-bn"].get("inference_mismatch")
    for name, row in rows.items():
        assert row["final_accuracy"] == pytest.approx(final[name]["test_accuracy"])


# ------------------------------------------------------------------ vggcifar compare
def _complete(epochs, accuracy, seconds, top5=None, images=1000):
    return {"epoch": epochs, "test_accuracy": accuracy, "status": "complete", "collapse": None,
            "train_seconds": seconds, "train_images": images, "synthetic": False, "top_5_accuracy": top5}


@pytest.fixture
def folders(tmp_path):
    """A run, a folder of three seeds, and a comparison of two recipes."""
    _fake_run(tmp_path / "runs" / "one", [1, 2], [0.5, 0.8], _complete(2, 0.8, 50.0, 0.97), recipe="vgg16-bn",
              history=[(1, 1.5, 0.4), (2, 0.9, 0.7)])
    seeds = tmp_path / "runs" / "seeds"
    curves = {0: [(1, 1.2, 0.5), (2, 0.8, 0.75)], 1: [(1, 1.0, 0.6), (2, 0.7, 0.85)], 2: [(1, 1.1, 0.7)]}
    for seed, acc in ((0, [0.55, 0.75]), (1, [0.65, 0.85]), (2, [0.6, 0.9])):
        _fake_run(seeds / f"seed-{seed}", [1, 2], acc, _complete(2, acc[-1], 40.0 + seed, 0.9 + seed / 100),
                  recipe="spec-he", history=curves[seed])
    fsutil.write_json(seeds / "seeds.json", {"seeds": [0, 1, 2]})
    cmp = tmp_path / "runs" / "cmp"
    for recipe, acc in (("spec", 0.1), ("spec-he", 0.6)):
        _fake_run(cmp / recipe, [2], [acc], _complete(2, acc, 30.0), history=[(1, 2.3, acc - 0.05), (2, 2.2, acc)])
    fsutil.write_json(cmp / "comparison.json", {"rows": [{"recipe": "spec"}, {"recipe": "spec-he"}]})
    return tmp_path / "runs", curves


def test_compare_puts_run_folders_side_by_side(folders, tmp_path, capsys, monkeypatch):
    import statistics

    import numpy as np
    from PIL import Image

    runs, curves = folders
    monkeypatch.chdir(runs)
    out_dir = tmp_path / "out"
    assert main(["compare", "one", "seeds", "cmp", "--output", str(out_dir)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "VGG-16 on cifar10: runs compared" and out[-1] == f"comparison: {out_dir / 'comparison.md'}"
    head = out[2].split()
    assert head[:3] == ["run", "recipe", "epochs"] and head[-2:] == ["precision", "backend"]
    assert out[3].split() == ["one", "vgg16-bn", "2", "50.00%", "80.00%", "80.00%", "97.00%", "no", "0:00:50",
                              "40", "float32", "jax"]
    seeds_line = out[4]
    mean = statistics.mean([0.75, 0.85, 0.9])
    assert seeds_line.startswith("seeds ") and "spec-he" in seeds_line
    assert f"{100 * mean:.2f}% ± {100 * statistics.stdev([0.75, 0.85, 0.9]):.2f}% (3)" in seeds_line
    assert f"{100 * statistics.mean([0.9, 0.91, 0.92]):.2f}% ± 1.00% (3)" in seeds_line  # top-5 over seeds
    # A comparison folder stands for its recipes' folders.
    assert out[5].split()[:2] == ["cmp/spec", "spec"] and out[6].split()[:2] == ["cmp/spec-he", "spec-he"]

    saved = fsutil.read_json(out_dir / "comparison.json")
    assert [r["name"] for r in saved["rows"]] == ["one", "seeds", "cmp/spec", "cmp/spec-he"]
    assert [r["kind"] for r in saved["rows"]] == ["run", "seeds", "run", "run"]
    seeds_row = saved["rows"][1]
    assert seeds_row["final_accuracy"] == pytest.approx(mean) and seeds_row["seeds"] == [0, 1, 2]
    assert seeds_row["images_per_second"] == pytest.approx(statistics.mean([2000 / 40, 2000 / 41, 2000 / 42]))
    md = (out_dir / "comparison.md").read_text()
    assert "| [`one`](../runs/one/report.md) | vgg16-bn | 2 |" in md
    assert "[`cmp/spec`](../runs/cmp/spec/report.md)" in md and "![validation curves](validation_curves.png)" in md
    # The curves: a seeds folder's is the mean over the seeds at each epoch, with the sample deviation.
    by_name = {c["name"]: c for c in saved["curves"]}
    assert list(by_name) == ["one", "seeds", "cmp/spec", "cmp/spec-he"]
    s = by_name["seeds"]["val_accuracy"]
    assert s["epoch"] == [1, 2]
    assert s["mean"] == pytest.approx([np.mean([0.5, 0.6, 0.7]), np.mean([0.75, 0.85])])
    assert s["std"] == pytest.approx([np.std([0.5, 0.6, 0.7], ddof=1), np.std([0.75, 0.85], ddof=1)])
    assert by_name["one"]["val_loss"] == {"epoch": [1, 2], "mean": [1.5, 0.9], "std": None}
    assert by_name["one"]["validation"] == "500 held-out training images"
    with Image.open(out_dir / "validation_curves.png") as picture:
        assert picture.format == "PNG" and picture.size[0] > 500


def test_compare_without_output_writes_nothing(folders, capsys):
    runs, _ = folders
    before = sorted(p for p in runs.rglob("*"))
    assert main(["compare", str(runs / "one"), str(runs / "seeds" / "seed-1")]) == 0
    out = capsys.readouterr().out
    assert str(runs / "seeds" / "seed-1") in out and "comparison:" not in out
    assert sorted(p for p in runs.rglob("*")) == before


def test_compare_refuses_what_is_not_a_run_folder(folders, tmp_path, capsys):
    runs, _ = folders
    (tmp_path / "empty").mkdir()
    for argv, message in (
        ([str(tmp_path / "empty")], "not a run folder (no run.json, seeds.json or comparison.json in it)"),
        ([str(tmp_path / "nowhere")], "no such folder"),
        ([str(runs / "one"), str(runs / "one") + "/"], "given twice"),
        ([str(runs / "one"), "--output", str(runs / "seeds" / "seed-0")], "is a run folder"),
    ):
        assert main(["compare", *argv]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not (runs / "seeds" / "seed-0" / "comparison.md").exists()
