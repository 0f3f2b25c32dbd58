"""The builder against the spec's figures, and its argument checks."""

import re

import numpy as np
import pytest

import keras
from conftest import SPEC_TABLE
from vggcifar.model import CONFIGS, build_vgg, copy_weights

# Tiny widths keep these tests fast; the spec network is built symbolically.
TINY = [4, "M", 8, "M"]


def spec_weight_column():
    """(operation, WEIGHTS(N)) for every operation row of the spec's table."""
    rows = []
    for line in SPEC_TABLE.read_text().splitlines():
        m = re.match(r"^\s*(\w+)\s+\S.*-{19}\s+(\d+)\s+[\d.]+%$", line)
        if m:
            rows.append((m.group(1), int(m.group(2))))
    return rows


def test_spec_network_parameter_count(spec_network):
    model = spec_network
    assert model.count_params() == 33_638_218


def test_each_layer_matches_spec_weights_column(spec_network):
    spec = spec_weight_column()
    assert len(spec) == 37  # 13 pads + 13 convs + 5 pools + flatten + 3 dense + 2 dropouts
    ours = [(type(l).__name__, l.count_params()) for l in spec_network.layers
            if type(l).__name__ not in ("InputLayer", "Activation")]
    assert ours == spec


def test_spec_layer_sequence(spec_network):
    kinds = [type(l).__name__ for l in spec_network.layers]
    assert kinds[:5] == ["InputLayer", "ZeroPadding2D", "Conv2D", "Activation", "ZeroPadding2D"]
    assert kinds.count("Conv2D") == 13 and kinds.count("ZeroPadding2D") == 13
    assert kinds.count("MaxPooling2D") == 5
    assert kinds[-9:] == ["Flatten", "Dense", "Activation", "Dropout", "Dense", "Activation",
                          "Dropout", "Dense", "Activation"]
    conv = spec_network.get_layer("block1_conv1")
    assert conv.kernel_size == (3, 3) and conv.strides == (1, 1) and conv.padding == "valid"
    assert spec_network.layers[-1].activation.__name__ == "softmax"


@pytest.mark.parametrize("name,convs", [("vgg11", 8), ("vgg13", 10), ("vgg16", 13), ("vgg19", 16)])
def test_configs(name, convs):
    # The layer count does not depend on the width: a narrow build is enough
    # (the full VGG-16's weights: test_spec_network_parameter_count).
    assert sum(1 for x in CONFIGS[name] if x != "M") == convs
    model = build_vgg(name, width=0.0625, dense_units=8)
    assert sum(1 for l in model.layers if type(l).__name__ == "Conv2D") == convs
    assert sum(1 for l in model.layers if type(l).__name__ == "MaxPooling2D") == 5


def test_channels_first_same_parameters_and_shapes():
    model = build_vgg(data_format="channels_first")
    assert model.count_params() == 33_638_218
    assert tuple(model.input.shape) == (None, 3, 32, 32)
    assert tuple(model.get_layer("block1_pad1").output.shape) == (None, 3, 34, 34)


def test_batch_norm_variant():
    model = build_vgg(batch_norm=True)
    bns = [l for l in model.layers if type(l).__name__ == "BatchNormalization"]
    assert len(bns) == 13
    assert not model.get_layer("block1_conv1").use_bias
    names = [l.name for l in model.layers]
    assert names.index("block1_bn1") == names.index("block1_conv1") + 1
    assert names.index("block1_relu1") == names.index("block1_bn1") + 1


def test_explicit_and_same_padding_compute_the_same_function():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (3, 32, 32, 3)).astype("uint8")
    kwargs = dict(dense_units=16, rescale=1 / 255, dropout=0.0)
    explicit = build_vgg(TINY, padding="explicit", **kwargs)
    same = build_vgg(TINY, padding="same", **kwargs)
    copy_weights(explicit, same)
    a = explicit.predict(x, verbose=0)
    b = same.predict(x, verbose=0)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert len(explicit.layers) == len(same.layers) + 2  # one ZeroPadding2D per conv


def test_channels_first_with_channels_last_input_matches_channels_last():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 255, (2, 32, 32, 3)).astype("uint8")
    kwargs = dict(dense_units=8, rescale=1 / 255, dropout=0.0, config=TINY)
    last = build_vgg(**kwargs)
    first = build_vgg(data_format="channels_first", input_layout="channels_last", **kwargs)
    # Flatten orders features differently in the two layouts: compare up to it.
    cut = lambda m: keras.Model(m.input, m.get_layer("block2_pool").output)
    copy_weights(last, first)
    a = cut(last).predict(x, verbose=0)
    b = cut(first).predict(x, verbose=0)
    np.testing.assert_allclose(a, b.transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)


def test_rescale_takes_raw_uint8():
    model = build_vgg(TINY, dense_units=8, rescale=1 / 255)
    assert model.input.dtype == "uint8"
    assert model.layers[1].name == "rescale"
    out = model.predict(np.full((2, 32, 32, 3), 255, np.uint8), verbose=0)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("kwargs,needle", [
    (dict(config="vgg17"), "Received: config='vgg17'"),
    (dict(config=[64, "X"]), "Received: config=[64, 'X']"),
    (dict(data_format="nchw"), "Received: data_format='nchw'"),
    (dict(padding="valid"), "Received: padding='valid'"),
    (dict(num_classes=1), "Received: num_classes=1"),
    (dict(dense_units=-1), "Received: dense_units=-1"),
    (dict(dropout=1.0), "Received: dropout=1.0"),
    (dict(input_shape=(32, 32)), "Received: input_shape=(32, 32)"),
])
def test_bad_arguments_name_the_value(kwargs, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        build_vgg(**kwargs)


def test_copy_weights_refuses_different_networks():
    with pytest.raises(ValueError, match="same weighted layers"):
        copy_weights(build_vgg(TINY, dense_units=8), build_vgg([4, "M"], dense_units=8))


def test_saved_model_round_trip(tmp_path):
    model = build_vgg(TINY, dense_units=8, rescale=1 / 255, batch_norm=True)
    x = np.random.default_rng(2).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(model.predict(x, verbose=0), loaded.predict(x, verbose=0), rtol=1e-6)
