"""Training as one of several processes, seen from the command: the command's own process supervises, the training runs in a worker child of it, and the worker's end is told in one line.

The runtime's facts (timeouts, what a lost peer looks like, how a worker's
output is read) are vggcifar.cluster's. Here: ``supervise``, run in the
command's process, starts the worker with the same arguments and returns
how it ended; ``work``, run in the worker, carries out the command and leaves
with the exit status the caller's ``status_of`` gives. ``os._exit``: JAX's
exit hook waits at a barrier for every process, which only the ends that
every process reaches at the same step may do.
"""

from __future__ import annotations

import os
import sys

from vggcifar import cluster
from vggcifar.fsutil import first_line
from vggcifar.stops import ProcessLost, TrainingStopped


def supervise(argv: list[str], run_dir) -> cluster.WorkerEnd:
    """Run the command ``argv`` as this process's worker; how it ended. A
    ValueError names the fix when there is no run folder or the processes
    never all started."""
    if not run_dir:
        raise ValueError("training on several processes needs --run-dir: each process its own folder, "
                         "which --resume continues")
    end = cluster.run_worker(argv)
    if end.never_joined:
        raise ValueError(f"the processes did not all start within {cluster.timeouts()['initialization']} s "
                         f"({cluster.TIMEOUTS['initialization'][0]}): start every process, each with process 0's "
                         "address in --coordinator HOST:PORT, reachable from every host")
    return end


def end_lines(end: cluster.WorkerEnd, resume: str) -> str:
    """What the supervisor says of a worker's end (empty when the worker said it all)."""
    if end.peer_lost:
        who = "another process" if end.lost is None else f"process {end.lost}"
        return (f"vggcifar: {who} was lost ({end.detail or 'it stopped answering'}); this process stopped and its "
                f"checkpoints are intact: start every process again with --resume (here: {resume})\n")
    text = end.held  # not explained here: everything the worker said
    if end.signal is not None:
        text += (f"vggcifar: the training process was ended by signal {end.signal}; its checkpoints are "
                 f"intact: continue with {resume}\n")
    return text


def work(run, status_of):
    """In the worker: ``run()`` the command, and leave with its exit status
    (``status_of(exc)`` when it raised). A collective that failed because a
    peer went away waits for the runtime's verdict first (it names the lost
    process to the supervisor, and usually ends this process itself). Never returns."""
    from vggcifar import backend

    cluster.become_worker()
    together = False  # every process ends this way at this point (done, diverged, stopped on request)
    try:
        status = run()
        together = True
    except BaseException as exc:  # KeyboardInterrupt included: the status says it
        if isinstance(exc, ProcessLost) or cluster.collective_failed(exc):
            cluster.await_verdict(first_line(exc), cluster.timeouts()["heartbeat"])
            exc = exc if isinstance(exc, ProcessLost) else ProcessLost(first_line(exc))
        together = isinstance(exc, TrainingStopped) and not isinstance(exc, ProcessLost)
        status = status_of(exc)
    if together:
        backend.leave_hosts()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
