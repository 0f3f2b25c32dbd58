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
import time
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
        for folder, _, files in os.walk(tmp, topdown=False):
            for name in files:
                with open(os.path.join(folder, name), "rb") as f:
                    os.fsync(f.fileno())
            _fsync_dir(Path(folder))
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
    except PermissionError:  # alive, another user's
        return True
    return pid > 0


class RunLock:
    """One process per run folder: an exclusive ``flock`` on the file ``lock``,
    which also holds the holder's pid for the message that refuses a second one.

    The kernel releases the lock when its holder dies, however it dies (kill -9
    included): a lock file left behind by a dead process is simply free, and no
    process ever decides that another's lock is stale, so no two can take it.

    Why not the ``filelock`` package, which takes the same ``flock``: a refusal
    here names the holder's pid, and filelock keeps no content in its file (that
    would need a second file and its own races); this class is the few lines it
    takes. ``flock`` is local to a machine: on NFS it may not exclude a process
    on another host.
    """

    #: How long a refused process waits for a new holder's pid to appear in
    #: the file (it is written just after the lock is taken).
    PID_WAIT_SECONDS = 1.0

    def __init__(self, folder):
        self.path = Path(folder) / "lock"
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = self._holder(fd)
                os.close(fd)
                who = f"process {pid}" if pid else "another process"
                raise LockError(
                    f"{self.path.parent} is in use by {who} (lock file {self.path}); "
                    "wait for it to finish or choose another --run-dir"
                ) from None
            except BaseException:
                os.close(fd)
                raise
            # A holder removes the file on release, after we opened it: we would
            # hold the lock of a file no longer at the path, while a newcomer
            # creates and locks a new one. Take the lock only of the file in place.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            try:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            return

    def _holder(self, fd: int) -> int | None:
        """The pid in the locked file; None when it is not written yet. Until
        the new holder writes its pid, the file may still name the process
        that left it, dead: a pid is taken only once it names a live process."""
        deadline = time.monotonic() + self.PID_WAIT_SECONDS
        while True:
            try:
                text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                if text and _pid_alive(int(text)):
                    return int(text)
            except (OSError, ValueError):
                return None
            if time.monotonic() > deadline:
                return None
            time.sleep(0.02)

    def release(self) -> None:
        if self._fd is not None:
            # Removed while still locked, so no one can lock this file once it is gone.
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


def first_line(exc: BaseException) -> str:
    """An error's message in one line (its first), or its type's name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno == errno.ENOSPC
