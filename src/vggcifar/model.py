"""VGG networks as data, and the one builder that turns a row into a Keras model.

The defaults reproduce the spec's VGG-16 layer for layer: for every
convolution ``ZeroPadding2D((1, 1)) -> Conv2D(k, 3x3, valid) -> Activation("relu")``,
``MaxPooling2D(2, 2)`` after each block, then
``Flatten -> Dense(4096) -> relu -> Dropout(0.5) -> Dense(4096) -> relu ->
Dropout(0.5) -> Dense(classes) -> softmax``: 33,638,218 parameters.

The table is plain data: reading it (config checks, ``--help``) imports no
Keras backend; the builder imports keras when it runs.
"""

from __future__ import annotations

from collections.abc import Sequence

#: Filters per 3x3 convolution; "M" is a 2x2 max-pooling that closes a block
#: (Simonyan & Zisserman 2014, table 1, configurations A, B, D, E).
CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
              512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}

DATA_FORMATS = ("channels_last", "channels_first")
PADDINGS = ("explicit", "same")
#: The spec's layers: ZeroPadding2D((1, 1)) then a valid 3x3 conv. A training
#: config computes the same function as one padded conv (vggcifar.config).
SPEC_PADDING = "explicit"
INPUT_LAYOUTS = ("model", "channels_last")


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(
            f"Expected `{name}` to be one of {', '.join(map(repr, choices))}. "
            f"Received: {name}={value!r}"
        )


def resolve_config(config: str | Sequence[int | str]) -> list[int | str]:
    """A configuration name from CONFIGS, or an explicit list, checked."""
    if isinstance(config, str):
        if config not in CONFIGS:
            raise ValueError(
                f"Unknown VGG configuration. Expected one of "
                f"{', '.join(sorted(CONFIGS))} or a list of filter counts and "
                f"'M'. Received: config={config!r}"
            )
        return list(CONFIGS[config])
    items = list(config)
    if not items or any(
        not (item == "M" or (isinstance(item, int) and not isinstance(item, bool) and item > 0))
        for item in items
    ):
        raise ValueError(
            "Expected `config` to be a non-empty list of positive filter counts "
            f"and 'M'. Received: config={config!r}"
        )
    return items


def build_vgg(
    config: str | Sequence[int | str] = "vgg16",
    *,
    num_classes: int = 10,
    input_shape: Sequence[int] | None = None,
    data_format: str = "channels_last",
    batch_norm: bool = False,
    bn_momentum: float = 0.99,
    padding: str = SPEC_PADDING,
    dense_units: int = 4096,
    dropout: float = 0.5,
    kernel_initializer: str = "glorot_uniform",
    dense_initializer: str | None = None,
    width: float = 1.0,
    rescale: float | None = None,
    input_layout: str = "model",
    seed: int | None = None,
    name: str | None = None,
):
    """Build a VGG network for small images.

    Args:
        config: a key of ``CONFIGS`` or a list of filter counts and "M".
        num_classes: size of the softmax output.
        input_shape: image shape in ``input_layout``; defaults to 32x32x3.
        data_format: the layout the convolutions compute in.
        batch_norm: a BatchNormalization between each conv and its relu
            (the conv then has no bias, which batch norm would cancel).
        bn_momentum: weight of the old value in batch norm's moving averages.
        padding: "explicit" is the spec's ZeroPadding2D((1, 1)) before a valid
            conv; "same" is Conv2D(padding="same"): the same function with the
            same weights, one layer fewer per conv.
        dense_units: width of the two hidden dense layers (0 for none).
        dropout: dropout rate after each hidden dense layer.
        kernel_initializer: initializer of the conv kernels.
        dense_initializer: initializer of the dense kernels (default: the
            conv one).
        width: multiplies every conv's filter count (1.0 is the paper's
            network; small values make fast test networks).
        rescale: if set, a Rescaling(rescale) layer first, so that the model
            takes raw uint8 pixels (1/255 maps them to [0, 1]).
        input_layout: "model" takes images in ``data_format``;
            "channels_last" takes channels-last images whatever
            ``data_format`` is, and transposes them inside the model.
        seed: seeds the dropout layers' random streams. With a seed their
            state lives in the model's variables (checkpointed and restored);
            without one, the torch backend draws from torch's global RNG.
        name: the model's name (default: the configuration's name).
    """
    import keras
    from keras import layers

    items = resolve_config(config)
    _check_choice("data_format", data_format, DATA_FORMATS)
    _check_choice("padding", padding, PADDINGS)
    _check_choice("input_layout", input_layout, INPUT_LAYOUTS)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ValueError(
            f"Expected `num_classes` to be an integer >= 2. Received: num_classes={num_classes!r}"
        )
    if not isinstance(dense_units, int) or dense_units < 0:
        raise ValueError(
            f"Expected `dense_units` to be an integer >= 0. Received: dense_units={dense_units!r}"
        )
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"Expected `dropout` in [0, 1). Received: dropout={dropout!r}")
    if not width > 0:
        raise ValueError(f"Expected `width` > 0. Received: width={width!r}")
    transpose = input_layout == "channels_last" and data_format == "channels_first"
    if input_shape is None:
        input_shape = (3, 32, 32) if data_format == "channels_first" and not transpose else (32, 32, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or any(not isinstance(d, int) or d <= 0 for d in input_shape):
        raise ValueError(
            f"Expected `input_shape` to be 3 positive integers. Received: input_shape={input_shape!r}"
        )
    dense_initializer = dense_initializer or kernel_initializer
    if name is None:
        name = config if isinstance(config, str) else "vgg"
        if batch_norm:
            name += "_bn"

    inputs = keras.Input(shape=input_shape, name="image", dtype="uint8" if rescale else None)
    x = inputs
    if rescale:
        x = layers.Rescaling(rescale, name="rescale")(x)
    if transpose:
        x = layers.Permute((3, 1, 2), name="to_channels_first")(x)

    block, conv = 1, 0
    for item in items:
        if item == "M":
            x = layers.MaxPooling2D(2, strides=2, data_format=data_format, name=f"block{block}_pool")(x)
            block, conv = block + 1, 0
            continue
        conv += 1
        prefix = f"block{block}_"
        if padding == "explicit":
            x = layers.ZeroPadding2D((1, 1), data_format=data_format, name=f"{prefix}pad{conv}")(x)
        x = layers.Conv2D(
            max(1, int(round(item * width))),
            (3, 3),
            padding="valid" if padding == "explicit" else "same",
            data_format=data_format,
            use_bias=not batch_norm,
            kernel_initializer=kernel_initializer,
            name=f"{prefix}conv{conv}",
        )(x)
        if batch_norm:
            axis = 1 if data_format == "channels_first" else -1
            x = layers.BatchNormalization(axis=axis, momentum=bn_momentum, name=f"{prefix}bn{conv}")(x)
        x = layers.Activation("relu", name=f"{prefix}relu{conv}")(x)

    x = layers.Flatten(data_format=data_format, name="flatten")(x)
    for i in (1, 2) if dense_units else ():
        x = layers.Dense(dense_units, kernel_initializer=dense_initializer, name=f"fc{i}")(x)
        x = layers.Activation("relu", name=f"fc{i}_relu")(x)
        x = layers.Dropout(dropout, seed=None if seed is None else seed + i, name=f"fc{i}_dropout")(x)
    x = layers.Dense(num_classes, kernel_initializer=dense_initializer, name="predictions")(x)
    # float32 softmax whatever the compute precision: probabilities and the
    # loss stay accurate under mixed precision.
    outputs = layers.Activation("softmax", dtype="float32", name="softmax")(x)
    return keras.Model(inputs, outputs, name=name)


def with_dtype_policy(model, policy: str = "float32", *, input_dtype: str | None = None):
    """``model`` rebuilt with every layer computing in ``policy`` and the same
    weights; ``input_dtype`` (e.g. "float32") replaces the dtype its input
    takes. Mixed precision is a training setting, not part of a network: a
    model saved or exported is ``with_dtype_policy(model, "float32")``, and
    one computing in a mixed policy keeps its output layers in float32, as
    Keras' mixed-precision guide asks (probabilities and the loss stay
    accurate). The variables stay float32 under every policy. ``model``
    itself when nothing would change."""
    import keras

    keep = set(model.output_names) if policy.startswith("mixed_") else set()

    def wanted(layer) -> str:
        return "float32" if layer.name in keep else policy

    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if input_dtype in (None, model.inputs[0].dtype) and all(l.dtype_policy.name == wanted(l) for l in layers):
        return model

    def clone(layer):
        return layer.__class__.from_config({**layer.get_config(), "dtype": wanted(layer)})

    inputs = None
    if input_dtype is not None:
        (spec,) = model.inputs
        inputs = keras.Input(batch_shape=spec.shape, dtype=input_dtype, name=model.layers[0].name)
    copy = keras.models.clone_model(model, input_tensors=inputs, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def copy_weights(source, target) -> None:
    """Copy weights between two builds of one network that differ only in
    padding style (or anything else that adds or drops weightless layers)."""
    src = [layer for layer in source.layers if layer.weights]
    dst = [layer for layer in target.layers if layer.weights]
    if [l.name for l in src] != [l.name for l in dst]:
        raise ValueError(
            "The two models do not have the same weighted layers. Received: "
            f"{[l.name for l in src]} and {[l.name for l in dst]}"
        )
    for a, b in zip(src, dst):
        b.set_weights(a.get_weights())
