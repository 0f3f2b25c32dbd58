"""metrics.py against independent oracles: scikit-learn, and closed forms
worked out by hand."""

import math

import numpy as np
import pytest

from vggcifar import metrics


def random_predictions(n=200, k=10, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return probs, rng.integers(0, k, n)


def test_confusion_matrix_and_per_class_agree_with_scikit_learn():
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    probs, y = random_predictions()
    pred = probs.argmax(1)
    pred[pred == 7] = 3  # class 7 never predicted: its precision is undefined (0)
    cm = metrics.confusion_matrix(y, pred, 10)
    np.testing.assert_array_equal(cm, confusion_matrix(y, pred, labels=range(10)))
    assert cm[2].sum() == (y == 2).sum()  # rows are the true classes
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=range(10), zero_division=0)
    got = metrics.per_class(cm)
    np.testing.assert_allclose(got["precision"], p)
    np.testing.assert_allclose(got["recall"], r)
    np.testing.assert_allclose(got["f1"], f)
    assert got["support"] == s.tolist()


def test_per_class_of_a_class_never_seen_nor_predicted_is_zero_not_nan():
    cm = np.array([[3, 0, 0], [1, 2, 0], [0, 0, 0]])
    got = metrics.per_class(cm)
    assert got["precision"] == [0.75, 1.0, 0.0] and got["recall"] == [1.0, 2 / 3, 0.0]
    assert got["f1"][2] == 0.0 and got["f1"][0] == pytest.approx(2 * 0.75 / 1.75)
    assert got["support"] == [3, 3, 0]


def test_cross_entropy_agrees_with_scikit_learn_log_loss():
    from sklearn.metrics import log_loss

    probs, y = random_predictions(seed=1)
    expected = log_loss(y, probs, labels=range(10))
    assert metrics.cross_entropy(probs, y) == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_clips_as_keras_does():
    # A certain wrong answer costs -log(1e-7), not infinity; a certain right one costs -log(1 - 1e-7).
    probs = np.array([[0.0, 1.0], [1.0, 0.0]])
    assert metrics.cross_entropy(probs, [0, 0]) == pytest.approx((-math.log(1e-7) - math.log(1 - 1e-7)) / 2)
    assert metrics.cross_entropy(probs[1:], [0]) == pytest.approx(-math.log(1 - 1e-7))
    assert metrics.cross_entropy([[0.25, 0.75]], [1]) == pytest.approx(-math.log(0.75))


@pytest.mark.parametrize("train,inference,k,flagged", [
    (0.60, 0.225, 10, True),   # the docstring's example: lead 0.5 over chance, inference keeps 0.125
    (0.60, 0.226, 10, False),  # keeps a little more than a quarter of the lead
    (0.60, 0.10, 10, True),    # inference at chance
    (0.299, 0.10, 10, False),  # lead under 0.2 over chance: too early to tell
    (0.3001, 0.10, 10, True),  # lead just over 0.2
    (0.95, 0.90, 10, False),   # both modes agree
    (0.71, 0.55, 2, True),     # two classes: chance 0.5, lead 0.21, inference keeps 0.05 <= 0.0525
    (0.71, 0.56, 2, False),
])
def test_mode_mismatch_on_worked_cases(train, inference, k, flagged):
    assert metrics.mode_mismatch(train, inference, k) is flagged


def test_collapse_at_and_below_the_share():
    assert metrics.collapse([4] * 9 + [1], 10) == {"class": 4, "share": 0.9}
    assert metrics.collapse([4] * 8 + [1, 2], 10) is None
    assert metrics.collapse([], 3) is None


def test_summarize_is_what_metrics_json_holds():
    probs, y = random_predictions(n=50, k=3, seed=2)
    names = ["a", "b", "c"]
    out = metrics.summarize(probs, y, names)
    pred = probs.argmax(1)
    assert out["test_accuracy"] == pytest.approx((pred == y).mean())
    assert out["test_loss"] == metrics.cross_entropy(probs, y)
    assert out["confusion_matrix"] == metrics.confusion_matrix(y, pred, 3).tolist()
    assert out["class_names"] == names and out["images"] == 50 and out["collapse"] is None
    assert out["per_class"] == metrics.per_class(np.array(out["confusion_matrix"]))
    one = metrics.summarize(np.eye(3)[[1] * 10], [0] * 10, names)
    assert one["collapse"] == {"class": 1, "share": 1.0, "class_name": "b"} and one["test_accuracy"] == 0.0


def test_every_view_of_the_confusion_matrix_is_metrics_jsons_matrix(tmp_path):
    # An asymmetric matrix: a transposed table or picture would differ.
    import csv

    from vggcifar.evaluation import write_results
    from vggcifar.plots import confusion_figure
    from vggcifar.report import milestone_section
    from vggcifar.rundir import ResultDir

    names = ["ant", "bee", "cat"]
    y_true = [0, 0, 0, 1, 2, 2, 2, 2]
    y_pred = [1, 1, 0, 1, 2, 0, 0, 2]
    probs = np.eye(3)[y_pred] * 0.8 + 0.2 / 3
    m = {"epoch": 4, **metrics.summarize(probs, y_true, names), "train_seconds": 1.0}
    cm = np.array(m["confusion_matrix"])
    np.testing.assert_array_equal(cm, [[1, 2, 0], [0, 1, 0], [2, 0, 2]])  # rows: true; columns: predicted

    folder = ResultDir(tmp_path / "eval")
    write_results(folder, m, synthetic=False, images=np.zeros((len(y_true), 32, 32, 3), np.uint8))
    with open(folder.confusion_csv, newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == ["true\\predicted", *names]
    assert [row[0] for row in table[1:]] == names
    np.testing.assert_array_equal([[int(v) for v in row[1:]] for row in table[1:]], cm)
    assert folder.confusion_png.stat().st_size > 0

    fig = confusion_figure(cm, names, title="t")
    ax = fig.axes[0]
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), cm / cm.sum(1, keepdims=True))
    cells = {(int(round(t.get_position()[1])), int(round(t.get_position()[0]))): int(t.get_text()) for t in ax.texts}
    assert cells == {(i, j): int(cm[i, j]) for i in range(3) for j in range(3)}
    assert ax.get_ylabel() == "true class" and ax.get_xlabel() == "predicted class"
    assert [t.get_text() for t in ax.get_yticklabels()] == names

    section = milestone_section(m, {"confusion": "p.png"}, {})
    rows = [line for line in section.splitlines() if line.startswith("| **")]
    assert [r.split("|")[1].strip() for r in rows] == [f"**{n}**" for n in names]
    np.testing.assert_array_equal([[int(v) for v in r.strip("|").split("|")[1:]] for r in rows], cm)


def test_labels_as_uint8_do_not_overflow():
    # CIFAR-100's labels fit a byte; true * classes + predicted does not.
    y = np.array([99, 0, 57], np.uint8)
    pred = np.array([0, 99, 57], np.uint8)
    cm = metrics.confusion_matrix(y, pred, 100)
    assert cm[99, 0] == 1 and cm[0, 99] == 1 and cm[57, 57] == 1 and cm.sum() == 3


def test_cross_entropy_computes_in_float64_whatever_it_is_given():
    probs = np.array([[0.3, 0.7], [0.999, 0.001], [1.0, 0.0]], np.float16)
    expected = -np.mean(np.log(np.clip(probs.astype(np.float64)[[0, 1, 2], [1, 0, 1]], 1e-7, 1 - 1e-7)))
    assert metrics.cross_entropy(probs, [1.0, 0.0, 1.0]) == pytest.approx(expected, rel=1e-12)


def test_counts_are_integers_and_small_cases():
    got = metrics.per_class(np.array([[1, 0], [0, 0]]))  # one image, one prediction
    assert got["precision"] == [1.0, 0.0] and got["recall"] == [1.0, 0.0] and got["f1"] == [1.0, 0.0]
    assert all(type(v) is int for v in got["support"])
    assert metrics.collapse([2], 3) == {"class": 2, "share": 1.0}
    # A lead of exactly 0.2 over chance (5 classes: 0.4 - 0.2) is enough to compare.
    assert metrics.mode_mismatch(0.4, 0.2, 5) is True


def test_top_5_accuracy_agrees_with_scikit_learn():
    from sklearn.metrics import top_k_accuracy_score

    for k, n, seed in ((10, 300, 0), (6, 40, 1), (100, 500, 2)):
        probs, y = random_predictions(n=n, k=k, seed=seed)  # continuous: no ties, where the two could differ
        expected = top_k_accuracy_score(y, probs, k=5, labels=range(k))
        assert metrics.top_k_accuracy(probs, y) == pytest.approx(expected)
        assert metrics.summarize(probs, y, [str(i) for i in range(k)])["top_5_accuracy"] == pytest.approx(expected)
    # Five classes or fewer: none, not a trivial 100%.
    for k in (4, 5):
        probs, y = random_predictions(n=20, k=k)
        with pytest.warns(UserWarning, match="meaningless"):  # scikit-learn says so too
            assert top_k_accuracy_score(y, probs, k=5, labels=range(k)) == 1.0
        assert metrics.top_k_accuracy(probs, y) is None
        assert metrics.summarize(probs, y, list("abcde")[:k])["top_5_accuracy"] is None


def test_top_k_ranks_as_predict_does():
    # Ties go to the lower class index, as `vggcifar predict` lists them:
    # class 5 ties with 0..4 and is ranked sixth, so it is not in the top 5.
    probs = np.full((1, 6), 1 / 6)
    assert metrics.ranking(probs)[0].tolist() == [0, 1, 2, 3, 4, 5]
    assert metrics.top_k_accuracy(probs, [5]) == 0.0 and metrics.top_k_accuracy(probs, [4]) == 1.0
    from vggcifar.prediction import top_k

    assert [t["class"] for t in top_k(probs[0], list("abcdef"), 6)] == metrics.ranking(probs)[0].tolist()
    # A hand-worked case: true classes ranked 1st, 5th and 6th.
    probs = np.array([[.5, .1, .1, .1, .1, .1], [.30, .25, .2, .15, .06, .04], [.30, .25, .2, .15, .06, .04]])
    assert metrics.top_k_accuracy(probs, [0, 4, 5]) == pytest.approx(2 / 3)
