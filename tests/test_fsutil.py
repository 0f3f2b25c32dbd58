"""fsutil's run lock and atomic writes, in one process (the faults across
processes: test_faults.py)."""

import json
import os

import pytest

from vggcifar import fsutil


def test_a_held_lock_refuses_a_second_taker_naming_the_holder(tmp_path):
    with fsutil.RunLock(tmp_path) as lock:
        assert lock.held and (tmp_path / "lock").read_text() == f"{os.getpid()}\n"
        with pytest.raises(fsutil.LockError) as err:
            fsutil.RunLock(tmp_path).acquire()
        assert str(err.value) == (f"{tmp_path} is in use by process {os.getpid()} (lock file {tmp_path / 'lock'}); "
                                  "wait for it to finish or choose another --run-dir")
        assert isinstance(err.value, OSError)
    assert not lock.held and not (tmp_path / "lock").exists()
    again = fsutil.RunLock(tmp_path)
    again.acquire()
    again.release()
    again.release()  # a second release is harmless
    assert list(tmp_path.iterdir()) == []


def test_a_left_lock_file_is_free_whatever_it_holds(tmp_path):
    for content in ("999999999\n", "", "not a pid", "1\n"):  # a dead pid, empty, garbage, even a live pid
        (tmp_path / "lock").write_text(content)
        with fsutil.RunLock(tmp_path):
            assert (tmp_path / "lock").read_text() == f"{os.getpid()}\n"
        assert not (tmp_path / "lock").exists()


def test_a_holder_whose_pid_is_not_written_yet_is_another_process(tmp_path, monkeypatch):
    import fcntl

    monkeypatch.setattr(fsutil.RunLock, "PID_WAIT_SECONDS", 0.05)
    fd = os.open(tmp_path / "lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(fsutil.LockError, match=r"is in use by another process \(lock file "):
            fsutil.RunLock(tmp_path).acquire()
    finally:
        os.close(fd)


def test_the_lock_makes_its_folder(tmp_path):
    with fsutil.RunLock(tmp_path / "a" / "b"):
        assert (tmp_path / "a" / "b" / "lock").is_file()


def test_atomic_writes_replace_whole_and_leave_no_temp(tmp_path):
    target = tmp_path / "sub" / "x.json"
    fsutil.write_json(target, {"b": 1, "a": [1.5]})
    assert target.read_text() == '{\n  "a": [\n    1.5\n  ],\n  "b": 1\n}\n'
    assert fsutil.read_json(target) == {"a": [1.5], "b": 1}
    with pytest.raises(ValueError):
        fsutil.write_json(target, {"a": float("nan")})  # not JSON: refused, the old file stays
    assert json.loads(target.read_text()) == {"a": [1.5], "b": 1}
    fsutil.write_text(target, "é")
    assert target.read_bytes() == "é".encode()
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.json"]


def test_atomic_dir_replaces_an_older_folder_whole(tmp_path):
    target = tmp_path / "ckpt"
    with fsutil.atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
        (tmp / "b").write_text("1")
    with fsutil.atomic_dir(target) as tmp:
        (tmp / "a").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["a"] and (target / "a").read_text() == "2"
    with pytest.raises(RuntimeError):
        with fsutil.atomic_dir(target) as tmp:
            (tmp / "a").write_text("3")
            raise RuntimeError("stop")
    assert (target / "a").read_text() == "2" and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_an_error_naming_no_file_is_raised_naming_the_target(tmp_path):
    import errno

    target = tmp_path / "m.bin"
    with pytest.raises(OSError) as err:
        with fsutil.atomic_path(target):
            raise OSError(errno.EIO, "input/output error")
    assert err.value.errno == errno.EIO and err.value.filename == str(target)
    assert "while writing" in str(err.value)
    with pytest.raises(OSError) as err:  # one naming another file keeps its name
        with fsutil.atomic_path(target):
            raise FileNotFoundError(errno.ENOENT, "no such file", "/elsewhere")
    assert err.value.filename == "/elsewhere"
    assert list(tmp_path.iterdir()) == []


def test_disk_full_is_told_by_its_errno():
    import errno

    assert fsutil.is_disk_full(OSError(errno.ENOSPC, "full"))
    assert not fsutil.is_disk_full(OSError(errno.EIO, "io"))
    assert not fsutil.is_disk_full(ValueError("x"))


def test_the_lock_file_gets_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        with fsutil.RunLock(tmp_path):
            assert (tmp_path / "lock").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)
    lock = fsutil.RunLock(tmp_path)
    assert not lock.held
    lock.release()  # never taken: nothing to do


def test_a_lock_file_removed_between_open_and_flock_is_not_held(tmp_path, monkeypatch):
    # The holder released (and removed) the file after we opened it: locking
    # that file would hold nothing at the path, so the taker starts again.
    import fcntl

    real, calls = fcntl.flock, []

    def flock(fd, op):
        calls.append(op)
        if len(calls) == 1:
            os.unlink(tmp_path / "lock")
        return real(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock)
    lock = fsutil.RunLock(tmp_path)
    lock.acquire()
    assert len(calls) == 2 and lock.held
    assert os.path.samestat(os.fstat(lock._fd), os.stat(tmp_path / "lock"))
    lock.release()


def test_a_refused_taker_waits_a_moment_for_the_holders_pid(tmp_path):
    # The new holder has the lock but its file still names the dead process
    # that left it; the holder's own pid follows 0.2 s later.
    import fcntl
    import subprocess
    import sys
    import threading

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (tmp_path / "lock").write_text(f"{dead}\n")
    fd = os.open(tmp_path / "lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        threading.Timer(0.2, lambda: os.pwrite(fd, f"{os.getpid()}\n".ljust(len(dead) + 1).encode(), 0)).start()
        with pytest.raises(fsutil.LockError, match=f"is in use by process {os.getpid()} "):
            fsutil.RunLock(tmp_path).acquire()
    finally:
        os.close(fd)


def test_release_after_the_file_was_removed(tmp_path):
    lock = fsutil.RunLock(tmp_path)
    lock.acquire()
    (tmp_path / "lock").unlink()
    lock.release()
    assert not lock.held


def test_errors_naming_the_temp_file_are_named_by_the_target(tmp_path):
    import errno

    target = tmp_path / "m.bin"
    with pytest.raises(OSError) as err:
        with fsutil.atomic_path(target) as tmp:
            raise OSError(errno.EIO, "input/output error", str(tmp))
    assert err.value.filename == str(target) and err.value.strerror == "input/output error while writing"
    with pytest.raises(OSError) as err:
        with fsutil.atomic_path(target):
            raise OSError(errno.ENOSPC, None)
    assert err.value.strerror == f"{os.strerror(errno.ENOSPC)} while writing"


def test_stale_temps_in_removed_temp_folders_do_not_stop_the_sweep(tmp_path):
    for p in (tmp_path / ".a.tmp" / ".inner.tmp", tmp_path / "x" / "y" / ".deep.tmp", tmp_path / "keep"):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
    fsutil.remove_stale_temps(tmp_path)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["keep", "x", "x/y"]
    fsutil.remove_stale_temps(tmp_path / "nothing")  # no folder: nothing to do


@pytest.mark.parametrize("failing", ["flock", "ftruncate"])
def test_a_lock_that_cannot_be_taken_or_written_raises_the_os_error(tmp_path, monkeypatch, failing):
    import errno
    import fcntl

    def fail(*args):
        raise OSError(errno.ENOLCK, "no locks available")

    monkeypatch.setattr(fcntl if failing == "flock" else os, failing, fail)
    lock = fsutil.RunLock(tmp_path)
    with pytest.raises(OSError) as err:
        lock.acquire()
    assert err.value.errno == errno.ENOLCK and not isinstance(err.value, fsutil.LockError) and not lock.held
