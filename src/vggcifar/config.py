"""One typed training config; recipes are named overrides of its defaults.

The defaults are the spec's recipe exactly (see ``RECIPES["spec"]`` for what
each value reproduces). Every other recipe lists only what it changes.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass


@dataclass(frozen=True)
class TrainConfig:
    recipe: str = "spec"
    # --- network (arguments of vggcifar.model.build_vgg) -------------------
    model: str = "vgg16"
    width: float = 1.0  # conv filter multiplier; 1.0 is the paper's network
    batch_norm: bool = False
    bn_momentum: float = 0.99  # Keras' BatchNormalization default
    # Conv2D(padding="same"): the spec's ZeroPadding2D((1, 1)) + valid conv as
    # one layer, the same function with the same weights (bit-identical
    # outputs), 1.1-1.4x faster to train on every backend (docs/performance.md).
    # `vggcifar summary` still draws the spec's explicit layers.
    padding: str = "same"
    # "auto": the faster conv layout for the backend (vggcifar.train.DATA_FORMATS_BY_BACKEND).
    # For 32x32 images the layout changes neither the weights nor the function:
    # kernels are stored alike and the last feature map is 1x1 before Flatten.
    data_format: str = "auto"
    dense_units: int = 4096
    dropout: float = 0.5
    kernel_initializer: str = "glorot_uniform"  # Keras' default, as in the spec
    dense_initializer: str | None = None  # None: same as kernel_initializer
    # --- optimisation --------------------------------------------------------
    epochs: int = 100
    batch_size: int = 32  # images per step; Keras' fit default (spec leaves it open)
    lr: float = 0.01  # spec text: 0.01 (its code says 0.1: --lr 0.1)
    momentum: float = 0.0  # old Keras SGD default
    nesterov: bool = True  # kept as written; a no-op at momentum 0
    schedule: str = "inverse_time"  # lr / (1 + decay * step): old Keras `decay=`
    decay: float = 1e-6  # per step, for schedule="inverse_time"
    warmup_epochs: float = 0.0  # linear warm-up, for schedule="cosine"
    weight_decay: float = 0.0  # decoupled, per step, times lr (Keras SGD weight_decay)
    label_smoothing: float = 0.0
    augment: tuple[str, ...] = ()  # of "crop", "flip", "cutout"
    # --- data and evaluation --------------------------------------------------
    # Training images held out for validation (the last ones); None: the
    # learning recipes' default, DEFAULT_VAL_SPLIT capped for a small set
    # (effective_val_split). A run writes the effective number to config.json.
    val_split: int | None = 0
    validate_on_test: bool = True  # spec: fit(validation_data=(x_test, y_test))
    seed: int = 0
    precision: str = "float32"  # float32 | mixed_bfloat16 | mixed_float16
    # --- run ------------------------------------------------------------------
    # "all" or a count: data-parallel training over that many of the visible
    # accelerators through keras.distribution (JAX backend only for more than one).
    devices: int | str = 1
    checkpoint_minutes: float = 10.0
    limit_train: int | None = None
    limit_test: int | None = None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["augment"] = list(self.augment)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @property
    def epoch_independent_schedule(self) -> bool:
        """True when the lr depends only on the step count, so one long run
        passes through the same states as every shorter run of it."""
        return self.schedule in ("inverse_time", "constant")


SCHEDULES = ("inverse_time", "constant", "cosine")
#: The learning recipes' validation split: the usual 5,000 of CIFAR-10's 50,000
#: training images (10%); a smaller training set gives VAL_SHARE of itself.
DEFAULT_VAL_SPLIT = 5000
VAL_SHARE = 0.1
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16", "auto")
AUGMENTATIONS = ("crop", "flip", "cutout")

#: What the learning recipes share: SGD with Nesterov momentum, linear
#: warm-up then cosine, label smoothing, crop + flip, a held-out validation
#: split (the test set is kept for the reports), bfloat16 where a GPU has it.
_LEARNING = {
    "momentum": 0.9,
    "nesterov": True,
    "schedule": "cosine",
    "warmup_epochs": 2.0,
    "label_smoothing": 0.1,
    "augment": ("crop", "flip"),
    "val_split": None,  # DEFAULT_VAL_SPLIT, at most VAL_SHARE of the training set
    "validate_on_test": False,
    "precision": "auto",
    "epochs": 60,
}

#: Each recipe: what it changes from the defaults above.
RECIPES: dict[str, dict] = {
    # The seed document exactly: SGD(lr, decay=1e-6, nesterov=True) with old
    # Keras' momentum 0, glorot init, no augmentation, validation on the test set.
    "spec": {},
    # The spec's network unchanged (no batch norm, 4096-4096 head), made to
    # learn: He init, momentum, weight decay, crop + flip, warm-up then cosine.
    "spec-he": {
        **_LEARNING,
        "kernel_initializer": "he_normal",
        "batch_size": 128,
        "lr": 0.02,
        "weight_decay": 5e-4,
    },
    # VGG-16 with batch norm after every conv and a 512-512 head.
    "vgg16-bn": {
        **_LEARNING,
        "batch_norm": True,
        "bn_momentum": 0.9,
        "kernel_initializer": "he_normal",
        "dense_initializer": "glorot_uniform",
        "dense_units": 512,
        "batch_size": 256,
        "lr": 0.1,
        "weight_decay": 5e-3,
    },
}

#: Meaning of each config value, for `vggcifar recipes` and the docs.
FIELD_DOCS: dict[str, str] = {
    "model": "VGG depth (vgg11, vgg13, vgg16, vgg19)",
    "width": "multiplier of every conv's filter count (1.0 = the paper)",
    "batch_norm": "BatchNormalization between each conv and its relu",
    "bn_momentum": "moving-average momentum of batch norm statistics (Keras convention: weight of the old value)",
    "padding": "explicit ZeroPadding2D + valid conv (the spec), or conv padding='same' (same function)",
    "data_format": "layout the convolutions compute in",
    "dense_units": "width of each of the two hidden dense layers",
    "dropout": "dropout rate after each hidden dense layer",
    "kernel_initializer": "initializer of the conv kernels",
    "dense_initializer": "initializer of the dense kernels (empty: as the convs)",
    "epochs": "passes over the training images",
    "batch_size": "images per optimizer step",
    "lr": "learning rate (peak, for cosine)",
    "momentum": "SGD momentum",
    "nesterov": "Nesterov momentum (no effect at momentum 0)",
    "schedule": "inverse_time: lr/(1+decay*step); constant; cosine: linear warm-up then cosine to 0",
    "decay": "per-step decay of the inverse_time schedule",
    "warmup_epochs": "epochs of linear warm-up from 0 (cosine; at most a fifth of the run)",
    "weight_decay": "decoupled weight decay per step, times the lr (Keras SGD weight_decay)",
    "label_smoothing": "share of the target spread over all classes",
    "augment": "crop: pad 4 px + random 32x32 crop; flip: horizontal; cutout: one 8x8 square erased",
    "val_split": "training images held out for validation; the recipes' default is 5000, at most 10% of the set",
    "validate_on_test": "validate on the test set each epoch, as the spec's fit call does",
    "seed": "seeds initialisation, dropout, augmentation and the shuffle",
    "precision": "float32, mixed_bfloat16, mixed_float16, or auto (bfloat16 on a GPU that has it)",
    "checkpoint_minutes": "minutes between checkpoints within an epoch",
    "devices": "accelerators to train on, data-parallel: a count or 'all' (more than one needs KERAS_BACKEND=jax)",
}

#: Where each recipe's values come from.
RECIPE_SOURCES: dict[str, str] = {
    "spec": "the seed document's code and results text; old Keras SGD semantics (momentum 0, "
            "decay = lr/(1+decay*iterations)); batch size 32 is Keras' fit default",
    "spec-he": "He et al. 2015 initialisation; SGD nesterov 0.9, weight decay, crop + flip as in the "
               "published VGG-16 (no BN) CIFAR-10 runs (92.63%, lr 0.05, 300 epochs); lr 0.01 at batch 64 "
               "with cosine warm-up and label smoothing 0.1 measured here at 90.5% on a small real-image "
               "set; lr scaled linearly to batch 128",
    "vgg16-bn": "Ioffe & Szegedy 2015 batch norm; the 512-512 head and cosine schedule of the public "
                "VGG-16-BN CIFAR-10 runs (93.56% in Keras over 250 epochs, 94.16% over 200 epochs at "
                "batch 256); weight decay 5e-3 decoupled ~ 5e-4 coupled L2 at momentum 0.9; batch-norm "
                "momentum 0.9 so the moving statistics follow the weights (at Keras' 0.99 they lagged "
                "and inference-mode accuracy stayed at chance in a short run measured here)",
}


#: The optimizer every recipe uses (vggcifar.train.make_optimizer); shown by
#: `vggcifar recipes` beside the config values.
OPTIMIZER = "SGD"

#: Settings `vggcifar recipes` always shows, in this order, with every other
#: value some recipe changes ("optimizer" is OPTIMIZER, not a config field).
KEY_SETTINGS = ("model", "batch_norm", "kernel_initializer", "optimizer", "lr", "momentum", "nesterov",
                "weight_decay", "schedule", "decay", "warmup_epochs", "epochs", "batch_size", "augment",
                "label_smoothing", "val_split", "validate_on_test", "precision")

#: Unit of each value `vggcifar recipes` can show.
FIELD_UNITS: dict[str, str] = {
    "model": "network",
    "width": "x filters",
    "batch_norm": "yes/no",
    "bn_momentum": "weight of old value",
    "padding": "layer style",
    "data_format": "layout",
    "dense_units": "units per layer",
    "dropout": "share of units",
    "kernel_initializer": "initializer",
    "dense_initializer": "initializer",
    "optimizer": "optimizer",
    "epochs": "epochs",
    "batch_size": "images per step",
    "lr": "per step (peak)",
    "momentum": "share of last step",
    "nesterov": "yes/no",
    "schedule": "lr over steps",
    "decay": "per step",
    "warmup_epochs": "epochs",
    "weight_decay": "per step, times lr",
    "label_smoothing": "share of target",
    "augment": "transforms",
    "val_split": "images",
    "validate_on_test": "yes/no",
    "seed": "integer",
    "precision": "dtype policy",
    "checkpoint_minutes": "minutes",
}

#: Where each default value comes from: the `spec` recipe's sources.
DEFAULT_SOURCES: dict[str, str] = {
    "model": "spec: VGG-16",
    "width": "spec: the paper's filter counts",
    "batch_norm": "spec: none",
    "bn_momentum": "Keras BatchNormalization default",
    "padding": "same function as the spec's ZeroPadding2D + valid conv, faster",
    "data_format": "faster layout per backend, measured (docs/performance.md)",
    "dense_units": "spec: 4096-4096 head",
    "dropout": "spec: Dropout(0.5)",
    "kernel_initializer": "spec: Keras default",
    "dense_initializer": "spec: Keras default",
    "optimizer": "spec: SGD",
    "epochs": "spec: results after 10, 20, 50, 100 epochs",
    "batch_size": "Keras fit default (the spec sets none)",
    "lr": "spec text (its code says 0.1)",
    "momentum": "old Keras SGD default (the spec sets none)",
    "nesterov": "spec: nesterov=True",
    "schedule": "spec: old Keras SGD decay=",
    "decay": "spec: decay=1e-6",
    "warmup_epochs": "spec: none",
    "weight_decay": "spec: none",
    "label_smoothing": "spec: none",
    "augment": "spec: none",
    "val_split": "spec: validates on the test set",
    "validate_on_test": "spec: fit(validation_data=(x_test, y_test))",
    "seed": "chosen here",
    "precision": "spec: Keras default float32",
    "checkpoint_minutes": "chosen here",
}

_LEARNING_SOURCES = {
    "momentum": "published VGG-16 CIFAR-10 runs (SGD, Nesterov 0.9)",
    "schedule": "published VGG-16(-BN) CIFAR-10 runs; warm-up: Goyal et al. 2017",
    "warmup_epochs": "Goyal et al. 2017 gradual warm-up",
    "label_smoothing": "Szegedy et al. 2016",
    "augment": "published VGG-16 CIFAR-10 runs (pad 4 + crop, flip)",
    "val_split": "10% of CIFAR-10's training set; the test set kept for the reports",
    "validate_on_test": "the test set kept for the reports",
    "precision": "bfloat16 where the GPU computes in it, else float32",
    "epochs": "a budget chosen here (published runs: 200-300)",
}

#: Where each recipe's changed values come from; a value a recipe does not
#: change has its DEFAULT_SOURCES entry.
VALUE_SOURCES: dict[str, dict[str, str]] = {
    "spec": {},
    "spec-he": {
        **_LEARNING_SOURCES,
        "kernel_initializer": "He et al. 2015",
        "batch_size": "chosen here for speed; lr scaled to it",
        "lr": "0.01 at batch 64, measured here; scaled linearly to batch 128",
        "weight_decay": "the published VGG-16 (no BN) runs' L2 value, here decoupled",
    },
    "vgg16-bn": {
        **_LEARNING_SOURCES,
        "batch_norm": "Ioffe & Szegedy 2015",
        "bn_momentum": "measured here: at 0.99 inference accuracy stayed at chance in a short run",
        "kernel_initializer": "He et al. 2015",
        "dense_initializer": "Keras default",
        "dense_units": "published VGG-16-BN CIFAR-10 runs: 512-512 head",
        "batch_size": "published VGG-16-BN CIFAR-10 run at batch 256 (94.16%)",
        "lr": "published VGG-16-BN CIFAR-10 runs",
        "weight_decay": "decoupled 5e-3 ~ coupled L2 5e-4 at momentum 0.9",
    },
}


def _unused(key: str, c: TrainConfig) -> bool:
    """True when ``key``'s value has no effect under the rest of ``c``."""
    return {
        "bn_momentum": not c.batch_norm,
        "nesterov": c.momentum == 0,
        "decay": c.schedule != "inverse_time",
        "warmup_epochs": c.schedule != "cosine",
    }.get(key, False)


def recipe_settings(recipe: str) -> list[dict]:
    """What `vggcifar recipes` shows of ``recipe``: the key settings and every
    value some recipe changes, in config order, each as {key, value, unit,
    source, changed (differs from the defaults), used (has an effect), meaning}."""
    config = make_config(recipe)
    defaults = TrainConfig().to_dict()
    values = config.to_dict()
    others = [make_config(r).to_dict() for r in RECIPES]
    order = [f.name for f in dataclasses.fields(TrainConfig) if f.name != "recipe"]
    order.insert(order.index("lr"), "optimizer")
    shown = [k for k in order if k in KEY_SETTINGS or any(o.get(k) != defaults.get(k) for o in others)]
    rows = []
    for key in shown:
        value = OPTIMIZER if key == "optimizer" else values[key]
        changed = key != "optimizer" and value != defaults[key]
        rows.append({
            "key": key,
            "value": value,
            "unit": FIELD_UNITS[key],
            "source": VALUE_SOURCES[recipe][key] if changed else DEFAULT_SOURCES[key],
            "changed": changed,
            "used": not _unused(key, config),
            "meaning": FIELD_DOCS.get(key, "the optimizer's update rule"),
        })
    return rows


def _coerce(name: str, value, annotation):
    """Check ``value`` against the field's type; JSON lists become tuples."""
    hint = typing.get_type_hints(TrainConfig)[name]
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    allowed = args if origin in (typing.Union, getattr(__import__("types"), "UnionType")) else (hint,)
    for t in allowed:
        if t is type(None) and value is None:
            return None
        base = typing.get_origin(t) or t
        if base is tuple and isinstance(value, (list, tuple)):
            return tuple(value)
        if base is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if base is int and isinstance(value, bool):
            continue
        if isinstance(value, base):
            return value
    raise ValueError(f"Expected `{name}` to be {annotation}. Received: {name}={value!r}")


def make_config(recipe: str = "spec", **overrides) -> TrainConfig:
    """The named recipe with ``overrides`` (None values are ignored) applied."""
    if recipe not in RECIPES:
        raise ValueError(f"Unknown recipe. Expected one of {', '.join(RECIPES)}. Received: recipe={recipe!r}")
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    values = {"recipe": recipe, **RECIPES[recipe]}
    values.update({k: v for k, v in overrides.items() if v is not None})
    for key in list(values):
        if key not in fields:
            raise ValueError(f"Unknown config key {key!r}. Expected one of {', '.join(fields)}.")
        values[key] = _coerce(key, values[key], fields[key].type)
    config = TrainConfig(**values)
    validate(config)
    return config


def validate(c: TrainConfig) -> None:
    def need(ok: bool, name: str, what: str):
        if not ok:
            raise ValueError(f"Expected `{name}` {what}. Received: {name}={getattr(c, name)!r}")

    from vggcifar.model import CONFIGS

    need(c.model in CONFIGS, "model", f"in {tuple(CONFIGS)}")
    need(c.width > 0, "width", "to be > 0")
    need(c.data_format in ("auto", "channels_last", "channels_first"), "data_format",
         "in ('auto', 'channels_last', 'channels_first')")
    need(c.epochs >= 1, "epochs", "to be >= 1")
    need(c.batch_size >= 1, "batch_size", "to be >= 1")
    need(c.lr > 0, "lr", "to be > 0")
    need(0 <= c.momentum < 1, "momentum", "in [0, 1)")
    need(c.schedule in SCHEDULES, "schedule", f"in {SCHEDULES}")
    need(c.decay >= 0, "decay", "to be >= 0")
    need(c.warmup_epochs >= 0, "warmup_epochs", "to be >= 0")
    need(c.weight_decay >= 0, "weight_decay", "to be >= 0")
    need(0 <= c.label_smoothing < 1, "label_smoothing", "in [0, 1)")
    need(all(a in AUGMENTATIONS for a in c.augment), "augment", f"to hold only {AUGMENTATIONS}")
    need(c.val_split is None or c.val_split >= 0, "val_split", "to be >= 0")
    need(not c.validate_on_test or c.val_split == 0, "val_split",
         "to be 0 while validate_on_test is true (the spec validates on the test set); "
         "--val-split N also stops validating on the test set")
    need(c.precision in PRECISIONS, "precision", f"in {PRECISIONS}")
    need(0 < c.bn_momentum < 1, "bn_momentum", "in (0, 1)")
    need(c.checkpoint_minutes > 0, "checkpoint_minutes", "to be > 0")
    need(c.devices == "all" or (isinstance(c.devices, int) and c.devices >= 1), "devices",
         "to be 'all' or a positive integer")
    for name in ("limit_train", "limit_test"):
        need(getattr(c, name) is None or getattr(c, name) >= 1, name, "to be a positive integer")


def effective_val_split(config: TrainConfig, train_images: int) -> int:
    """How many of ``train_images`` training images ``config`` holds out for
    validation: the one place the rule lives.

    - validating on the test set (the spec): none;
    - ``val_split=None`` (the learning recipes): DEFAULT_VAL_SPLIT, at most
      VAL_SHARE of the training set, and never so many that fewer than
      ``batch_size`` images are left to train on;
    - an explicit number: exactly that many, or an error when it would leave
      fewer than ``batch_size`` images to train on.
    """
    if config.validate_on_test:
        return 0
    if config.val_split is None:
        return max(0, min(DEFAULT_VAL_SPLIT, int(VAL_SHARE * train_images), train_images - config.batch_size))
    if config.val_split and train_images - config.val_split < config.batch_size:
        raise ValueError(
            f"Expected `val_split` to leave at least batch_size={config.batch_size} of the {train_images} "
            f"training images to train on; pass a smaller --val-split (0: no validation split). "
            f"Received: val_split={config.val_split}")
    return config.val_split


def resolve_val_split(config: TrainConfig, train_images: int) -> TrainConfig:
    """``config`` with its effective validation split written in, as a run records it."""
    return dataclasses.replace(config, val_split=effective_val_split(config, train_images))


def load_config(path) -> TrainConfig:
    """A config.json written by a run, checked like any other."""
    with open(path, encoding="utf-8") as f:
        try:
            values = json.load(f)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON ({exc}); delete the run folder or pass another") from None
    recipe = values.pop("recipe", "spec")
    return make_config(recipe, **values)
