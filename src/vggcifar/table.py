"""The spec's architecture table, drawn from a Keras 3 model's own layers.

The spec's table was printed by keras-sequential-ascii, which does not run on
Keras 3. This module writes the same format from ``model.layers``: an operation
row per layer (name, glyph, weight count and share) between data rows (output
shape, centred under a 19-character rule). An ``Activation`` layer gets no row
of its own: its name labels the data row of its output, as in the spec.
"""

from __future__ import annotations

HEADER = "OPERATION           DATA DIMENSIONS   WEIGHTS(N)   WEIGHTS(%)"
RULE = "-" * 19
NAME_WIDTH = 20

#: Five-character pictures of each kind of layer, as the spec draws them.
GLYPHS = {
    "InputLayer": "#####",
    "ZeroPadding2D": "\\|||/",
    "Conv2D": " \\|/ ",
    "MaxPooling2D": "Y max",
    "AveragePooling2D": "Y avg",
    "Flatten": "|||||",
    "Dense": "XXXXX",
    "Dropout": " | ||",
    "BatchNormalization": " μ|σ ",
    "Rescaling": " *k  ",
    "Permute": " >-< ",
    "Activation": " f|  ",
}


def _dims(shape) -> str:
    dims = [d for d in shape[1:]]
    return "".join(f"{d:5d}" for d in dims).center(len(RULE))


def _data_row(label: str, shape) -> str:
    return f"{label:>{NAME_WIDTH}}   #####{_dims(shape)}"


def _activation_name(layer) -> str | None:
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", None)
    return None if name in (None, "linear") else name


def architecture_rows(model) -> list[tuple[str, str, tuple, int, str]]:
    """(kind, label, output shape, weights, activation) for each drawn step.

    Computing separate from drawing: tests and other front ends use these rows.
    """
    rows = []
    for layer in model.layers:
        kind = type(layer).__name__
        shape = tuple(layer.output.shape)
        rows.append((kind, layer.name, shape, layer.count_params(), _activation_name(layer)))
    return rows


def architecture_table(model) -> str:
    """The spec's table for ``model`` (a chain of layers), as one string."""
    rows = architecture_rows(model)
    total = sum(r[3] for r in rows) or 1
    lines = [HEADER, ""]
    pending: str | None = None  # data row waiting for a possible Activation label
    pending_shape = None
    for kind, _, shape, weights, activation in rows:
        if kind == "InputLayer":
            pending, pending_shape = "Input", shape
            continue
        if kind == "Activation":
            pending, pending_shape = activation or "", shape
            continue
        if pending_shape is not None:
            lines.append(_data_row(pending, pending_shape))
        glyph = GLYPHS.get(kind, kind[:5].center(5))
        lines.append(
            f"{kind:>{NAME_WIDTH}}   {glyph} {RULE}{weights:10d}{100.0 * weights / total:8.1f}%"
        )
        pending, pending_shape = activation or "", shape
    if pending_shape is not None:
        lines.append(_data_row(pending, pending_shape))
    return "\n".join(line.rstrip() for line in lines) + "\n"
