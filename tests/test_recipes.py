"""`vggcifar recipes`: every shown value has a unit and a source, the values
are the configs the recipes make, and docs/recipes.md holds the same tables."""

import json
import re
from pathlib import Path

import pytest

from vggcifar.cli import main
from vggcifar.config import FIELDS, RECIPES, VALUE_SOURCES, TrainConfig, make_config
from vggcifar.report import recipe_settings, recipes_text

RECIPES_PAGE = Path(__file__).resolve().parents[1] / "docs" / "recipes.md"
KEY_SETTINGS = [k for k, meta in FIELDS.items() if meta["key"]]


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_settings_are_the_recipes_configs_with_units_and_sources(recipe):
    rows = recipe_settings(recipe)
    config = make_config(recipe).to_dict()
    defaults = TrainConfig().to_dict()
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys))
    # The key settings, and everything this recipe changes, are shown.
    assert set(KEY_SETTINGS) <= set(keys)
    assert {k for k in RECIPES[recipe] if config[k] != defaults[k]} <= set(keys)
    for r in rows:
        assert r["unit"].strip() and r["source"].strip(), r["key"]
        assert r["value"] == config[r["key"]]
        assert r["changed"] == (config[r["key"]] != defaults[r["key"]])
        want = VALUE_SOURCES[recipe][r["key"]] if r["changed"] else FIELDS[r["key"]]["source"]
        assert r["source"] == want


def test_every_source_names_a_value_its_recipe_changes():
    defaults = TrainConfig().to_dict()
    for recipe, sources in VALUE_SOURCES.items():
        config = make_config(recipe).to_dict()
        stale = [k for k in sources if config[k] == defaults[k]]
        assert not stale, f"{recipe}: sources for unchanged values {stale}"


def test_every_field_has_a_unit_a_meaning_and_a_source():
    for name, meta in FIELDS.items():
        assert meta["unit"].strip() and meta["doc"].strip() and meta["source"].strip(), name
    assert set(FIELDS) == set(TrainConfig().to_dict()) - {"recipe"}


def test_recipes_page_holds_the_recipes_output():
    text = RECIPES_PAGE.read_text(encoding="utf-8")
    found = re.search(r"<!-- recipes:begin -->\n(.*?)<!-- recipes:end -->", text, re.S)
    assert found, "docs/recipes.md has no recipes:begin/end markers"
    assert found.group(1) == recipes_text(), (
        "docs/recipes.md's recipe tables differ from `vggcifar recipes`: put its output between the markers")


def test_cli_prints_tables_one_recipe_and_json(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert out == recipes_text()
    assert all(f"**`{name}`**" in out for name in RECIPES)
    # Changed values in bold, with their source on the same line.
    assert "| lr | **0.1** | per step (peak) | published VGG-16-BN CIFAR-10 runs |" in out
    assert "| decay | 1e-06 (no effect) |" in out
    assert main(["recipes", "spec-he"]) == 0
    out = capsys.readouterr().out
    assert "**`spec-he`**" in out and "**`spec`**" not in out and "vgg16-bn" not in out
    assert main(["recipes", "vgg16-bn", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert list(data["recipes"]) == ["vgg16-bn"]
    values = {r["key"]: r["value"] for r in data["recipes"]["vgg16-bn"]["settings"]}
    config = make_config("vgg16-bn").to_dict()
    assert {k: v for k, v in values.items() if k != "optimizer"} == {k: config[k] for k in values if k != "optimizer"}


def test_unknown_recipe_is_one_line_and_status_2(capsys):
    assert main(["recipes", "vgg99"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "Received: recipe='vgg99'" in err and "spec-he" in err
