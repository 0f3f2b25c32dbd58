"""The architecture table against the spec's, character for character."""

import re

from conftest import SPEC_TABLE
from vggcifar.cli import main
from vggcifar.model import build_vgg
from vggcifar.table import architecture_rows, architecture_table


def spec_lines():
    return [line.rstrip() for line in SPEC_TABLE.read_text().splitlines()]


def test_channels_first_table_equals_the_spec():
    ours = architecture_table(build_vgg(data_format="channels_first")).splitlines()
    assert ours == spec_lines()


def test_channels_last_table_is_the_spec_with_keras3_shapes(spec_network):
    ours = architecture_table(spec_network).splitlines()
    spec = spec_lines()
    assert len(ours) == len(spec)
    assert ours[2] == "               Input   #####     32   32    3"
    for a, b in zip(ours, spec):
        # Operation rows are identical; data rows differ only in the order of dims.
        if "-------------------" in b or "#####" not in b:
            assert a == b
        else:
            dims_a = re.findall(r"\d+", a.split("#####")[1])
            dims_b = re.findall(r"\d+", b.split("#####")[1])
            assert dims_a == (dims_b[1:] + dims_b[:1] if len(dims_b) == 3 else dims_b)
            assert a.split("#####")[0] == b.split("#####")[0]


def test_batch_norm_rows_are_drawn_and_counted():
    model = build_vgg(batch_norm=True, padding="same")
    text = architecture_table(model)
    assert text.count("BatchNormalization") == 13
    assert "ZeroPadding2D" not in text
    weights = sum(int(m) for m in re.findall(r"-{19}\s+(\d+)", text))
    assert weights == model.count_params()
    rows = architecture_rows(model)
    assert [r[0] for r in rows].count("BatchNormalization") == 13


def test_percentages_add_up():
    text = architecture_table(build_vgg("vgg11", dense_units=512))
    shares = [float(m) for m in re.findall(r"([\d.]+)%$", text, flags=re.M)]
    assert abs(sum(shares) - 100.0) < 0.1 * len(shares)


def test_cli_summary_reproduces_the_spec(capsys):
    assert main(["summary", "--data-format", "channels_first"]) == 0
    out = capsys.readouterr().out
    assert [line.rstrip() for line in out.splitlines()] == spec_lines()


def test_cli_summary_keras(capsys):
    assert main(["summary", "--keras"]) == 0
    out = capsys.readouterr().out
    assert "33,638,218" in out and "block1_conv1 (Conv2D)" in out


def test_cli_summary_variants(capsys):
    assert main(["summary", "--model", "vgg19", "--batch-norm", "--padding", "same"]) == 0
    out = capsys.readouterr().out
    assert out.count("Conv2D") == 16 and out.count("BatchNormalization") == 16
