"""What the model gets wrong, as pictures: the most-confused class pairs and
their most confident mistakes, checked against picks computed here
independently (scikit-learn's confusion matrix, a plain sort), the grid's
pixels against the test images, and a run's files and report."""

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from conftest import QUIET, TINY
from vggcifar import fsutil
from vggcifar.config import make_config
from vggcifar.data import load_synthetic
from vggcifar.metrics import MISTAKE_PAIRS, MISTAKES_PER_PAIR, confident_mistakes, summarize
from vggcifar.plots import mistakes_figure, recall_figure
from vggcifar.report import milestone_section
from vggcifar.rundir import RunDir


def expected_mistakes(probs, y_true, pairs=MISTAKE_PAIRS, per_pair=MISTAKES_PER_PAIR):
    """The same picks, computed another way: scikit-learn's confusion matrix,
    its off-diagonal cells sorted by count, then each pair's images sorted by
    the probability of the wrong answer."""
    k = probs.shape[1]
    y_pred = probs.argmax(1)
    cm = sk_confusion_matrix(y_true, y_pred, labels=list(range(k)))
    cells = sorted(((cm[t, p], t, p) for t in range(k) for p in range(k) if t != p and cm[t, p]),
                   key=lambda c: (-c[0], c[1], c[2]))[:pairs]
    out = []
    for count, t, p in cells:
        rows = [i for i in range(len(y_true)) if y_true[i] == t and y_pred[i] == p]
        rows = sorted(rows, key=lambda i: (-probs[i, p], i))[:per_pair]
        out.append((t, p, count, rows))
    return out


def as_tuples(mistakes):
    return [(m["true"], m["predicted"], m["count"], m["images"]) for m in mistakes]


def random_probs(n, k, seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return probs.astype(np.float32), rng.integers(0, k, n)


@pytest.mark.parametrize("seed", range(4))
def test_picks_match_an_independent_computation(seed):
    probs, y = random_probs(400, 10, seed)
    got = confident_mistakes(probs, y)
    assert as_tuples(got) == expected_mistakes(probs, y)
    assert len(got) == MISTAKE_PAIRS and all(len(m["images"]) == MISTAKES_PER_PAIR for m in got)
    for m in got:
        idx = np.array(m["images"])
        assert (y[idx] == m["true"]).all() and (probs[idx].argmax(1) == m["predicted"]).all()
        assert m["true"] != m["predicted"]
        assert m["probabilities"] == sorted(m["probabilities"], reverse=True)
        np.testing.assert_allclose(m["probabilities"], probs[idx, m["predicted"]])


def test_ties_are_broken_by_class_then_by_image():
    # Two cells of 2 images each; within a cell, equal probabilities.
    probs = np.array([[0.2, 0.8], [0.2, 0.8], [0.9, 0.1], [0.9, 0.1]], np.float32)
    y = np.array([0, 0, 1, 1])
    got = confident_mistakes(probs, y)
    assert as_tuples(got) == [(0, 1, 2, [0, 1]), (1, 0, 2, [2, 3])] == expected_mistakes(probs, y)


def test_a_collapsed_model_shows_its_one_class_and_recall_says_so():
    probs, y = random_probs(300, 10, 7)
    probs[:, 3] += 5  # every image called class 3
    mistakes = confident_mistakes(probs, y)
    assert as_tuples(mistakes) == expected_mistakes(probs, y)
    assert {m["predicted"] for m in mistakes} == {3} and len(mistakes) == MISTAKE_PAIRS
    recall = summarize(probs, y, [f"c{i}" for i in range(10)])["per_class"]["recall"]
    assert recall[3] == 1 and sum(recall) == 1
    fig = recall_figure(recall, [f"c{i}" for i in range(10)], title="collapsed")
    widths = [bar.get_width() for bar in fig.axes[0].patches]
    assert widths == pytest.approx(recall)
    fig.clf()


def test_a_perfect_model_has_no_mistakes_and_says_so():
    y = np.arange(20) % 10
    probs = np.eye(10, dtype=np.float32)[y]
    metrics = summarize(probs, y, [f"c{i}" for i in range(10)])
    assert metrics["mistakes"] == []
    fig = mistakes_figure(np.zeros((20, 32, 32, 3), np.uint8), [], metrics["class_names"], title="perfect")
    assert not any(ax.images for ax in fig.axes)
    assert any("no test image is misclassified" in t.get_text() for ax in fig.axes for t in ax.texts)
    fig.clf()
    text = milestone_section({**metrics, "epoch": 1, "train_seconds": 1.0},
                             {"confusion": "cm.png", "mistakes": "m.png", "recall": "r.png"}, {})
    assert "No test image is misclassified." in text


def test_fewer_mistakes_than_the_grid_holds():
    probs = np.array([[0.7, 0.3], [0.4, 0.6], [0.1, 0.9]], np.float32)
    y = np.array([1, 1, 1])
    mistakes = confident_mistakes(probs, y)
    assert as_tuples(mistakes) == [(1, 0, 1, [0])]
    fig = mistakes_figure(np.zeros((3, 32, 32, 3), np.uint8), mistakes, ["a", "b"], title="one")
    assert sum(bool(ax.images) for ax in fig.axes) == 1
    fig.clf()


def test_grid_shows_the_picked_images_as_stored_with_both_labels():
    probs, y = random_probs(200, 10, 3)
    images = np.random.default_rng(0).integers(0, 256, (200, 32, 32, 3), dtype=np.uint8)
    names = [f"class{i}" for i in range(10)]
    mistakes = confident_mistakes(probs, y)
    fig = mistakes_figure(images, mistakes, names, title="t")
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == sum(len(m["images"]) for m in mistakes)
    cells = [(m, i, p) for m in mistakes for i, p in zip(m["images"], m["probabilities"])]
    for ax, (m, i, p) in zip(shown, cells):
        np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), images[i])  # pixels as stored
        assert ax.images[0].get_interpolation() == "nearest"
        true, predicted = ax.get_xlabel().split("\n")[0].split(" → ")
        assert (true, predicted) == (names[y[i]], names[probs[i].argmax()]) and true != predicted
        assert f"p = {p:.2f}" in ax.get_xlabel()
    fig.clf()


@pytest.mark.slow
def test_a_run_draws_the_mistakes_of_its_own_predictions(tmp_path):
    from vggcifar.runs import train_run
    from vggcifar.inference import load_model, predict_probs

    data = load_synthetic(train=160, test=120, seed=5)
    config = make_config("spec-he", **TINY, epochs=2, batch_size=32, lr=0.01, val_split=0, validate_on_test=True,
                         augment=[], warmup_epochs=0)
    run = RunDir(tmp_path / "run")
    train_run(config, data, run.path, milestones=[1, 2], **QUIET)
    for m in (1, 2):
        folder = run.milestone(m)
        metrics = fsutil.read_json(folder.metrics)
        # In the precision the run computed in (model.keras itself is float32).
        probs = predict_probs(load_model(folder.model, config.precision), data.x_test)
        want = expected_mistakes(probs, data.y_test)
        assert want, "the tiny model makes mistakes"
        assert as_tuples(metrics["mistakes"]) == want
        for got in metrics["mistakes"]:
            assert got["true"] != got["predicted"]
            np.testing.assert_allclose(got["probabilities"], probs[got["images"], got["predicted"]], rtol=1e-5)
        assert folder.mistakes_png.stat().st_size > 1000 and folder.recall_png.stat().st_size > 1000
    assert run.mistakes_png.read_bytes() == run.milestone(2).mistakes_png.read_bytes()  # published
    report = run.report.read_text()
    for m in (1, 2):
        assert f"](epochs-{m:03d}/mistakes.png)" in report and f"](epochs-{m:03d}/recall.png)" in report
    assert "**What it gets wrong**" in report and "Most confused: " in report
