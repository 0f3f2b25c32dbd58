"""One typed training config, each field with its unit, meaning and source; recipes are named overrides of its defaults.

The defaults are the spec's recipe: its network and its training settings,
the network's padded convolutions computed as one layer each (the same
function, faster; the spec's own layers are vggcifar.model.SPEC_PADDING, what
`vggcifar summary` draws). Every other recipe lists only what it changes,
each value beside where it comes from. How `vggcifar recipes` shows all this
is rendering (``vggcifar.report.recipe_settings``).
Importing this module imports no Keras backend.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass


def _field(default, unit: str, doc: str, source: str, *, key: bool = False):
    """A config field: its default, the unit its value is in, what it means,
    where the default comes from; ``key``: `vggcifar recipes` always shows it."""
    return dataclasses.field(default=default, metadata={"unit": unit, "doc": doc, "source": source, "key": key})


@dataclass(frozen=True)
class TrainConfig:
    recipe: str = "spec"
    # --- network (arguments of vggcifar.model.build_vgg) -------------------
    model: str = _field("vgg16", "network", "VGG depth (vgg11, vgg13, vgg16, vgg19)", "spec: VGG-16", key=True)
    width: float = _field(1.0, "x filters", "multiplier of every conv's filter count (1.0 = the paper)",
                          "spec: the paper's filter counts")
    batch_norm: bool = _field(False, "yes/no", "BatchNormalization between each conv and its relu",
                              "spec: none", key=True)
    bn_momentum: float = _field(0.99, "weight of old value", "moving-average momentum of batch norm statistics "
                                "(Keras convention: weight of the old value)", "Keras BatchNormalization default")
    # Conv2D(padding="same"): the spec's ZeroPadding2D((1, 1)) + valid conv as
    # one layer, the same function with the same weights (bit-identical
    # outputs), 1.1-1.4x faster to train on every backend (docs/performance.md).
    # `vggcifar summary` still draws the spec's explicit layers.
    padding: str = _field("same", "layer style", "explicit ZeroPadding2D + valid conv (the spec), or conv "
                          "padding='same' (same function)", "same function as the spec's ZeroPadding2D + valid "
                          "conv, faster")
    # "auto": the faster conv layout for the backend (vggcifar.backend.DATA_FORMATS_BY_BACKEND).
    # For 32x32 images the layout changes neither the weights nor the function:
    # kernels are stored alike and the last feature map is 1x1 before Flatten.
    data_format: str = _field("auto", "layout", "layout the convolutions compute in",
                              "faster layout per backend, measured (docs/performance.md)")
    dense_units: int = _field(4096, "units per layer", "width of each of the two hidden dense layers",
                              "spec: 4096-4096 head")
    dropout: float = _field(0.5, "share of units", "dropout rate after each hidden dense layer", "spec: Dropout(0.5)")
    # The model takes raw uint8 pixels and maps them itself (vggcifar.build),
    # so a saved model predicts from the same pixels it trained on.
    input_scaling: str = _field("rescale", "rule", "how the model maps its uint8 pixels: rescale (x / 255, into "
                                "[0, 1]) or standardize (each colour channel minus its mean over the run's "
                                "training images, over their standard deviation)", "spec: pixels into [0, 1]",
                                key=True)
    kernel_initializer: str = _field("glorot_uniform", "initializer", "initializer of the conv kernels",
                                     "spec: Keras default", key=True)
    dense_initializer: str | None = _field(None, "initializer", "initializer of the dense kernels (empty: as the "
                                           "convs)", "spec: Keras default")
    head_initializer: str | None = _field(None, "initializer", "initializer of the last dense kernel, the one that "
                                          "gives the logits (empty: as the dense layers)", "spec: Keras default")
    centred_kernels: bool = _field(False, "yes/no", "at initialisation, each conv and dense kernel minus its mean "
                                   "over the fan-in, those after a relu scaled by 1/sqrt(1 - 1/pi): an offset "
                                   "shared by all images does not pass on to the next layer",
                                   "spec: Keras default (not centred)")
    # --- optimisation --------------------------------------------------------
    epochs: int = _field(100, "epochs", "passes over the training images",
                         "spec: results after 10, 20, 50, 100 epochs", key=True)
    batch_size: int = _field(32, "images per step", "images per optimizer step",
                             "Keras fit default (the spec sets none)", key=True)
    # Keras AdamW, like Keras SGD, applies weight_decay decoupled: each step
    # every weight shrinks by lr * weight_decay (base_optimizer._apply_weight_decay).
    optimizer: str = _field("sgd", "update rule", "sgd (Keras SGD, with momentum and nesterov) or adamw (Keras "
                            "AdamW: each weight's step over its gradient's running rms, beta 0.9 / 0.999; "
                            "momentum and nesterov unused)", "spec: SGD", key=True)
    lr: float = _field(0.01, "per step (peak)", "learning rate (peak, for cosine) at batch_size: the rate used",
                       "spec text (its code says 0.1)", key=True)
    # The recipe's lr is given for lr_batch_size; make_config applies
    # lr_scaling when batch_size differs (an explicit lr is used as given).
    lr_batch_size: int = _field(32, "images per step", "the batch size the recipe's lr is given for",
                                "Keras fit default, the batch the spec's lr ran at", key=True)
    lr_scaling: str = _field("none", "rule", "how lr follows batch_size: linear (the recipe's lr x batch_size / "
                             "lr_batch_size) or none (as given); an explicit lr is used as given (none)",
                             "spec: fidelity wins, the document's lr at any batch size", key=True)
    momentum: float = _field(0.0, "share of last step", "SGD momentum",
                             "old Keras SGD default (the spec sets none)", key=True)
    nesterov: bool = _field(True, "yes/no", "Nesterov momentum (no effect at momentum 0)", "spec: nesterov=True",
                            key=True)
    schedule: str = _field("inverse_time", "lr over steps", "inverse_time: lr/(1+decay*step); constant; cosine: "
                           "linear warm-up then cosine to 0", "spec: old Keras SGD decay=", key=True)
    decay: float = _field(1e-6, "per step", "per-step decay of the inverse_time schedule", "spec: decay=1e-6",
                          key=True)
    warmup_epochs: float = _field(0.0, "epochs", "epochs of linear warm-up from 0 (cosine; at most a fifth of "
                                  "the run)", "spec: none", key=True)
    weight_decay: float = _field(0.0, "per step, times lr", "decoupled weight decay per step, times the lr "
                                 "(Keras SGD weight_decay)", "spec: none", key=True)
    label_smoothing: float = _field(0.0, "share of target", "share of the target spread over all classes",
                                    "spec: none", key=True)
    augment: tuple[str, ...] = _field((), "transforms", "crop: pad 4 px + random 32x32 crop; flip: horizontal; "
                                      "cutout: one 8x8 square erased", "spec: none", key=True)
    # --- data and evaluation --------------------------------------------------
    # Training images held out for validation (the last ones); None: the
    # learning recipes' default, DEFAULT_VAL_SPLIT capped for a small set
    # (effective_val_split). A run writes the effective number to config.json.
    val_split: int | None = _field(0, "images", "training images held out for validation; the recipes' default "
                                   "is 5000, at most 10% of the set", "spec: validates on the test set", key=True)
    validate_on_test: bool = _field(True, "yes/no", "validate on the test set each epoch, as the spec's fit call "
                                    "does", "spec: fit(validation_data=(x_test, y_test))", key=True)
    seed: int = _field(0, "integer", "seeds initialisation, dropout, augmentation and the shuffle", "chosen here")
    precision: str = _field("float32", "dtype policy", "float32, mixed_bfloat16, mixed_float16, or auto (bfloat16 "
                            "where the GPU or CPU computes in it)", "spec: Keras default float32", key=True)
    # --- run ------------------------------------------------------------------
    # "all" or a count: data-parallel training over that many of the visible
    # accelerators through keras.distribution (JAX backend only for more than one).
    devices: int | str = _field(1, "devices", "accelerators to train on, data-parallel: a count or 'all' (more "
                                "than one needs KERAS_BACKEND=jax)", "one device")
    # "auto": the measured best for the device kind (vggcifar.backend.STEPS_PER_EXECUTION).
    # Only how often the host talks to the device: the steps' maths is the same.
    steps_per_execution: int | str = _field("auto", "steps per call", "training steps the backend runs in one "
                                            "compiled call before the host reads their losses", "measured per "
                                            "device kind (docs/performance.md)")
    checkpoint_minutes: float = _field(10.0, "minutes", "minutes between checkpoints within an epoch", "chosen here")
    tensorboard: bool = _field(False, "yes/no", "write each epoch's figures as TensorBoard event files under the "
                               "run folder's tensorboard/ (needs the tensorboard package)", "off: a run's files "
                               "need no extra package")
    limit_train: int | None = _field(None, "images", "train on the first N images only", "the whole set")
    limit_test: int | None = _field(None, "images", "test on the first N images only", "the whole set")

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

    def has_effect(self, key: str) -> bool:
        """Whether ``key``'s value changes anything under the rest of this config."""
        return not {
            "bn_momentum": not self.batch_norm,
            "momentum": self.optimizer != "sgd",
            "nesterov": self.optimizer != "sgd" or self.momentum == 0,
            "decay": self.schedule != "inverse_time",
            "warmup_epochs": self.schedule != "cosine",
            "lr_batch_size": self.lr_scaling == "none",
        }.get(key, False)


#: Each field's unit, meaning and default's source (the metadata above).
FIELDS: dict[str, dict] = {f.name: dict(f.metadata) for f in dataclasses.fields(TrainConfig) if f.metadata}

SCHEDULES = ("inverse_time", "constant", "cosine")
#: How a recipe's lr follows the batch size (the lr_scaling field).
LR_SCALINGS = ("none", "linear")
#: The learning recipes' validation split: the usual 5,000 of CIFAR-10's 50,000
#: training images (10%); a smaller training set gives VAL_SHARE of itself.
DEFAULT_VAL_SPLIT = 5000
VAL_SHARE = 0.1
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16", "auto")
AUGMENTATIONS = ("crop", "flip", "cutout")
#: How the model maps its uint8 pixels (the input_scaling field).
INPUT_SCALINGS = ("rescale", "standardize")
#: The update rules (the optimizer field; vggcifar.build.make_optimizer builds them).
OPTIMIZERS = ("sgd", "adamw")

#: What the learning recipes share, each value with its source: Nesterov
#: momentum (where the optimizer is SGD), linear warm-up then cosine, label smoothing, crop + flip,
#: a held-out validation split (the test set is kept for the reports), bfloat16
#: where a GPU has it.
_LEARNING = {
    "momentum": (0.9, "published VGG-16 CIFAR-10 runs (SGD, Nesterov 0.9)"),
    "schedule": ("cosine", "published VGG-16(-BN) CIFAR-10 runs; warm-up: Goyal et al. 2017"),
    "warmup_epochs": (2.0, "Goyal et al. 2017 gradual warm-up"),
    "label_smoothing": (0.1, "Szegedy et al. 2016"),
    "augment": (("crop", "flip"), "published VGG-16 CIFAR-10 runs (pad 4 + crop, flip)"),
    # DEFAULT_VAL_SPLIT, at most VAL_SHARE of the training set
    "val_split": (None, "10% of CIFAR-10's training set; the test set kept for the reports"),
    "validate_on_test": (False, "the test set kept for the reports"),
    "precision": ("auto", "bfloat16 where the GPU or CPU computes in it (measured), else float32"),
    "epochs": (60, "a budget chosen here (published runs: 200-300)"),
    "lr_scaling": ("linear", "Goyal et al. 2017 linear scaling rule (warm-up stays in epochs); measured on real "
                   "digits (docs/recipes.md)"),
    # Keras SGD's weight_decay is decoupled: before each step every weight
    # shrinks by lr * wd (keras/src/optimizers/base_optimizer.py,
    # _apply_weight_decay), outside the momentum. Coupled L2 (PyTorch SGD's
    # weight_decay, in the published runs) adds wd * w to the gradient, which
    # momentum mu carries for 1 / (1 - mu) steps: lr * wd / (1 - mu) a step.
    "weight_decay": (5e-3, "the published runs' coupled L2 5e-4 at momentum 0.9: 5e-4 / (1 - 0.9), decoupled"),
}

#: Each recipe: what it changes from the defaults, as {field: (value, source)}.
_RECIPES: dict[str, dict[str, tuple]] = {
    # The seed document exactly: SGD(lr, decay=1e-6, nesterov=True) with old
    # Keras' momentum 0, glorot init, no augmentation, validation on the test set.
    "spec": {},
    # The spec's network unchanged (no batch norm, 4096-4096 head), made to
    # learn: He init, momentum, weight decay, crop + flip, warm-up then cosine.
    "spec-he": {
        **_LEARNING,
        "kernel_initializer": ("he_normal", "He et al. 2015"),
        "batch_size": (128, "chosen here for speed; lr scaled to it"),
        # Adam scales each weight's step by its own gradient's rms, so the
        # 4096-wide head no longer moves 10-20 times faster than the
        # convolutions for its size: under SGD it set one logit vector for
        # every image and every layer shrank to cancel it (docs/recipes.md).
        "optimizer": ("adamw", "Loshchilov & Hutter 2019; measured here: SGD's stall of 1 to 14 epochs on the "
                               "colour digits gone (docs/recipes.md)"),
        "lr": (0.0006, "3e-4 at batch 64, measured here (1e-3 diverged, 5e-4 no better); scaled linearly to "
                       "batch 128"),
        "lr_batch_size": (128, "the recipe's batch size"),
        "weight_decay": (0.05, "AdamW's decoupled decay of DeiT (Touvron et al. 2021): lr x 0.05 of each weight "
                               "a step"),
    },
    # VGG-16 with batch norm after every conv and a 512-512 head.
    "vgg16-bn": {
        **_LEARNING,
        "batch_norm": (True, "Ioffe & Szegedy 2015"),
        "bn_momentum": (0.9, "measured here: at 0.99 inference accuracy stayed at chance in a short run"),
        "kernel_initializer": ("he_normal", "He et al. 2015"),
        "dense_initializer": ("glorot_uniform", "Keras default"),
        "dense_units": (512, "published VGG-16-BN CIFAR-10 runs: 512-512 head"),
        "batch_size": (256, "published VGG-16-BN CIFAR-10 run at batch 256 (94.16%)"),
        "lr": (0.1, "published VGG-16-BN CIFAR-10 runs"),
        "lr_batch_size": (256, "the recipe's batch size"),
    },
}
#: Each recipe's overrides: {recipe: {field: value}}.
RECIPES: dict[str, dict] = {r: {k: v for k, (v, _) in o.items()} for r, o in _RECIPES.items()}
#: Where each recipe's overrides come from: {recipe: {field: source}}.
VALUE_SOURCES: dict[str, dict[str, str]] = {r: {k: s for k, (_, s) in o.items()} for r, o in _RECIPES.items()}

#: Where each recipe as a whole comes from.
RECIPE_SOURCES: dict[str, str] = {
    "spec": "the seed document's code and results text; old Keras SGD semantics (momentum 0, "
            "decay = lr/(1+decay*iterations)); batch size 32 is Keras' fit default; its lr is the "
            "document's at any --batch-size (fidelity wins over the scaling rule)",
    "spec-he": "He et al. 2015 initialisation; crop + flip as in the published VGG-16 (no BN) CIFAR-10 runs "
               "(92.63%, SGD at lr 0.05, 300 epochs); cosine warm-up and label smoothing 0.1; AdamW (Loshchilov "
               "& Hutter 2019) at 3e-4 for batch 64 with DeiT's weight decay 0.05, the rate scaled linearly to "
               "batch 128 and from it to any --batch-size: on the colour digits without flips in 15 epochs at "
               "batch 64, 99.08% ± 0.38% (float32) and 99.25% ± 0.25% (bfloat16) over 3 seeds, at most 2 "
               "epochs under 20%, where SGD (lr 0.01; 95.33% ± 0.14% on the plain digits) gave 98.25% ± 0.66% "
               "(bfloat16) and stalled 1 to 14 epochs (float32 seed 0: 19.25%); plain digits 97.00% (seed 0) "
               "against SGD's 95.25% (docs/recipes.md)",
    "vgg16-bn": "Ioffe & Szegedy 2015 batch norm; the 512-512 head and cosine schedule of the public "
                "VGG-16-BN CIFAR-10 runs (93.56% in Keras over 250 epochs, 94.16% over 200 epochs at "
                "batch 256); lr scaled linearly to any --batch-size (98.58% ± 0.58% over 3 seeds at batch 64, "
                "lr 0.025, in 15 epochs on scikit-learn's digits, docs/recipes.md); weight decay 5e-3 "
                "decoupled ~ 5e-4 coupled L2 at momentum 0.9; batch-norm "
                "momentum 0.9 so the moving statistics follow the weights (at Keras' 0.99 they lagged "
                "and inference-mode accuracy stayed at chance in a short run measured here)",
}


def source_of(recipe: str, key: str, config: TrainConfig | None = None) -> str:
    """Where ``recipe``'s value of ``key`` comes from: the recipe's own source
    when it changes the default, else the default's."""
    config = config or make_config(recipe)
    changed = getattr(config, key) != getattr(TrainConfig(), key)
    return VALUE_SOURCES[recipe][key] if changed else FIELDS[key]["source"]


def _coerce(name: str, value):
    """Check ``value`` against the field's type; JSON lists become tuples."""
    hint = typing.get_type_hints(TrainConfig)[name]
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    allowed = args if origin in (typing.Union, types.UnionType) else (hint,)
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
    annotation = {f.name: f.type for f in dataclasses.fields(TrainConfig)}[name]
    raise ValueError(f"Expected `{name}` to be {annotation}. Received: {name}={value!r}")


def scaled_lr(lr: float, batch_size: int, lr_batch_size: int, rule: str) -> float:
    """The rate a recipe's ``lr``, given for ``lr_batch_size``, has at
    ``batch_size`` under ``rule`` (LR_SCALINGS): the one place the rule lives."""
    if rule == "none" or batch_size == lr_batch_size:
        return lr
    # 12 significant digits: config.json says 0.0125, not 0.012500000000000001.
    return float(f"{lr * (batch_size / lr_batch_size):.12g}")


def make_config(recipe: str = "spec", **overrides) -> TrainConfig:
    """The named recipe with ``overrides`` (None values are ignored) applied.

    A held-out validation split (``val_split`` > 0) replaces the spec's
    validation on the test set unless ``validate_on_test`` is given too.
    Without an explicit ``lr``, the recipe's lr follows ``batch_size`` by its
    ``lr_scaling`` rule (``scaled_lr``); an explicit ``lr`` is the rate used,
    and is recorded as not scaled (lr_scaling none) unless ``lr_scaling`` is
    given too (a run's own config.json, read back)."""
    if recipe not in RECIPES:
        raise ValueError(f"Unknown recipe. Expected one of {', '.join(RECIPES)}. Received: recipe={recipe!r}")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if overrides.get("val_split") and "validate_on_test" not in overrides:
        overrides["validate_on_test"] = False
    values = {"recipe": recipe, **RECIPES[recipe], **overrides}
    for key in list(values):
        if key not in fields:
            raise ValueError(f"Unknown config key {key!r}. Expected one of {', '.join(sorted(fields))}.")
        values[key] = _coerce(key, values[key])
    if "lr" in overrides and "lr_scaling" not in overrides:
        values["lr_scaling"] = "none"  # an explicit lr is the rate used, whatever the batch size
    config = TrainConfig(**values)
    validate(config)
    if "lr" not in overrides:
        config = dataclasses.replace(config, lr=scaled_lr(config.lr, config.batch_size, config.lr_batch_size,
                                                          config.lr_scaling))
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
    need(c.optimizer in OPTIMIZERS, "optimizer", f"in {OPTIMIZERS}")
    need(c.lr > 0, "lr", "to be > 0")
    need(c.lr_batch_size >= 1, "lr_batch_size", "to be >= 1")
    need(c.lr_scaling in LR_SCALINGS, "lr_scaling", f"in {LR_SCALINGS}")
    need(0 <= c.momentum < 1, "momentum", "in [0, 1)")
    need(c.schedule in SCHEDULES, "schedule", f"in {SCHEDULES}")
    need(c.decay >= 0, "decay", "to be >= 0")
    need(c.warmup_epochs >= 0, "warmup_epochs", "to be >= 0")
    need(c.weight_decay >= 0, "weight_decay", "to be >= 0")
    need(0 <= c.label_smoothing < 1, "label_smoothing", "in [0, 1)")
    need(c.input_scaling in INPUT_SCALINGS, "input_scaling", f"in {INPUT_SCALINGS}")
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
    need(c.steps_per_execution == "auto" or (isinstance(c.steps_per_execution, int)
                                             and c.steps_per_execution >= 1), "steps_per_execution",
         "to be 'auto' or a positive integer")
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


def trained_images(config: TrainConfig, train_images: int) -> int:
    """How many of ``train_images`` an epoch trains on: those left after the
    validation split."""
    return train_images - effective_val_split(config, train_images)


def resolve_val_split(config: TrainConfig, train_images: int) -> TrainConfig:
    """``config`` with its effective validation split written in, as a run records it."""
    return dataclasses.replace(config, val_split=effective_val_split(config, train_images))


def config_from_dict(values: dict, where) -> TrainConfig:
    """A config as a run folder's config.json holds it, checked like any other."""
    if not isinstance(values, dict):
        raise ValueError(f"{where} does not hold a config; delete the run folder or pass another")
    values = dict(values)
    # Every recipe trained with SGD before the optimizer field existed: a run
    # folder written then resumes with SGD, not with its recipe's optimizer now.
    values.setdefault("optimizer", "sgd")
    return make_config(values.pop("recipe", "spec"), **values)
