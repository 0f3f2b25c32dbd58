"""Flip test-time augmentation in `vggcifar evaluate`, against two plain
predict calls averaged by hand."""

import numpy as np
import pytest

from vggcifar import fsutil
from vggcifar.cli import main
from vggcifar.config import make_config
from vggcifar.data import load_dataset
from vggcifar.metrics import cross_entropy
from vggcifar.build import build_model


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    model = build_model(make_config("spec", width=0.0625, dense_units=16, seed=7), 10)
    # An untrained network's softmax is nearly uniform; sharpen it until the
    # mirror's predictions differ clearly from the image's (how far depends on
    # the random initial weights).
    head = model.get_layer("predictions")
    x = load_dataset(None, "synthetic", limit_train=1, limit_test=64).x_test
    for _ in range(8):
        change = np.abs(model.predict(x, verbose=0) - model.predict(x[:, :, ::-1], verbose=0)).max()
        if change > 0.05:
            break
        head.kernel.assign(head.kernel * 10.0)
    path = tmp_path_factory.mktemp("tta") / "model.keras"
    model.save(path)
    return path, model


def test_flip_is_the_mean_of_image_and_mirror(model_file, tmp_path, capsys):
    path, model = model_file
    data = load_dataset(None, "synthetic", limit_train=1, limit_test=64)
    x = data.x_test
    mirror = x[:, :, ::-1].copy()
    assert not np.array_equal(mirror, x)
    plain = np.asarray(model.predict(x, verbose=0), np.float64)
    flipped = np.asarray(model.predict(mirror, verbose=0), np.float64)
    # The mirror must change the model's answers, or the test could not tell
    # flip evaluation from plain evaluation.
    assert np.abs(plain - flipped).max() > 1e-2
    by_hand = (plain + flipped) / 2

    assert main(["evaluate", str(path), "--dataset", "synthetic", "--limit-test", "64", "--tta", "flip",
                 "--precision", "float32", "--out", str(tmp_path / "flip")]) == 0
    assert "with flip test-time augmentation" in capsys.readouterr().out
    assert main(["evaluate", str(path), "--dataset", "synthetic", "--limit-test", "64",
                 "--precision", "float32", "--out", str(tmp_path / "none")]) == 0
    with_flip = fsutil.read_json(tmp_path / "flip" / "metrics.json")
    without = fsutil.read_json(tmp_path / "none" / "metrics.json")
    assert (with_flip["tta"], without["tta"]) == ("flip", "none")

    assert with_flip["test_loss"] == pytest.approx(cross_entropy(by_hand, data.y_test), rel=1e-5)
    assert with_flip["test_accuracy"] == pytest.approx(float((by_hand.argmax(1) == data.y_test).mean()))
    # Without --tta: the model's own predictions, as before.
    assert without["test_loss"] == pytest.approx(cross_entropy(plain, data.y_test), rel=1e-5)
    assert without["test_accuracy"] == pytest.approx(float((plain.argmax(1) == data.y_test).mean()))
    # The mirror changes the figures: the two evaluations are not the same one.
    assert with_flip["test_loss"] != pytest.approx(without["test_loss"], rel=1e-6)


def test_default_folders_keep_plain_and_flip_apart(model_file):
    from vggcifar.evaluation import evaluate_path

    path, _ = model_file
    _, plain_out = evaluate_path(path, dataset="synthetic", limit_test=16)
    _, flip_out = evaluate_path(path, dataset="synthetic", limit_test=16, tta="flip")
    assert plain_out.name == "model-evaluation" and flip_out.name == "model-evaluation-flip"
    assert (plain_out / "metrics.json").is_file() and (flip_out / "metrics.json").is_file()
    with pytest.raises(ValueError, match="Received: tta='rotate'"):
        evaluate_path(path, dataset="synthetic", limit_test=16, tta="rotate")
