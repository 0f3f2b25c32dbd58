"""The library's entry points: a request carried out whatever its kind (a run, separate runs, recipes compared, seeds), as the command line and Python callers start them.

``run`` names a new run's folder under the caller's root, picks the layer
that carries the request out, and hands back its ``Outcome``; a run stopped
on request is raised with the command that continues it.
"""

from __future__ import annotations

import time
from pathlib import Path

from vggcifar import backend, cluster, experiment, seeds
from vggcifar.experiment import Outcome
from vggcifar.request import Request, with_run_dir
from vggcifar.stops import Interrupted


def default_name(request: Request) -> str:
    """The start of a new run folder's name: the recipe, or "compare", and "-seeds" over seeds."""
    name = request.recipes[0] if len(request.recipes) == 1 else "compare"
    return f"{name}-seeds" if request.kind == "seeds" else name


def join_hosts(request: Request) -> None:
    """Join the processes ``request`` trains on, when its options or Keras'
    variables say there are several; it must happen before anything computes."""
    if cluster.wanted(request.hosts):
        backend.initialize_hosts(*(request.hosts.get(key) for key in cluster.MULTI_HOST_ENV))


def run(request: Request, *, runs_root, log=print, warn=print, verbose: int = 1) -> Outcome:
    """Carry out ``request``; a new run without a folder gets
    ``runs_root/NAME-YYYYmmdd-HHMMSS``. A recipe or seed whose loss diverges
    is told through ``warn`` and the others still run; an interruption stops
    at once, raised with the command that continues it."""
    join_hosts(request)
    if request.run_dir is None:
        request = with_run_dir(request, Path(runs_root) / f"{default_name(request)}-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        if request.kind == "seeds":
            return seeds.run_request(request, log=log, warn=warn, verbose=verbose)
        if request.kind == "recipes":
            return experiment.compare(request, log=log, warn=warn, verbose=verbose)
        return experiment.run_one(request, log=log, verbose=verbose)
    except Interrupted as stop:
        stop.resume = request.resume_command()
        raise
