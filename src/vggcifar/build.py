"""What a run trains: the network a config describes, behind its augmentation, compiled with the config's schedule, optimizer and loss.

The dtype policy (the precision) holds only while the layers are built: each
layer keeps its own, and Keras' global policy is as it was before.
"""

from __future__ import annotations

import contextlib

import keras

from vggcifar import backend
from vggcifar.budget import warmup_steps
from vggcifar.config import TrainConfig
from vggcifar.model import build_vgg


@contextlib.contextmanager
def dtype_policy(precision: str):
    """Layers built inside compute in ``precision`` (a Keras dtype policy's
    name); Keras' global policy is restored on the way out."""
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


def augmentation_layers(config: TrainConfig, seed: int) -> list:
    """Keras preprocessing layers: active in training, identity at inference."""
    out = []
    if "crop" in config.augment:
        # Pad 4 then crop 32x32 == shift by up to 4 px with zero fill.
        out.append(keras.layers.RandomTranslation(
            4 / 32, 4 / 32, fill_mode="constant", interpolation="nearest", seed=seed, name="aug_crop"))
    if "flip" in config.augment:
        out.append(keras.layers.RandomFlip("horizontal", seed=seed + 1, name="aug_flip"))
    if "cutout" in config.augment:
        # One 8x8 square (1/16 of the area) of zeros in every image: a factor
        # of (1, 1) erases always (a single 1.0 would draw the chance from [0, 1]).
        out.append(keras.layers.RandomErasing(
            factor=(1.0, 1.0), scale=(0.0625, 0.0625), fill_value=0, seed=seed + 2, name="aug_cutout"))
    return out


def build_model(config: TrainConfig, num_classes: int) -> keras.Model:
    """The network a run trains and saves: it takes raw uint8 images,
    channels-last, whatever layout it computes in."""
    return build_vgg(
        config.model,
        num_classes=num_classes,
        data_format=backend.resolve_data_format(config.data_format),
        batch_norm=config.batch_norm,
        bn_momentum=config.bn_momentum,
        padding=config.padding,
        dense_units=config.dense_units,
        width=config.width,
        dropout=config.dropout,
        kernel_initializer=config.kernel_initializer,
        dense_initializer=config.dense_initializer,
        rescale=1.0 / 255,
        input_layout="channels_last",
        seed=config.seed,
    )


def make_schedule(config: TrainConfig, steps_per_epoch: int):
    if config.schedule == "inverse_time":
        # Old Keras SGD(decay=d): lr_t = lr / (1 + d * t), t = iterations so far.
        return keras.optimizers.schedules.InverseTimeDecay(config.lr, decay_steps=1, decay_rate=config.decay)
    if config.schedule == "constant":
        return config.lr
    total = config.epochs * steps_per_epoch
    warmup = warmup_steps(config, steps_per_epoch)
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else config.lr,
        decay_steps=max(1, total - warmup),
        warmup_target=config.lr if warmup else None,
        warmup_steps=warmup,
    )


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    return keras.optimizers.SGD(
        learning_rate=make_schedule(config, steps_per_epoch),
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay or None,
    )


def build_training(config: TrainConfig, num_classes: int, steps_per_epoch: int):
    """(model, train_model): the saved network, and it behind augmentation,
    compiled with the config's optimizer and loss."""
    precision = backend.resolve_precision(config.precision)
    backend.set_random_seed(config.seed)  # no TensorFlow import on another backend
    with dtype_policy(precision):
        model = build_model(config, num_classes)
        aug = augmentation_layers(config, config.seed)
        if aug:
            inputs = keras.Input(shape=(32, 32, 3), dtype="uint8", name="image")
            x = inputs
            for layer in aug:
                x = layer(x)
            train_model = keras.Model(inputs, model(x), name="train_" + model.name)
        else:
            train_model = model
        optimizer = make_optimizer(config, steps_per_epoch)
        if precision == "mixed_float16":  # float16 gradients underflow without scaling
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        train_model.compile(
            optimizer=optimizer,
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
            metrics=["accuracy"],
        )
        optimizer.build(train_model.trainable_variables)
    return model, train_model


def _learning_rate(optimizer, iterations):
    with keras.StatelessScope(state_mapping=[(optimizer.iterations, iterations)]):
        return keras.ops.cast(optimizer.learning_rate, "float32")


def current_lr(optimizer) -> float:
    """The learning rate of the optimizer's next step, computed on the device
    by one compiled call (its schedule's ops one by one would each send their
    constants to the device) and read once."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    lr = backend.compiled_for(inner, _learning_rate)(inner.iterations.value)
    return float(keras.ops.convert_to_numpy(lr))
