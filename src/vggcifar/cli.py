"""The ``vggcifar`` command: parses arguments, calls the library, prints, and turns outcomes into exit statuses.

Every failure a user can cause ends in one line on stderr that says what is
wrong and how to fix it, and exit status 2; no traceback. A training run that
stops early exits with its own status (``exit_status``). Keras and its backend
are imported only by the commands that build or run a model. Trained as one
of several processes, the command runs its training as a supervised worker
(vggcifar.supervisor) and says how it ended.
"""

from __future__ import annotations

import argparse
import signal
import sys

STATUS_BAD_INPUT = 2
#: A training run that stops early: the loss or weights became non-finite;
#: Ctrl-C and SIGTERM as a shell reports a process ended by them (128 + the
#: signal's number); a step budget ran out (not reachable from the command line).
STATUS_DIVERGED = 3
STATUS_INTERRUPTED = 1
#: Training on several processes: another process was lost. sysexits.h's
#: EX_TEMPFAIL ("a later try may succeed"): --resume on every process continues.
STATUS_LOST_PROCESS = 75
#: The packages of the Keras backends, each installed by the extra of its name (pyproject.toml).
KERAS_BACKENDS = ("tensorflow", "jax", "torch")


def exit_status(stop) -> int:
    """The exit status for a ``vggcifar.stops.TrainingStopped``."""
    from vggcifar.stops import Diverged, Interrupted, ProcessLost

    if isinstance(stop, Diverged):
        return STATUS_DIVERGED
    if isinstance(stop, ProcessLost):
        return STATUS_LOST_PROCESS
    if isinstance(stop, Interrupted) and stop.signum in (signal.SIGINT, signal.SIGTERM):
        return 128 + stop.signum
    return STATUS_INTERRUPTED


def _status(exc: BaseException) -> int:
    """How a command that raised ``exc`` ends: one line on stderr and the exit
    status. A lost process is said by its supervisor."""
    from vggcifar.fsutil import first_line, is_disk_full
    from vggcifar.stops import ProcessLost, TrainingStopped

    if isinstance(exc, TrainingStopped):
        if not isinstance(exc, ProcessLost):
            print(f"vggcifar: {exc}", file=sys.stderr)
        return exit_status(exc)
    if isinstance(exc, KeyboardInterrupt):
        print("vggcifar: interrupted", file=sys.stderr)
        return 130
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in KERAS_BACKENDS:
        package = exc.name.split(".")[0]
        print(f"vggcifar: error: Keras' {package} backend is not installed: pip install -e '.[{package}]' "
              "(or another backend's extra: tensorflow, the CPU default; jax; torch)", file=sys.stderr)
        return STATUS_BAD_INPUT
    if not isinstance(exc, (ValueError, OSError)):
        raise exc
    message = first_line(exc)
    if is_disk_full(exc):
        message = (f"no space left on device while writing {exc.filename or 'a file'}; the files "
                   "written before are intact: free some space and run the command again "
                   "(add --resume to continue a training run)")
    print(f"vggcifar: error: {message}", file=sys.stderr)
    return STATUS_BAD_INPUT


# --------------------------------------------------------------------------- #
# the commands
# --------------------------------------------------------------------------- #
def _cmd_summary(args) -> int:
    from vggcifar.model import build_vgg

    model = build_vgg(args.model, num_classes=args.num_classes, data_format=args.data_format,
                      batch_norm=args.batch_norm, padding=args.padding, dense_units=args.dense_units)
    if args.keras:
        model.summary(print_fn=lambda line, **_: print(line))
    else:
        from vggcifar.table import architecture_table

        sys.stdout.write(architecture_table(model))
    return 0


def _cmd_data_info(args) -> int:
    from vggcifar.data import load_dataset
    from vggcifar.report import data_lines

    d = load_dataset(args.path, args.dataset, download=False, test_share=args.test_share)
    print("\n".join(data_lines(d)))
    return 0


def _cmd_data_verify(args) -> int:
    from vggcifar.data import read_path

    d = read_path(args.path, sha256=args.sha256)
    if args.official and not d.official:
        why = (f"sha256 {d.sha256}" if d.sha256 and not d.class_folders
               else "a folder has no archive checksum; verify the archive")
        raise ValueError(f"{d.source}: readable, but not the official archive ({why}); "
                         f"the official one is at https://www.cs.toronto.edu/~kriz/cifar.html")
    if d.skipped:
        for s in d.skipped:
            print(f"{s['file']}: {s['reason']}", file=sys.stderr)
        more = f" and {len(d.skipped) - 1} more, above" if len(d.skipped) > 1 else ""
        them = "it" if len(d.skipped) == 1 else "them"
        raise ValueError(f"{d.skipped[0]['file']}{more}: not a readable picture in a class folder; training "
                         f"skips {them}: replace or remove {them}")
    if d.class_folders:
        what = f"{d.num_classes} classes in class folders, content sha256 {d.sha256}"
    else:
        what = f"{d.num_classes} classes, " + (f"official {d.extra['official_name']}" if d.official
                                              else "not the official archive")
    print(f"ok: {d.source}: {d.name}, {len(d.x_train)} train + {len(d.x_test)} test images, {what}")
    return 0


def _request(args):
    """The request of a `train` or `experiment` command line."""
    from vggcifar.options import set_overrides
    from vggcifar.request import make_request

    options = {k: v for k, v in vars(args).items() if k not in ("func", "command", "quiet", "overrides", "argv")}
    options["config"] = options.pop("config_file")
    for key, value in set_overrides(args.overrides).items():
        if options.get(key) is not None:
            raise ValueError(f"{key} is given twice (as an option and with --set)")
        options[key] = value
    return make_request(args.command, **options)


def _cmd_train(args) -> int:
    """`train` and `experiment`: a run, separate runs, recipes compared or seeds."""
    from vggcifar import api, cluster
    from vggcifar.report import finished_line

    request = _request(args)
    if cluster.wanted(request.hosts) and not cluster.is_worker():
        from vggcifar import supervisor

        end = supervisor.supervise(sys.argv[1:] if args.argv is None else args.argv, request.run_dir)
        sys.stderr.write(supervisor.end_lines(end, request.resume_command()))
        return STATUS_LOST_PROCESS if end.peer_lost else end.status
    outcome = api.run(request, verbose=0 if args.quiet else 1,
                      warn=lambda reason: print(f"vggcifar: {reason}", file=sys.stderr))
    what = {"seeds": "over seeds", "recipes": "comparison"}.get(request.kind)
    print(f"{what}: {outcome.report}" if what else finished_line(outcome.metrics, outcome.report))
    return STATUS_DIVERGED if outcome.diverged else 0  # a recipe or seed diverged: the others ran


def _cmd_evaluate(args) -> int:
    from vggcifar.evaluation import evaluate_path
    from vggcifar.metrics import TOP_K, TOP_K_KEY
    from vggcifar.report import skipped_lines
    from vggcifar.rundir import ResultDir

    metrics, out = evaluate_path(args.target, data=args.data, dataset=args.dataset, url=args.data_url,
                                 sha256=args.data_sha256, test_share=args.data_test_share, limit_test=args.limit_test,
                                 out_dir=args.out, tta=args.tta, precision=args.precision)
    for line in skipped_lines(metrics["skipped_files"], ResultDir(out).metrics):
        print(line)
    how = "" if args.tta == "none" else f" with {args.tta} test-time augmentation"
    top = "" if metrics.get(TOP_K_KEY) is None else f" (top-{TOP_K}: {100 * metrics[TOP_K_KEY]:.2f}%)"
    print(f"test accuracy: {100 * metrics['test_accuracy']:.2f}%{top} on {metrics['images']} images{how}, "
          f"computed in {metrics['precision']}; files in {out}")
    return 0


def _cmd_predict(args) -> int:
    import json

    from vggcifar.prediction import predict_files
    from vggcifar.report import predictions_text

    results = predict_files(args.model, args.images, top=args.top_k, recursive=args.recursive,
                             precision=args.precision)
    sys.stdout.write(json.dumps(results, indent=2, allow_nan=False) + "\n" if args.json else predictions_text(results))
    failed = [r for r in results if "error" in r]
    for r in failed:
        print(f"vggcifar: error: {r['error']}", file=sys.stderr)
    return STATUS_BAD_INPUT if failed else 0


def _cmd_export(args) -> int:
    from vggcifar.export import FORMATS, export_model

    done = export_model(args.target, args.format, args.output, input_dtype=args.input_dtype,
                        check=not args.no_check)
    print(f"exported {FORMATS[done.format].what} to {done.path} ({done.bytes / 1024:,.0f} KB), float32, taking "
          f"{done.input_dtype} pixels 0-255 of shape (N, 32, 32, 3)")
    if done.checked:
        print(f"checked in {FORMATS[done.format].runtime}: the same class as the Keras model on {done.checked} "
              f"pictures, the largest probability difference {done.max_difference:.1g}")
    else:
        print(f"not checked in its runtime: {done.not_checked}")
    return 0


def _cmd_compare(args) -> int:
    from vggcifar import comparison
    from vggcifar.report import comparison_text

    folders = comparison.check_folders(args.folders)
    if args.output and comparison.folder_kind(args.output) in (comparison.RUN, comparison.SEEDS):
        raise ValueError(f"--output {args.output} is a run folder; write the comparison to another folder")
    table = comparison.compare_folders(folders, args.folders, relative_to=args.output)
    sys.stdout.write(comparison_text(table))
    if args.output:
        written = comparison.write_comparison(args.output, table, comparison.validation_curves(folders, args.folders))
        print(f"comparison: {written.markdown}")
    return 0


def _cmd_recipes(args) -> int:
    import json

    from vggcifar.config import RECIPE_SOURCES, RECIPES
    from vggcifar.report import recipe_settings, recipes_text

    if args.json:
        out = {n: {"settings": recipe_settings(n), "sources": RECIPE_SOURCES.get(n)}
               for n in ([args.name] if args.name else RECIPES)}
        print(json.dumps({"recipes": out}, indent=2))
    else:
        sys.stdout.write(recipes_text(args.name))
    return 0


def _cmd_bench(args) -> int:
    import json

    from vggcifar import backend, bench

    if args.threads is not None:
        backend.set_torch_threads(args.threads)
    result = bench.run_benchmark_for(args.recipe, quick=args.quick, baseline=not args.no_baseline,
                                     images=args.images, windows=args.windows, steps_per_window=args.steps_per_window,
                                     batch_size=args.batch_size, model=args.model, width=args.width,
                                     dense_units=args.dense_units, padding=args.padding, data_format=args.data_format,
                                     precision=args.precision, steps_per_execution=args.steps_per_execution)
    sys.stdout.write(json.dumps(result, sort_keys=True) + "\n" if args.json else bench.format_report(result))
    return 0


# --------------------------------------------------------------------------- #
# main
# --------------------------------------------------------------------------- #
def build_parser() -> argparse.ArgumentParser:
    from vggcifar import options

    return options.build_parser({"summary": _cmd_summary, "train": _cmd_train, "experiment": _cmd_train,
                                 "recipes": _cmd_recipes, "evaluate": _cmd_evaluate, "predict": _cmd_predict,
                                 "compare": _cmd_compare, "export": _cmd_export,
                                 "data info": _cmd_data_info, "data verify": _cmd_data_verify, "bench": _cmd_bench})


def main(argv: list[str] | None = None) -> int:
    from vggcifar.quietlog import BackendLogFilter

    with BackendLogFilter():
        args = build_parser().parse_args(argv)
        args.argv = None if argv is None else list(argv)
        from vggcifar import cluster

        if args.command in ("train", "experiment") and cluster.is_worker():
            from vggcifar import supervisor

            supervisor.work(lambda: args.func(args), _status)
        try:
            return args.func(args)
        except BaseException as exc:  # KeyboardInterrupt included
            return _status(exc)
