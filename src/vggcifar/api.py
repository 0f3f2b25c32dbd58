"""The library's entry points: ``build_model``, ``train``, ``experiment``, ``evaluate``, ``predict`` and ``load_data`` for Python callers, and ``run``, which carries out a request of any kind for them and for the command line.

Keywords are the command line's option names (``batch_size`` for
``--batch-size``), and every config field (`vggcifar recipes`) is one too.
Errors are the library's one-line reasons (``ValueError``, ``OSError``, a
``vggcifar.stops.TrainingStopped``); nothing here exits the interpreter. The
backend's start-up chatter is kept out of the caller's stderr, as the command
line keeps it out of a terminal (vggcifar.quietlog).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

from vggcifar import cluster
from vggcifar.request import Request, make_request, with_run_dir
from vggcifar.rundir import RunDir, read_json_or_empty
from vggcifar.stops import Interrupted

# Keras and the backend are imported inside the functions, where the
# backend's start-up lines are filtered: importing this module imports neither.

#: Where a new run's folder goes unless ``run_dir`` (``--run-dir``) says otherwise.
RUNS_ROOT = "runs"


def _quiet(function):
    """``function`` with the backend's start-up lines kept out of stderr."""
    @functools.wraps(function)
    def quiet(*args, **kwargs):
        from vggcifar.quietlog import BackendLogFilter

        with BackendLogFilter():
            return function(*args, **kwargs)

    return quiet


# --------------------------------------------------------------------------- #
# what a run leaves
# --------------------------------------------------------------------------- #
class Run:
    """A run folder: its report, metrics, history and model."""

    def __init__(self, path):
        self.path = Path(path)
        self._dir = RunDir(self.path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def report(self) -> Path:
        return self._dir.report

    @property
    def metrics(self) -> dict:
        """metrics.json: the last milestone's figures ({} before the first)."""
        return read_json_or_empty(self._dir.metrics)

    @property
    def config(self) -> dict:
        """config.json: the settings the run trained with, every "auto" resolved."""
        return self._dir.read_config_values()

    @property
    def history(self) -> list[dict]:
        """history.csv: one dict per epoch (loss, accuracy, val_loss, val_accuracy, lr, seconds, ...)."""
        return self._dir.read_history() if self._dir.history_path.exists() else []

    def load_model(self):
        """model.keras: the network, float32, taking uint8 pictures (N, 32, 32, 3)."""
        from vggcifar.inference import load_model

        return load_model(self._dir.model)


class Results:
    """Several run folders trained together (recipes compared, or seeds):
    ``summary`` is comparison.json or seeds.json, ``runs`` each folder by name."""

    def __init__(self, outcome):
        self.path, self.report, self.summary = outcome.path, outcome.report, outcome.summary or {}
        self.diverged = list(outcome.diverged)
        def is_run(path: Path) -> bool:
            return RunDir(path).run_path.exists()

        folders = [p for p in sorted(self.path.iterdir()) if is_run(p)]
        nested = [q for p in sorted(self.path.iterdir()) if p.is_dir() for q in sorted(p.iterdir()) if is_run(q)]
        self.runs = {p.name: Run(p) for p in folders} | {f"{q.parent.name}/{q.name}": Run(q) for q in nested}

    def __repr__(self) -> str:
        return f"Results({str(self.path)!r}, runs={list(self.runs)})"


# --------------------------------------------------------------------------- #
# carrying out a request
# --------------------------------------------------------------------------- #
def default_name(request: Request) -> str:
    """The start of a new run folder's name: the recipe, or "compare", and "-seeds" over seeds."""
    name = request.recipes[0] if len(request.recipes) == 1 else "compare"
    return f"{name}-seeds" if request.kind == "seeds" else name


def join_hosts(request: Request) -> None:
    """Join the processes ``request`` trains on, when its options or Keras'
    variables say there are several; it must happen before anything computes."""
    if cluster.wanted(request.hosts):
        from vggcifar import backend

        backend.initialize_hosts(*(request.hosts.get(key) for key in cluster.MULTI_HOST_ENV))


def run(request: Request, *, runs_root=RUNS_ROOT, log=print, warn=print, verbose: int = 1, callbacks=()):
    """Carry out ``request``; its ``vggcifar.runs.Outcome``. A new run without
    a folder gets ``runs_root/NAME-YYYYmmdd-HHMMSS``. A recipe or seed whose
    loss diverges is told through ``warn`` and the others still run; an
    interruption stops at once, raised with the command that continues it."""
    from vggcifar import runs, seeds

    join_hosts(request)
    if request.run_dir is None:
        request = with_run_dir(request, Path(runs_root) / f"{default_name(request)}-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        if request.kind == "seeds":
            return seeds.run_request(request, log=log, warn=warn, verbose=verbose, callbacks=callbacks)
        if request.kind == "recipes":
            return runs.compare(request, log=log, warn=warn, verbose=verbose, callbacks=callbacks)
        return runs.run_one(request, log=log, verbose=verbose, callbacks=callbacks)
    except Interrupted as stop:
        stop.resume = request.resume_command()
        raise


def _carry_out(command: str, recipe, callbacks, quiet: bool, options: dict):
    request = make_request(command, recipe=recipe, **options)
    outcome = run(request, verbose=0 if quiet else 1, callbacks=callbacks or (),
                  log=(lambda *_: None) if quiet else print)
    return Run(outcome.path) if request.kind in ("run", "separate") else Results(outcome)


@_quiet
def train(recipe: str = "spec", *, callbacks=None, quiet: bool = False, **options) -> Run:
    """What `vggcifar train` does: ``recipe`` trained with ``options`` (the
    command's options by name: ``dataset``, ``data``, ``epochs``,
    ``batch_size``, ``run_dir``, ``resume``, ``precision``, ``seed``, ...; and
    any config field, e.g. ``width=0.25``), Keras ``callbacks`` called as
    ``fit`` calls them. ``quiet``: nothing printed. Returns the ``Run``."""
    return _carry_out("train", recipe, callbacks, quiet, options)


@_quiet
def experiment(recipe: str = "spec", *, callbacks=None, quiet: bool = False, **options) -> Run | Results:
    """What `vggcifar experiment` does: ``train``'s options and ``milestones``
    (default: the spec's 10, 20, 50, 100 up to ``epochs``), ``seeds``,
    ``separate_runs``; ``recipe`` may name several ("spec,vgg16-bn" or a
    list) to compare. One run: its ``Run``; several: their ``Results``."""
    return _carry_out("experiment", recipe, callbacks, quiet, options)


@_quiet
def build_model(recipe: str = "spec", *, num_classes: int = 10, **settings):
    """The network of ``recipe`` (with config fields ``settings``, e.g.
    ``width=0.25``), as a run builds and saves it: uint8 pictures in (it
    scales them itself), softmax out; float32 unless ``precision`` says otherwise."""
    from vggcifar import backend
    from vggcifar.build import build_model as build, dtype_policy
    from vggcifar.config import make_config

    config = make_config(recipe, **{"precision": "float32", **settings})
    with dtype_policy(backend.resolve_precision(config.precision)):
        return build(config, num_classes)


def _model_and_names(run_or_model, precision: str = "float32"):
    """(a Keras model, its class names or None) from a Run, a run folder, a
    .keras file (loaded computing in ``precision``) or a model (as it is)."""
    from vggcifar.inference import load_model
    from vggcifar.prediction import run_class_names
    from vggcifar.rundir import model_file

    if isinstance(run_or_model, Run):
        run_or_model = run_or_model.path
    if isinstance(run_or_model, (str, Path)):
        path = model_file(run_or_model)
        model = load_model(path, precision)
        return model, run_class_names(path, int(model.output_shape[-1]))
    return run_or_model, None


@_quiet
def evaluate(run_or_model, *, out=None, tta: str = "none", precision: str = "auto", **data_options) -> dict:
    """What `vggcifar evaluate` writes, as a dict: ``run_or_model`` (a Run, a
    run folder or a .keras file: its files go to ``out``, default beside it;
    a Keras model: nothing is written) on the test set of ``data_options``
    (``dataset``, ``data``, ``data_url``, ``data_sha256``, ``data_test_share``,
    ``limit_test``; a run folder's own by default). A saved model computes in
    ``precision`` (vggcifar.inference.PRECISIONS: "auto" is bfloat16 where this
    machine computes in it); a Keras model given computes as it is."""
    from vggcifar.data import data_source
    from vggcifar.evaluation import evaluate_path

    source = data_source(data_options.pop("data", None), data_options.pop("dataset", None),
                         data_options.pop("data_url", None), data_options.pop("data_sha256", None),
                         data_options.pop("data_test_share", None))
    limit_test = data_options.pop("limit_test", None)
    if data_options:
        raise ValueError(f"evaluate takes dataset, data, data_url, data_sha256, data_test_share and limit_test. "
                         f"Received: {', '.join(sorted(data_options))}")
    if isinstance(run_or_model, (Run, str, Path)):
        target = run_or_model.path if isinstance(run_or_model, Run) else run_or_model
        metrics, _ = evaluate_path(target, data=source["data"], dataset=source["dataset"], url=source["url"],
                                   sha256=source["sha256"], test_share=source.get("test_share"),
                                   limit_test=limit_test, out_dir=out, tta=tta,
                                   precision=precision)
        return metrics
    from vggcifar.data import load_source
    from vggcifar.evaluation import measure

    return measure(run_or_model, load_source(source, limit_train=1, limit_test=limit_test), tta, "the model")


@_quiet
def predict(run_or_model, images, *, top_k: int = 3, precision: str = "auto") -> list[list[tuple[str, float]]]:
    """The ``top_k`` most probable classes of each picture, as (class name,
    probability), most probable first. ``images``: paths (PNG, JPEG), PIL
    images, or uint8 arrays (one (H, W, 3) picture, a list of them, or an
    (N, H, W, 3) batch); pictures of any size are resized as `vggcifar predict`
    does. A saved model computes in ``precision``, as ``evaluate``'s."""
    import numpy as np

    from vggcifar.data import class_names_for
    from vggcifar.images import read_image
    from vggcifar.inference import model_input_size, model_probs
    from vggcifar.prediction import top_k as best

    model, names = _model_and_names(run_or_model, precision)
    size = model_input_size(model, "the model")
    names = names or class_names_for(int(model.output_shape[-1]))
    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = [images]
    pictures = [read_image(p) if isinstance(p, (str, Path)) else np.asarray(p.convert("RGB"))
                if hasattr(p, "convert") else p for p in images]
    probs = model_probs(model, pictures if not isinstance(images, np.ndarray) else images, size)
    return [[(r["label"], r["probability"]) for r in best(p, names, top_k)] for p in probs]


def load_data(dataset: str | None = None, *, data=None, data_url: str | None = None, data_sha256: str | None = None,
              data_test_share: float | None = None, limit_train: int | None = None, limit_test: int | None = None):
    """The images and labels a run would train and test on, as
    ``keras.datasets.cifar10.load_data()`` returns them:
    ``(x_train, y_train), (x_test, y_test)``, uint8 pictures (N, 32, 32, 3)
    and labels of shape (N, 1); the result's ``class_names`` names them."""
    from vggcifar.data import data_source, load_source

    d = load_source(data_source(data, dataset, data_url, data_sha256, data_test_share), limit_train=limit_train,
                    limit_test=limit_test)
    return Dataset(((d.x_train, d.y_train.reshape(-1, 1)), (d.x_test, d.y_test.reshape(-1, 1))), d.class_names)


class Dataset(tuple):
    """``(x_train, y_train), (x_test, y_test)``, with ``class_names``."""

    def __new__(cls, splits, class_names):
        out = super().__new__(cls, splits)
        out.class_names = list(class_names)
        return out
