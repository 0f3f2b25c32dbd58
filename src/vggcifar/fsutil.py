"""Files that are either whole or absent: atomic writes, folders and a run lock.

Every write goes to a temp file beside its target, is flushed and fsynced, and
is renamed into place; on any error the temp file is removed and the previous
file, if any, stays as it was.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _raise_naming(exc: BaseException, target: Path, tmp: Path) -> None:
    """An OSError that names no file (a writer given a file object: np.savez,
    savefig) or only the temp file: raise it again naming the file the user
    knows, the target."""
    if (isinstance(exc, OSError) and exc.errno and not isinstance(exc, LockError)
            and (exc.filename is None or str(exc.filename).startswith(str(tmp)))):
        raise OSError(exc.errno, f"{exc.strerror or os.strerror(exc.errno)} while writing", str(target)) from exc


def _umask() -> int:
    """The process's umask (reading it means setting it; it is put back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(target, suffix: str = ""):
    """Yield a temp path beside ``target``; rename it onto ``target`` when the
    block succeeds, remove it when the block fails."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would make every output private
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        _raise_naming(exc, target, tmp)
        raise


def write_bytes(target, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target, text: str) -> None:
    write_bytes(target, text.encode("utf-8"))


def write_json(target, obj) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@contextlib.contextmanager
def atomic_dir(target):
    """Yield a temp folder beside ``target``; it becomes ``target`` (replacing
    an older one) only when the block succeeds and every file is fsynced."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        for p in tmp.iterdir():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(tmp)
        if target.exists():
            old = target.with_name(f".{target.name}.old.tmp")  # removed by remove_stale_temps if killed here
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_naming(exc, target, tmp)
        raise


def remove_stale_temps(folder) -> None:
    """Temp files and folders left by a killed process, in ``folder`` and
    every folder below it (a run's milestone folders included)."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for p in sorted(folder.rglob(".*.tmp*"), key=lambda p: len(p.parts)):
        if not p.exists():  # inside a temp folder removed just before
            continue
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                p.unlink()


def remove_dir(folder) -> None:
    """Remove ``folder`` whole: renamed aside first (a temp that
    ``remove_stale_temps`` clears if the process is killed here), so it is
    never seen half removed."""
    folder = Path(folder)
    aside = folder.with_name(f".{folder.name}.old.tmp")
    shutil.rmtree(aside, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        os.replace(folder, aside)
    shutil.rmtree(aside, ignore_errors=True)


class LockError(OSError):
    pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """One process per run folder: ``lock`` holds the owner's pid. A lock whose
    process is gone is stale and taken over."""

    def __init__(self, folder):
        self.path = Path(folder) / "lock"
        self.held = False

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The pid is written to a private file first and hard-linked into
        # place: the lock appears with its holder already in it, so no other
        # process can read it empty and take it for stale.
        mine = self.path.with_name(f".lock.{os.getpid()}.tmp")
        mine.write_text(f"{os.getpid()}\n")
        try:
            self._acquire_with(mine)
        finally:
            with contextlib.suppress(FileNotFoundError):
                mine.unlink()

    def _acquire_with(self, mine: Path) -> None:
        for _ in range(3):
            try:
                os.link(mine, self.path)
            except FileNotFoundError:  # our pid file was cleared as a stale temp: write it again
                mine.write_text(f"{os.getpid()}\n")
                continue
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or "0")
                except (OSError, ValueError):
                    pid = 0
                if pid and pid != os.getpid() and _pid_alive(pid):
                    raise LockError(
                        f"{self.path.parent} is in use by process {pid} (lock file {self.path}); "
                        "wait for it to finish or choose another --run-dir"
                    ) from None
                # Stale: its process is gone (or the file is unreadable).
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                continue
            self.held = True
            return
        raise LockError(f"could not take the lock {self.path}; remove it if no run is using the folder")

    def release(self) -> None:
        if self.held:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self.held = False

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno == errno.ENOSPC
