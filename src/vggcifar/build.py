"""What a run trains: the network a config describes, behind its augmentation, compiled with the config's schedule, optimizer and loss.

The dtype policy (the precision) holds only while the layers are built: each
layer keeps its own, and Keras' global policy is as it was before.
"""

from __future__ import annotations

import contextlib

import keras
import numpy as np

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


#: (mean, variance) of a pixel uniform over 0-255: what a standardizing
#: model built without training images (``vggcifar.build_model``) divides by,
#: until it is built from a run's own images.
UNIFORM_PIXELS = (127.5, (256**2 - 1) / 12)


def channel_statistics(images: np.ndarray) -> tuple[list[float], list[float]]:
    """(mean, variance) of each colour channel of uint8 ``images`` (N, H, W, C),
    over every pixel of every image, exact (from each channel's histogram of
    the 256 levels: no float copy of the images)."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or not images.size:
        raise ValueError(f"Expected uint8 images (N, H, W, C), N > 0. Received: an array of dtype {images.dtype} "
                         f"and shape {images.shape}")
    levels = np.arange(256, dtype=np.float64)
    means, variances = [], []
    for c in range(images.shape[-1]):
        counts = np.bincount(images[..., c].ravel(), minlength=256).astype(np.float64)
        p = counts / counts.sum()
        mean = float(p @ levels)
        means.append(mean)
        variances.append(float(p @ (levels - mean) ** 2))
    return means, variances


def input_statistics(config: TrainConfig, images: np.ndarray | None, channels: int = 3):
    """What ``config``'s model standardizes its pixels by: (mean, variance) per
    channel of the run's training ``images`` (those of uniform pixels when
    there are none), or None when it rescales them."""
    if config.input_scaling != "standardize":
        return None
    if images is None:
        return [UNIFORM_PIXELS[0]] * channels, [UNIFORM_PIXELS[1]] * channels
    mean, variance = channel_statistics(images)
    # A channel of one level everywhere has nothing to standardize: divide by 1.
    return mean, [v if v > 0 else 1.0 for v in variance]


def build_model(config: TrainConfig, num_classes: int, images: np.ndarray | None = None) -> keras.Model:
    """The network a run trains and saves: it takes raw uint8 images,
    channels-last, whatever layout it computes in. ``images``: the run's
    training images, whose per-channel statistics a standardizing config
    (input_scaling) keeps in the model."""
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
        head_initializer=config.head_initializer,
        rescale=1.0 / 255,
        standardize=input_statistics(config, images),
        input_layout="channels_last",
        seed=config.seed,
    )


#: relu(z) of a standard normal z has second moment 1/2 (what He's
#: initialisation keeps from layer to layer), and relu(z) - E[relu(z)] has
#: (1 - 1/pi) / 2: a centred kernel times this gain keeps the scale
#: (Brock et al. 2021, scaled weight standardisation).
CENTRED_GAIN = 1 / np.sqrt(1 - 1 / np.pi)


def centre_kernels(model: keras.Model) -> None:
    """Subtract from every conv and dense kernel its mean over the fan-in (all
    axes but the last, the output units); scale those that take relu outputs
    (all but the first) by CENTRED_GAIN. Relu outputs are never negative, so
    each unit's inputs share a positive mean; through a kernel that does not
    sum to zero that mean reaches the next layer as an offset common to every
    image, which grows with depth until all images look alike to the head
    ("mean shift", Brock et al. 2021). Done once, at initialisation: the
    network and its training are the same."""
    first = True
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            kernel = keras.ops.convert_to_numpy(layer.kernel).astype(np.float64)
            kernel = kernel - kernel.mean(axis=tuple(range(kernel.ndim - 1)), keepdims=True)
            layer.kernel.assign((kernel if first else kernel * CENTRED_GAIN).astype(np.float32))
            first = False


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
    if config.optimizer == "adamw":
        # Keras' defaults (beta 0.9 / 0.999, epsilon 1e-7); weight decay
        # decoupled, lr * weight_decay a step, as SGD's below.
        return keras.optimizers.AdamW(
            learning_rate=make_schedule(config, steps_per_epoch),
            weight_decay=config.weight_decay,
        )
    return keras.optimizers.SGD(
        learning_rate=make_schedule(config, steps_per_epoch),
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay or None,
    )


def build_training(config: TrainConfig, num_classes: int, steps_per_epoch: int, images: np.ndarray | None = None):
    """(model, train_model): the saved network, and it behind augmentation,
    compiled with the config's optimizer and loss. ``images``: the training
    images (after the validation split), for a standardizing config."""
    precision = backend.resolve_precision(config.precision)
    backend.set_random_seed(config.seed)  # no TensorFlow import on another backend
    with dtype_policy(precision):
        model = build_model(config, num_classes, images)
        if config.centred_kernels:
            centre_kernels(model)
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


def inner_optimizer(optimizer):
    """The optimizer that holds the schedule and the step counter: ``optimizer``
    itself, or the one a loss-scale optimizer (mixed_float16) wraps."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def current_lr(optimizer) -> float:
    """The learning rate of the optimizer's next step, computed on the device
    by one compiled call (its schedule's ops one by one would each send their
    constants to the device) and read once."""
    inner = inner_optimizer(optimizer)
    lr = backend.compiled_for(inner, _learning_rate)(inner.iterations.value)
    return float(keras.ops.convert_to_numpy(lr))
