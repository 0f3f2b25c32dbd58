"""The calibration sets and tools of benchmarks/: the digit sets are the ones
docs/recipes.md gives the hashes of, and the probe's and table's measures
agree with values worked out by hand."""

import re
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import digits  # noqa: E402
import recipes_table  # noqa: E402
import stall_probe  # noqa: E402

RECIPES_PAGE = ROOT / "docs" / "recipes.md"


def documented_hashes() -> dict[str, str]:
    text = RECIPES_PAGE.read_text(encoding="utf-8")
    return dict(re.findall(r"^\| `([a-z-]+)`[^|]*\|[^|]*\| `([0-9a-f]{64})` \|$", text, re.M))


@pytest.mark.parametrize("variant", digits.VARIANTS)
def test_each_variant_is_the_set_docs_recipes_gives_the_hash_of(variant):
    x_train, y_train, x_test, y_test = digits.digit_images(variant=variant)
    assert x_train.shape == (1397, 32, 32, 3) and x_test.shape == (400, 32, 32, 3) and x_train.dtype == np.uint8
    # Stratified: each digit's share of the test set is its share of all 1,797 (178-183 of each).
    assert np.bincount(y_test, minlength=10).min() >= 39
    assert digits.content_sha256(x_train, y_train, x_test, y_test) == documented_hashes()[variant]


def test_the_variants_share_the_digits_and_the_split_and_differ_in_colour():
    plain = digits.digit_images(variant="plain")
    colour = digits.digit_images(variant="colour")
    on_colour = digits.digit_images(variant="colour-on-colour")
    np.testing.assert_array_equal(plain[1], colour[1])  # the same labels in the same order
    np.testing.assert_array_equal(plain[1], on_colour[1])
    assert (plain[0][..., 0] == plain[0][..., 2]).all()  # grey
    assert not (colour[0][..., 0] == colour[0][..., 2]).all()
    # On black, a corner (no stroke there) is dark but for the noise; on colour it is the background.
    assert np.median(colour[0][:, 0, 0].astype(float)) < 10
    assert np.median(on_colour[0][:, 0, 0].astype(float)) > 40
    with pytest.raises(ValueError, match="Received: variant='hard'"):
        digits.digit_images(variant="hard")


def test_stall_is_the_leading_epochs_under_twice_chance():
    history = [{"val_accuracy": a} for a in (0.1, 0.19, 0.25, 0.1, 0.9)]
    assert recipes_table.stall_epochs(history) == 2  # a later dip is not a stall
    assert recipes_table.stall_epochs(history[2:]) == 0
    assert recipes_table.stall_epochs([{"val_accuracy": 0.1}] * 3) == 3


def test_mean_cosine_of_alike_and_unlike_images():
    same = np.tile(np.arange(1.0, 7.0), (4, 1))
    assert stall_probe.mean_cosine(same) == pytest.approx(1.0)
    assert stall_probe.mean_cosine(np.eye(5)) == pytest.approx(0.0)
    a = np.array([[1.0, 0.0], [1.0, 1.0]])  # one pair, at 45 degrees
    assert stall_probe.mean_cosine(a) == pytest.approx(np.sqrt(0.5))
