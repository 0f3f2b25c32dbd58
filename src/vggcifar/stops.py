"""Why a training run ended before its last epoch: the reasons the loop raises, for the experiment to record and the command line to turn into exit statuses.

Each carries ``reason``, one line for a reader. ``resume``, once the layer that
knows how the run was started has set it, is the command that continues it.
Importing this module imports nothing else.
"""

from __future__ import annotations


class TrainingStopped(Exception):
    """Training ended before its last epoch; ``reason`` says why, for a reader."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
        self.resume: str | None = None  # the command that continues the run, where one does

    def __str__(self) -> str:
        return self.reason + (f": continue with `{self.resume}`" if self.resume else "")


class Interrupted(TrainingStopped):
    """Stopped on request: ``signum`` (SIGINT, SIGTERM), or None for a step
    budget (``max_steps``). The state is checkpointed; --resume continues."""

    def __init__(self, reason: str, signum: int | None = None):
        super().__init__(reason)
        self.signum = signum


class Diverged(TrainingStopped):
    """The loss or the weights became non-finite; the last good checkpoint is kept."""


class ProcessLost(TrainingStopped):
    """Under several processes, a collective failed because another process
    went away. The checkpoints are intact; --resume on every process continues."""
