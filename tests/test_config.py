"""The typed config: the spec's values pinned to the spec's literal text,
every check's message, and each value read back from what Keras built."""

import json
import math

import numpy as np
import pytest

from vggcifar.config import (DEFAULT_VAL_SPLIT, TrainConfig, config_from_dict, effective_val_split, make_config,
                             resolve_val_split, source_of)


def test_spec_recipe_is_the_spec_literally():
    # SGD(lr=0.01, decay=1e-6, nesterov=True) with old Keras' momentum 0, batch
    # 32 (fit's default), glorot init (Keras' default), Dropout(0.5), 4096-unit
    # head, validation on the test set, no augmentation, float32.
    c = make_config("spec")
    assert (c.lr, c.momentum, c.decay, c.nesterov, c.schedule) == (0.01, 0.0, 1e-6, True, "inverse_time")
    assert (c.batch_size, c.epochs, c.dropout, c.dense_units) == (32, 100, 0.5, 4096)
    assert (c.kernel_initializer, c.dense_initializer, c.batch_norm) == ("glorot_uniform", None, False)
    assert (c.augment, c.label_smoothing, c.weight_decay, c.warmup_epochs) == ((), 0.0, 0.0, 0.0)
    assert (c.validate_on_test, c.val_split, c.precision, c.model, c.width) == (True, 0, "float32", "vgg16", 1.0)
    assert c == TrainConfig(recipe="spec")


def test_overrides_are_typed_and_checked():
    c = make_config("spec", lr=1, augment=["flip"], limit_train=None)
    assert c.lr == 1.0 and isinstance(c.lr, float) and c.augment == ("flip",) and c.limit_train is None
    assert make_config("spec", dense_initializer="he_normal").dense_initializer == "he_normal"
    assert make_config("spec", devices="all").devices == "all"
    for key, value, message in [
        ("width", "wide", "Expected `width` to be float. Received: width='wide'"),
        ("epochs", True, "Expected `epochs` to be int. Received: epochs=True"),
        ("epochs", 1.5, "Expected `epochs` to be int. Received: epochs=1.5"),
        ("nesterov", 1, "Expected `nesterov` to be bool. Received: nesterov=1"),
        ("limit_test", "7", "Expected `limit_test` to be int | None. Received: limit_test='7'"),
        ("augment", "flip", "Received: augment='flip'"),
    ]:
        with pytest.raises(ValueError) as err:
            make_config("spec", **{key: value})
        assert message in str(err.value)
    with pytest.raises(ValueError, match=r"Unknown config key 'colour'\. Expected one of augment, batch_norm"):
        make_config("spec", colour=1)
    with pytest.raises(ValueError, match=r"Unknown recipe\. Expected one of spec, spec-he, vgg16-bn\. "
                                         r"Received: recipe='vgg19'"):
        make_config("vgg19")


@pytest.mark.parametrize("key,bad,good,message", [
    ("model", "vgg17", "vgg11", "in ("),
    ("width", 0.0, 0.01, "to be > 0"),
    ("data_format", "nhwc", "channels_first", "in ('auto', 'channels_last', 'channels_first')"),
    ("epochs", 0, 1, "to be >= 1"),
    ("batch_size", 0, 1, "to be >= 1"),
    ("optimizer", "adam", "adamw", "in ('sgd', 'adamw')"),
    ("lr", 0.0, 1e-9, "to be > 0"),
    ("momentum", 1.0, 0.0, "in [0, 1)"),
    ("momentum", -0.1, 0.99, "in [0, 1)"),
    ("schedule", "step", "cosine", "in ('inverse_time', 'constant', 'cosine')"),
    ("decay", -1e-9, 0.0, "to be >= 0"),
    ("warmup_epochs", -1.0, 0.0, "to be >= 0"),
    ("weight_decay", -1.0, 0.0, "to be >= 0"),
    ("label_smoothing", 1.0, 0.0, "in [0, 1)"),
    ("label_smoothing", -0.1, 0.99, "in [0, 1)"),
    ("augment", ["flip", "rotate"], ["flip", "crop", "cutout"], "to hold only ('crop', 'flip', 'cutout')"),
    ("precision", "float64", "mixed_float16", "in ('float32', 'mixed_bfloat16', 'mixed_float16', 'auto')"),
    ("bn_momentum", 1.0, 0.5, "in (0, 1)"),
    ("bn_momentum", 0.0, 0.01, "in (0, 1)"),
    ("checkpoint_minutes", 0.0, 0.001, "to be > 0"),
    ("devices", 0, 1, "to be 'all' or a positive integer"),
    ("devices", "some", "all", "to be 'all' or a positive integer"),
    ("limit_train", 0, 1, "to be a positive integer"),
    ("limit_test", 0, 1, "to be a positive integer"),
])
def test_each_check_refuses_its_bad_value_and_accepts_the_edge(key, bad, good, message):
    with pytest.raises(ValueError) as err:
        make_config("spec", **{key: bad})
    assert str(err.value).startswith(f"Expected `{key}` {message}") and f"Received: {key}=" in str(err.value)
    assert getattr(make_config("spec", **{key: good}), key) == (tuple(good) if isinstance(good, list) else good)


def test_val_split_and_validation_on_the_test_set():
    # A split given to the spec stops validation on the test set; both at once are refused.
    c = make_config("spec", val_split=100)
    assert c.val_split == 100 and c.validate_on_test is False
    assert make_config("spec", val_split=0).validate_on_test is True
    with pytest.raises(ValueError, match="to be 0 while validate_on_test is true"):
        make_config("spec", val_split=100, validate_on_test=True)
    with pytest.raises(ValueError, match="Expected `val_split` to be >= 0"):
        make_config("spec-he", val_split=-1)
    he = make_config("spec-he")
    assert he.val_split is None and he.validate_on_test is False
    assert effective_val_split(he, 50000) == DEFAULT_VAL_SPLIT == 5000
    assert effective_val_split(he, 80000) == 5000  # never more than 5,000
    assert effective_val_split(he, 20000) == 2000  # a tenth of a smaller set
    assert effective_val_split(he, 130) == 2  # never fewer than a batch (128) left to train on
    assert effective_val_split(he, 100) == 0
    assert resolve_val_split(he, 20000).val_split == 2000
    assert effective_val_split(make_config("spec"), 50000) == 0
    explicit = make_config("spec-he", val_split=72)
    assert effective_val_split(explicit, 200) == 72  # leaves exactly a batch of 128
    with pytest.raises(ValueError, match="to leave at least batch_size=128 of the 199 training images"):
        effective_val_split(explicit, 199)


def test_config_json_round_trip_and_damage():
    c = make_config("vgg16-bn", width=0.25, augment=["crop"])
    assert config_from_dict(c.to_dict(), "x") == c
    assert c.to_dict()["augment"] == ["crop"]
    text = c.to_json()
    assert json.loads(text) == c.to_dict() and text.endswith("}\n")
    keys = [line.split('"')[1] for line in text.splitlines() if line.startswith('  "')]
    assert keys == sorted(c.to_dict()) and '\n  "recipe": "vgg16-bn",\n' in text  # sorted, two spaces a level
    assert config_from_dict({"lr": 0.5}, "x") == make_config("spec", lr=0.5)
    # A spec-he run folder from before the optimizer field trained (and resumes) with SGD.
    old = make_config("spec-he", optimizer="sgd", lr=0.01, weight_decay=0.005).to_dict()
    del old["optimizer"]
    assert config_from_dict(old, "x").optimizer == "sgd"
    assert config_from_dict(make_config("spec-he").to_dict(), "x").optimizer == "adamw"
    with pytest.raises(ValueError, match="^run/config.json does not hold a config; delete the run folder"):
        config_from_dict([1, 2], "run/config.json")


def test_has_effect_and_sources():
    spec, bn = make_config("spec"), make_config("vgg16-bn")
    assert not spec.has_effect("bn_momentum") and bn.has_effect("bn_momentum")
    assert not spec.has_effect("nesterov") and bn.has_effect("nesterov")
    assert spec.has_effect("decay") and not bn.has_effect("decay")
    assert not spec.has_effect("warmup_epochs") and bn.has_effect("warmup_epochs")
    assert spec.has_effect("lr") and bn.has_effect("lr")
    adamw = make_config("vgg16-bn", optimizer="adamw")
    assert not adamw.has_effect("momentum") and not adamw.has_effect("nesterov") and bn.has_effect("momentum")
    assert source_of("vgg16-bn", "batch_norm") == "Ioffe & Szegedy 2015"
    assert source_of("vgg16-bn", "decay") == "spec: decay=1e-6"  # unchanged: the default's source
    assert source_of("spec", "lr") == "spec text (its code says 0.1)"


# --------------------------------------------------------------------------- #
# the schedules against their closed forms
# --------------------------------------------------------------------------- #
def lr_at(config, steps_per_epoch, steps):
    from vggcifar.build import make_schedule

    schedule = make_schedule(config, steps_per_epoch)
    return [float(schedule(t)) if callable(schedule) else float(schedule) for t in steps]


def test_cosine_with_warm_up_is_its_closed_form():
    # 10 epochs of 10 steps, 2 epochs of warm-up: lr * t / 20 up to step 20,
    # then lr * (1 + cos(pi * (t - 20) / 80)) / 2 down to 0 at step 100.
    c = make_config("spec-he", epochs=10, lr=0.2, warmup_epochs=2.0)
    steps = [0, 1, 10, 19, 20, 21, 40, 60, 80, 99, 100]
    expected = [0.2 * t / 20 if t < 20 else 0.2 * (1 + math.cos(math.pi * (t - 20) / 80)) / 2 for t in steps]
    np.testing.assert_allclose(lr_at(c, 10, steps), expected, rtol=1e-5, atol=1e-7)
    # Warm-up is capped at a fifth of the run: 5 epochs asked, 2 given.
    capped = make_config("spec-he", epochs=10, lr=0.2, warmup_epochs=5.0)
    np.testing.assert_allclose(lr_at(capped, 10, steps), expected, rtol=1e-5, atol=1e-7)
    # No warm-up: cosine from the peak.
    plain = make_config("spec-he", epochs=10, lr=0.2, warmup_epochs=0.0)
    np.testing.assert_allclose(lr_at(plain, 10, [0, 50, 100]), [0.2, 0.1, 0.0], atol=1e-7)


def test_inverse_time_and_constant_are_their_closed_forms():
    spec = make_config("spec", decay=1e-3)
    np.testing.assert_allclose(lr_at(spec, 7, [0, 1, 1000, 10**6]),
                               [0.01, 0.01 / 1.001, 0.01 / 2, 0.01 / 1001], rtol=1e-6)
    assert lr_at(make_config("spec", schedule="constant", lr=0.3), 7, [0, 500]) == [pytest.approx(0.3)] * 2


# --------------------------------------------------------------------------- #
# the config's values reach Keras
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("recipe", ["spec", "spec-he", "vgg16-bn"])
def test_config_values_reach_the_built_optimizer_loss_and_layers(recipe):
    # Keras 3 silently ignores old arguments (SGD's decay=): read each value
    # back from the objects that were built, not from the config.
    import keras

    from vggcifar import build

    c = make_config(recipe, width=0.0625, dense_units=16, precision="float32", data_format="channels_last")
    model, train_model = build.build_training(c, 10, steps_per_epoch=5)
    opt = train_model.optimizer
    assert isinstance(opt, {"sgd": keras.optimizers.SGD, "adamw": keras.optimizers.AdamW}[c.optimizer])
    if c.optimizer == "sgd":
        assert float(opt.momentum) == pytest.approx(c.momentum) and bool(opt.nesterov) == c.nesterov
    assert (opt.weight_decay or 0.0) == pytest.approx(c.weight_decay)
    assert build.current_lr(opt) == pytest.approx(lr_at(c, 5, [0])[0], rel=1e-6)
    assert train_model.loss.label_smoothing == pytest.approx(c.label_smoothing)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    denses = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    init_class = {"glorot_uniform": keras.initializers.GlorotUniform, "he_normal": keras.initializers.HeNormal}
    assert len(convs) == 13 and len(denses) == 3
    assert all(isinstance(layer.kernel_initializer, init_class[c.kernel_initializer]) for layer in convs)
    dense_init = init_class[c.dense_initializer or c.kernel_initializer]
    assert all(isinstance(layer.kernel_initializer, dense_init) for layer in denses)
    assert [layer.units for layer in denses] == [16, 16, 10]
    dropouts = [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert dropouts == [c.dropout, c.dropout]
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == (13 if c.batch_norm else 0)
    assert all(layer.momentum == pytest.approx(c.bn_momentum) for layer in norms)
    augment = {layer.name for layer in train_model.layers} & {"aug_crop", "aug_flip", "aug_cutout"}
    assert augment == {f"aug_{a}" for a in c.augment}
    assert (train_model is model) == (not c.augment)


def test_adamw_first_step_is_the_rate_times_the_sign_after_decoupled_decay():
    # Independent oracle (Loshchilov & Hutter 2019; Kingma & Ba 2015): at
    # step 1 Adam's bias-corrected m / sqrt(v) is sign(g), so each weight
    # moves by lr * sign(g) whatever its gradient's size, after the
    # decoupled decay has shrunk it by lr * weight_decay of itself.
    import keras
    import numpy as np

    from vggcifar.build import make_optimizer

    c = make_config("spec-he", optimizer="adamw", schedule="constant", lr=0.01, weight_decay=0.5)
    opt = make_optimizer(c, steps_per_epoch=5)
    w0 = np.array([1.0, -2.0, 0.5, 3.0], dtype=np.float32)
    g = np.array([1e-2, -30.0, 2.0, -0.5], dtype=np.float32)
    w = keras.Variable(w0)
    opt.apply_gradients([(keras.ops.convert_to_tensor(g), w)])
    expected = w0 * (1 - 0.01 * 0.5) - 0.01 * np.sign(g)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(w), expected, rtol=1e-4, atol=1e-5)
