"""The ``vggcifar`` command: parses arguments and calls the library.

Every failure a user can cause ends in one line on stderr that says what is
wrong and how to fix it, and exit status 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text!r}")
    return value


def _add_model_options(p: argparse.ArgumentParser) -> None:
    from vggcifar.model import CONFIGS, DATA_FORMATS, PADDINGS

    p.add_argument("--model", default="vgg16", choices=sorted(CONFIGS), help="VGG depth (default: vgg16)")
    p.add_argument("--batch-norm", action="store_true", help="batch normalization after each conv")
    p.add_argument("--padding", default="explicit", choices=PADDINGS,
                   help="explicit ZeroPadding2D as in the spec, or Conv2D(padding='same') (default: explicit)")
    p.add_argument("--data-format", default="channels_last", choices=DATA_FORMATS,
                   help="layout of the convolutions (default: channels_last)")
    p.add_argument("--num-classes", type=_positive_int, default=10, help="classes (default: 10)")
    p.add_argument("--dense-units", type=int, default=4096, help="width of the hidden dense layers (default: 4096)")


def _cmd_summary(args: argparse.Namespace) -> int:
    from vggcifar.model import build_vgg

    model = build_vgg(
        args.model,
        num_classes=args.num_classes,
        data_format=args.data_format,
        batch_norm=args.batch_norm,
        padding=args.padding,
        dense_units=args.dense_units,
    )
    if args.keras:
        model.summary(print_fn=lambda line, **_: print(line))
    else:
        from vggcifar.table import architecture_table

        sys.stdout.write(architecture_table(model))
    return 0


# ------------------------------------------------------------ data options and `vggcifar data`
def add_data_options(p: argparse.ArgumentParser) -> None:
    """``--data PATH`` or ``--dataset NAME``, for every command that reads a dataset."""
    from vggcifar.data import DATASETS

    group = p.add_mutually_exclusive_group()
    group.add_argument("--data", metavar="PATH",
                       help="a CIFAR archive (.tar.gz) or its extracted folder: python, binary or CIFAR-100 layout")
    group.add_argument("--dataset", choices=DATASETS, default="cifar10",
                       help="from the keras cache, downloaded when missing; synthetic: offline stand-in "
                            "(default: cifar10)")
    p.add_argument("--data-url", metavar="URL",
                   help="download from this mirror (env: VGGCIFAR_CIFAR10_URL, VGGCIFAR_CIFAR100_URL)")
    p.add_argument("--data-sha256", metavar="HEX",
                   help="expected sha256 of the archive (env: VGGCIFAR_CIFAR10_SHA256, VGGCIFAR_CIFAR100_SHA256)")


def load_data(args: argparse.Namespace, *, synthetic_train: int = 50000, synthetic_test: int = 10000,
              seed: int = 0, download: bool = True):
    """The dataset that ``add_data_options``' arguments name, as ``CifarData``."""
    from vggcifar.data import load_dataset

    return load_dataset(
        args.data, args.dataset, synthetic_train=synthetic_train, synthetic_test=synthetic_test, seed=seed,
        url=getattr(args, "data_url", None), sha256=getattr(args, "data_sha256", None), download=download,
    )


def _data_lines(d) -> list[str]:
    import numpy as np

    official = d.extra.get("official_name")
    lines = [
        f"source:   {d.source}" + (f" ({d.extra['container']}, {d.extra['format']} layout)" if "format" in d.extra else ""),
        f"dataset:  {d.name}{' (synthetic)' if d.synthetic else ''}, {d.num_classes} classes, "
        f"{len(d.x_train)} train + {len(d.x_test)} test images",
    ]
    if d.sha256:
        lines += [f"sha256:   {d.sha256}", f"md5:      {d.extra.get('md5')}"]
    lines.append(f"official: {f'yes, the bytes of {official}' if official else 'no'}")
    train = np.bincount(d.y_train, minlength=d.num_classes)
    test = np.bincount(d.y_test, minlength=d.num_classes)
    width = max(len("class"), *map(len, d.class_names))
    lines.append(f"{'class':<{width}}  {'train':>6}  {'test':>6}")
    lines += [f"{n:<{width}}  {a:>6}  {b:>6}" for n, a, b in zip(d.class_names, train, test)]
    return lines


def _cmd_data_info(args: argparse.Namespace) -> int:
    from vggcifar.data import load_dataset

    d = load_dataset(args.path, args.dataset, download=False)
    print("\n".join(_data_lines(d)))
    return 0


def _cmd_data_verify(args: argparse.Namespace) -> int:
    from vggcifar.data import read_cifar

    d = read_cifar(args.path, sha256=args.sha256)
    if args.official and not d.official:
        why = f"sha256 {d.sha256}" if d.sha256 else "a folder has no archive checksum; verify the archive"
        raise UsageError(f"{d.source}: readable, but not the official archive ({why}); "
                         f"the official one is at https://www.cs.toronto.edu/~kriz/cifar.html")
    official = f"official {d.extra['official_name']}" if d.official else "not the official archive"
    print(f"ok: {d.source}: {d.name}, {len(d.x_train)} train + {len(d.x_test)} test images, "
          f"{d.num_classes} classes, {official}")
    return 0


def _add_data_command(sub) -> None:
    from vggcifar.data import DATASETS

    p = sub.add_parser("data", help="inspect and verify CIFAR data")
    actions = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    info = actions.add_parser("info", help="source, counts per class, hashes, official or not")
    info.add_argument("path", nargs="?", metavar="PATH", help="archive or folder (default: the keras cache)")
    info.add_argument("--dataset", choices=DATASETS, default="cifar10", help="without PATH (default: cifar10)")
    info.set_defaults(func=_cmd_data_info)
    verify = actions.add_parser("verify", help="check an archive or folder fully; exit 0, or 2 with the reason")
    verify.add_argument("path", metavar="PATH")
    verify.add_argument("--official", action="store_true", help="also require the official archive's bytes")
    verify.add_argument("--sha256", metavar="HEX", help="also require this sha256 of the archive")
    verify.set_defaults(func=_cmd_data_verify)


def build_parser() -> argparse.ArgumentParser:
    from vggcifar import __version__

    parser = argparse.ArgumentParser(
        prog="vggcifar",
        description="VGG-16 on CIFAR-10 in Keras 3: the spec's network, trained, evaluated and reported.",
    )
    parser.add_argument("--version", action="version", version=f"vggcifar {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("summary", help="print the network's architecture table")
    _add_model_options(p)
    p.add_argument("--keras", action="store_true", help="print Keras' own model.summary() instead")
    p.set_defaults(func=_cmd_summary)

    _add_data_command(sub)

    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, ValueError, OSError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"vggcifar: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vggcifar: interrupted", file=sys.stderr)
        return 130
