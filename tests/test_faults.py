"""Faults injected on purpose, one promise each: kill -9 at any moment of a
run, a full disk at every kind of write, non-finite weights, two processes on
one run folder, broken downloads and hostile archives.

Faults are injected from outside the code under test: a signal from the test,
a wrapper script that replaces a writer and kills its own process half-way
through a file, or a monkeypatched writer that runs out of space.
"""

import errno
import http.server
import io
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import keras

from conftest import QUIET, TINY_ARGS, after_each_call, final_variables, hold_lock, wait_for_checkpoint
from vggcifar import download, fixtures, fsutil
from vggcifar.cli import main
from vggcifar.config import make_config
from vggcifar.data import DataError, load_cifar, load_dataset
from vggcifar.runs import train_run
from vggcifar.rundir import RunDir
from vggcifar.loop import TrainingStopped



def assert_same_variables(a, b):
    assert len(a) == len(b) and len(a) > 0
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def model_weights(path) -> list[np.ndarray]:
    return keras.saving.load_model(path, compile=False, safe_mode=True).get_weights()


def temp_names(folder: Path) -> list[str]:
    """What fsutil and download leave only while writing: .NAME.XXXX.tmp*, .NAME.old, .NAME.XXXX.part."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*")
                  if ".tmp" in p.name or p.name.endswith((".old", ".part")))


def assert_json_whole(folder: Path):
    files = list(folder.rglob("*.json"))
    assert files
    for f in files:
        json.loads(f.read_text())  # every JSON file parses, whatever the moment


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- #
# 1. kill -9 at several moments, then --resume
# --------------------------------------------------------------------------- #
# 48 training images in batches of 16: 3 steps an epoch, a checkpoint after
# every step, milestones after epochs 1 and 3.
KILL_ARGS = ["experiment", "--dataset", "synthetic", "--limit-test", "16", "--epochs", "3", "--milestones", "1,3",
             "--batch-size", "16", "--lr", "0.05", "--quiet", "--checkpoint-minutes", "0.00001", *TINY_ARGS]


def kill_args(recipe: str) -> list[str]:
    # The learning recipes hold a tenth out for validation: 53 leave 48.
    return [*KILL_ARGS, "--recipe", recipe, "--limit-train", "48" if recipe == "spec" else "53"]

# Run before the command, in its process: one writer replaced, whose NTH
# matching call writes half of its file and then the process kills itself with
# SIGKILL, as a power cut or the OOM killer would, in the middle of that write.
KILLER = r'''
import io, os, shutil, signal
import numpy as np
import keras

what, nth = os.environ["VGGCIFAR_TEST_KILL"].split(":")
nth, calls = int(nth), [0]

def due(kind):
    if kind != what:
        return False
    calls[0] += 1
    return calls[0] == nth

def die(where):
    print(f"killing myself while writing {where}", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

def cut_in_half(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
        os.fsync(f.fileno())

real_savez, real_save, real_copyfile = np.savez, keras.Model.save, shutil.copyfile

def savez(file, *args, **kwargs):  # checkpoints: variables.npz
    if due("checkpoint"):
        buf = io.BytesIO()
        real_savez(buf, *args, **kwargs)
        file.write(buf.getvalue()[:len(buf.getvalue()) // 2])
        file.flush()
        die(file.name)
    return real_savez(file, *args, **kwargs)

def save(self, filepath, *args, **kwargs):  # a milestone's model.keras
    real_save(self, filepath, *args, **kwargs)
    if due("milestone"):
        cut_in_half(filepath)
        die(filepath)

def copyfile(src, dst, *args, **kwargs):  # publishing a milestone at the top of the run folder
    out = real_copyfile(src, dst, *args, **kwargs)
    if os.path.basename(src) == "model.keras" and due("publish"):
        cut_in_half(dst)
        die(dst)
    return out

np.savez, keras.Model.save, shutil.copyfile = savez, save, copyfile
'''


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """recipe -> the run folder of KILL_ARGS run uninterrupted with that recipe (made once)."""
    runs = {}

    def get(recipe: str) -> Path:
        if recipe not in runs:
            run = tmp_path_factory.mktemp(f"uninterrupted-{recipe}") / "run"
            assert main([*kill_args(recipe), "--run-dir", str(run)]) == 0
            runs[recipe] = run
        return runs[recipe]

    return get


# Each kill point under vgg16-bn, whose resume carries the most state:
# momentum slots, a cosine schedule, batch-norm statistics and the crop/flip
# augmentation's random state. (Bit-identical resume under every recipe, in
# this process: tests/test_train.py::test_resume_mid_epoch_is_bit_identical.)
@pytest.mark.slow
@pytest.mark.parametrize("kill_at,partial,recipe", [
    ("outside", None, "vgg16-bn"),  # kill -9 from outside, mid-epoch 2, whatever is being written
    ("checkpoint:3", "checkpoints/.ckpt-000000003.", "vgg16-bn"),  # half of the end-of-epoch-1 checkpoint written
    ("milestone:1", "epochs-001/.model.keras.", "vgg16-bn"),  # half of epoch 1's model.keras written
    ("publish:2", ".model.keras.", "vgg16-bn"),  # half of the final model copied to the top of the run folder
])
def test_kill_9_then_resume_gives_identical_results(tmp_path, uninterrupted, forker, capsys, kill_at, partial,
                                                    recipe):
    # Each run killed is a process of its own (conftest.forker).
    run = tmp_path / "run"
    args = [*kill_args(recipe), "--run-dir", str(run)]
    if kill_at == "outside":
        p = forker(args)
        wait_for_checkpoint(run, p, minimum_step=4)
        p.send_signal(signal.SIGKILL)
    else:
        p = forker(args, env={"VGGCIFAR_TEST_KILL": kill_at}, setup=KILLER)
    out = p.communicate(timeout=300)[0]
    assert p.returncode == -signal.SIGKILL, out
    if partial:
        assert "killing myself while writing" in out, out
        # The half-written file is a temp file; no final path holds a partial one.
        assert any(name.startswith(partial) for name in temp_names(run)), temp_names(run)
    assert (run / "lock").read_text().strip() == str(p.pid)  # a dead process cannot clean up
    assert_json_whole(run)
    for model in run.rglob("model.keras"):
        model_weights(model)  # a model.keras in place is always whole

    # Resumed in this process (a fresh one adds only TensorFlow's start-up;
    # the kill is what a separate process was needed for).
    capsys.readouterr()
    assert main(["train", "--resume", "--run-dir", str(run), "--quiet"]) == 0
    assert "test accuracy after 3 epochs" in capsys.readouterr().out
    reference = uninterrupted(recipe)
    assert temp_names(run) == [] and not (run / "lock").exists()
    assert_same_variables(final_variables(reference), final_variables(run))
    assert_same_variables(model_weights(reference / "model.keras"), model_weights(run / "model.keras"))
    for name in ("metrics.json", "epochs-001/metrics.json", "epochs-003/metrics.json"):
        a, b = fsutil.read_json(reference / name), fsutil.read_json(run / name)
        assert (a["epoch"], a["test_loss"], a["confusion_matrix"]) == (b["epoch"], b["test_loss"], b["confusion_matrix"])
    assert RunDir(run).read_history() == [{**h, "seconds": b["seconds"]} for h, b in
                                          zip(RunDir(reference).read_history(), RunDir(run).read_history())]
    report = (run / "report.md").read_text()
    assert "epochs-001/confusion_matrix.png" in report and "epochs-003/confusion_matrix.png" in report


# --------------------------------------------------------------------------- #
# 2. a full disk at each kind of write
# --------------------------------------------------------------------------- #
ENOSPC_DATA = dict(limit_train=64, limit_test=32)  # 2 steps an epoch at batch 32


def _enospc_config():
    return make_config("spec", width=0.0625, dense_units=16, epochs=2, batch_size=32, lr=0.05, **ENOSPC_DATA)


@pytest.fixture(scope="module")
def half_done(tmp_path_factory):
    """(a run stopped after epoch 1 of 2, the same run uninterrupted), made
    once; the CLI's --resume reads the same synthetic set from run.json and
    config.json."""
    root = tmp_path_factory.mktemp("enospc")
    data = load_dataset(None, "synthetic", **ENOSPC_DATA)
    with pytest.raises(TrainingStopped):
        train_run(_enospc_config(), data, root / "half", milestones=[1, 2], source={"dataset": "synthetic"},
                  max_steps=2, **QUIET)
    train_run(_enospc_config(), data, root / "full", milestones=[1, 2], source={"dataset": "synthetic"}, **QUIET)
    return root / "half", root / "full"


def _is_temp_of(path, target: Path) -> bool:
    path = Path(path)
    return path.parent == target.parent and path.name.startswith(f".{target.name}.")


def _no_space():
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def inject_disk_full(monkeypatch, target: Path) -> None:
    """Whichever writer writes ``target`` (np.savez for checkpoints,
    Path.write_bytes for JSON and CSV, Figure.savefig for pictures, Keras'
    Model.save for a milestone's model, shutil.copyfile when a milestone is
    published) writes half of its bytes, then finds the disk full."""
    import matplotlib.figure

    def cut_in_half(path):
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)

    real_savez, real_write_bytes = np.savez, Path.write_bytes
    real_savefig, real_copyfile = matplotlib.figure.Figure.savefig, shutil.copyfile
    real_save = keras.Model.save

    def savez(file, *args, **kwargs):
        if _is_temp_of(Path(file.name).parent, target):
            buf = io.BytesIO()
            real_savez(buf, *args, **kwargs)
            file.write(buf.getvalue()[:len(buf.getvalue()) // 2])
            raise _no_space()
        return real_savez(file, *args, **kwargs)

    def write_bytes(self, data):
        if _is_temp_of(self, target):
            real_write_bytes(self, data[:len(data) // 2])
            raise _no_space()
        return real_write_bytes(self, data)

    def savefig(self, fname, *args, **kwargs):
        real_savefig(self, fname, *args, **kwargs)
        if _is_temp_of(fname, target):
            cut_in_half(fname)
            raise _no_space()

    def copyfile(src, dst, *args, **kwargs):
        out = real_copyfile(src, dst, *args, **kwargs)
        if _is_temp_of(dst, target):
            cut_in_half(dst)
            raise _no_space()
        return out

    def save(self, filepath, *args, **kwargs):
        real_save(self, filepath, *args, **kwargs)
        if _is_temp_of(filepath, target):
            cut_in_half(filepath)
            raise _no_space()

    monkeypatch.setattr(np, "savez", savez)
    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    monkeypatch.setattr(shutil, "copyfile", copyfile)
    monkeypatch.setattr(keras.Model, "save", save)


# Each kind of write. (A checkpoint of vgg16-bn, with momentum slots,
# augmentation seeds, a cosine schedule's step and batch-norm statistics, cut
# in half by kill -9 and resumed from: above.)
@pytest.mark.parametrize("target,kept", [
    ("checkpoints/ckpt-000000004", "checkpoints/ckpt-000000002/variables.npz"),  # a checkpoint
    ("history.csv", "history.csv"),  # per-epoch metrics
    ("metrics.json", "metrics.json"),  # the published result
    ("curves.png", "curves.png"),  # a plot
    ("epochs-002/model.keras", "model.keras"),  # a milestone's model, by Keras' own save
    ("model.keras", "model.keras"),  # the published model
])
def test_disk_full_keeps_the_previous_file_and_says_where(tmp_path, half_done, monkeypatch, capsys, target, kept):
    half, full = half_done
    run = tmp_path / "run"
    shutil.copytree(half, run)
    before = snapshot(run)
    assert kept in before
    inject_disk_full(monkeypatch, run / target)
    capsys.readouterr()

    status = main(["train", "--resume", "--run-dir", str(run), "--quiet"])

    err = capsys.readouterr().err
    assert status == 2
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("vggcifar:")]
    assert len(lines) == 1, err
    assert "no space left on device" in lines[0] and str(run / target) in lines[0], lines[0]
    assert (run / kept).read_bytes() == before[kept]  # the previous file, byte for byte
    assert not (run / target).exists() or (run / target).read_bytes() == before[str(target)]
    assert temp_names(run) == []
    assert not (run / "lock").exists()
    assert_json_whole(run)

    monkeypatch.undo()  # space again: the same command continues to the same result
    assert main(["train", "--resume", "--run-dir", str(run), "--quiet"]) == 0
    assert_same_variables(final_variables(full), final_variables(run))
    assert fsutil.read_json(run / "metrics.json")["test_loss"] == fsutil.read_json(full / "metrics.json")["test_loss"]
    assert temp_names(run) == []


def _truncate_npz(ckpt: Path) -> None:
    npz = ckpt / "variables.npz"
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])


def _break_state(ckpt: Path) -> None:
    (ckpt / "state.json").write_text('{"epoch": 2, "global_st')


@pytest.mark.parametrize("damage", [
    (_truncate_npz, _truncate_npz),
    (_break_state, _break_state),
    (_truncate_npz, _break_state),
], ids=["truncated-npz", "bad-state-json", "one-of-each"])
def test_resume_with_every_checkpoint_damaged_refuses_and_changes_nothing(tmp_path, half_done, capsys, damage):
    _, full = half_done
    run = tmp_path / "run"
    shutil.copytree(full, run)
    (run / "lock").unlink(missing_ok=True)
    checkpoints = RunDir(run).list_checkpoints()
    assert len(checkpoints) == 2
    for ckpt, hurt in zip(checkpoints, damage):
        hurt(ckpt)
    before = snapshot(run)
    capsys.readouterr()

    status = main(["train", "--resume", "--run-dir", str(run), "--quiet"])

    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("vggcifar:")]
    assert status == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert all(c.name in lines[0] for c in checkpoints), lines[0]
    assert "start over on purpose" in lines[0] and "without --resume" in lines[0], lines[0]
    assert snapshot(run) == before  # nothing trained, nothing rewritten, nothing removed
    assert not (run / "lock").exists()


def test_every_file_of_a_run_arrives_by_rename_after_an_fsync(tmp_path, monkeypatch):
    # Watch a real run: each rename's source (a file, or every file of a
    # folder) must have been fsynced first, and every file the run leaves
    # must have arrived by such a rename: none is written in place.
    fsynced, arrived = set(), set()
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        fsynced.add(os.path.realpath(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    def replace(src, dst, *args, **kwargs):
        src, dst = os.path.realpath(src), os.path.realpath(dst)
        files = [str(p) for p in Path(src).rglob("*") if p.is_file()] if os.path.isdir(src) else [src]
        unsynced = [f for f in files if f not in fsynced]
        assert not unsynced or Path(src).name.endswith(".old.tmp"), f"renamed before an fsync: {unsynced}"
        arrived.update(dst + f[len(src):] for f in files)
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    run = tmp_path / "run"
    data = load_dataset(None, "synthetic", **ENOSPC_DATA)
    train_run(_enospc_config(), data, run, milestones=[1, 2], **QUIET)
    monkeypatch.undo()
    files = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
    assert {"config.json", "run.json", "environment.json", "history.csv", "report.md", "curves.png",
            "model.keras", "metrics.json", "epochs-002/model.keras", "epochs-001/confusion_matrix.png",
            "checkpoints/ckpt-000000004/variables.npz"} <= set(files)
    assert [f for f in files if os.path.realpath(run / f) not in arrived] == []


@pytest.mark.parametrize("when", ["write", "fsync"])
def test_atomic_writes_on_a_full_disk(tmp_path, monkeypatch, when):
    target, folder = tmp_path / "a.json", tmp_path / "ckpt"
    fsutil.write_json(target, {"v": 1})
    with fsutil.atomic_dir(folder) as tmp:
        (tmp / "x.bin").write_bytes(b"old")
    before = snapshot(tmp_path)
    if when == "fsync":
        monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(_no_space()))

    def fill(f):
        f.write(b"partial")
        if when == "write":
            raise _no_space()

    with pytest.raises(OSError) as err:
        with fsutil.atomic_path(target) as tmp, open(tmp, "wb") as f:
            fill(f)
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(target)
    with pytest.raises(OSError) as err:
        with fsutil.atomic_dir(folder) as tmp, open(tmp / "x.bin", "wb") as f:
            fill(f)
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(folder)
    assert snapshot(tmp_path) == before and temp_names(tmp_path) == []


def test_written_files_follow_the_umask_like_any_other_program(tmp_path):
    # A temp file is created private (0600); the finished file must get the
    # usual permissions, or a run's model and report would be unreadable to
    # the user's group.
    old = os.umask(0o027)
    try:
        fsutil.write_text(tmp_path / "report.md", "x")
        with fsutil.atomic_dir(tmp_path / "ckpt") as folder:
            (folder / "state.json").write_text("{}")
    finally:
        os.umask(old)
    assert (tmp_path / "report.md").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "ckpt").stat().st_mode & 0o777 == 0o750


def test_stale_temps_are_removed_at_every_depth(tmp_path):
    keep = [tmp_path / "metrics.json", tmp_path / "epochs-001" / "model.keras", tmp_path / ".hidden"]
    stale = [tmp_path / ".metrics.json.ab12.tmp", tmp_path / "epochs-001" / ".model.keras.cd34.tmp.keras",
             tmp_path / "checkpoints" / ".ckpt-000000003.ef56.tmp" / "variables.npz"]
    for p in keep + stale:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    fsutil.remove_stale_temps(tmp_path)
    assert temp_names(tmp_path) == [] and all(p.exists() for p in keep)


# --------------------------------------------------------------------------- #
# 3. non-finite weights behind a finite loss
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("poisoned_step,every", [
    (4, []),  # the last step of epoch 2: caught before the epoch's files and checkpoint
    (3, ["--checkpoint-minutes", "0.00001"]),  # mid-epoch 2, with a checkpoint due after every step
], ids=["epoch-end", "mid-epoch-checkpoint"])
def test_nonfinite_weights_stop_the_run_and_are_never_saved(tmp_path, monkeypatch, capsys, poisoned_step, every):
    run = tmp_path / "run"

    def poisoned(n, model, losses):  # the losses of the weights before this step: finite
        if n == poisoned_step:  # this step leaves NaN in a kernel
            w = model.trainable_variables[-2]
            w.assign(np.full(w.shape, np.nan, np.float32))
        return losses

    calls = after_each_call(monkeypatch, poisoned)
    status = main(["experiment", "--dataset", "synthetic", "--limit-train", "64", "--limit-test", "32",
                   "--epochs", "3", "--milestones", "1,2,3", "--batch-size", "32", "--lr", "0.05", "--quiet",
                   *every, *TINY_ARGS, "--run-dir", str(run)])
    err = capsys.readouterr().err
    assert status == 3 and calls["n"] == poisoned_step
    assert "weights became non-finite" in err and "last good checkpoint is kept" in err
    assert f"in epoch 2 by global step {poisoned_step}" in err
    # Epoch 1's milestone is the result; epoch 2's NaN model was never written.
    assert not (run / "epochs-002").exists()
    models = list(run.rglob("*.keras"))
    assert sorted(str(p.relative_to(run)) for p in models) == ["epochs-001/model.keras", "model.keras"]
    for path in models:
        assert all(np.isfinite(w).all() for w in model_weights(path)), path
    for ckpt in RunDir(run).list_checkpoints():
        with np.load(ckpt / "variables.npz") as z:
            assert all(np.isfinite(z[k]).all() for k in z.files if z[k].dtype.kind == "f"), ckpt
    assert fsutil.read_json(RunDir(run).list_checkpoints()[-1] / "state.json")["epoch"] == 1
    saved = fsutil.read_json(run / "metrics.json")
    assert saved["status"] == "failed" and "non-finite" in saved["reason"] and saved["epoch"] == 1
    report = (run / "report.md").read_text()
    assert "Training stopped: the weights became non-finite" in report


# --------------------------------------------------------------------------- #
# 4. two processes on one run folder
# --------------------------------------------------------------------------- #
def test_second_process_is_refused_and_a_dead_holders_lock_is_taken_over(tmp_path, half_done, capsys):
    half, full = half_done
    run = tmp_path / "run"
    shutil.copytree(half, run)
    holder = hold_lock(run)
    try:
        assert (run / "lock").read_text().strip() == str(holder.pid)
        capsys.readouterr()
        assert main(["train", "--resume", "--run-dir", str(run), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert f"in use by process {holder.pid}" in err and "--run-dir" in err
        assert holder.poll() is None  # the refusal did not disturb the holder
    finally:
        holder.kill()
        holder.wait()
    # SIGKILL left the lock file behind, naming a process that no longer exists.
    assert (run / "lock").read_text().strip() == str(holder.pid)
    assert main(["train", "--resume", "--run-dir", str(run), "--quiet"]) == 0
    assert not (run / "lock").exists() and temp_names(run) == []
    assert_same_variables(final_variables(full), final_variables(run))


# A racer for the lock of one folder: waits for a common start time, tries
# the lock, holds it a moment if it got it, and says which ("got PID" or the
# refusal). A slow disk (each file creation, link and removal takes 0.2 s)
# widens every window between reading a lock file and acting on it.
RACER = """
import os, sys, time
_open, _link, _unlink = os.open, os.link, os.unlink
def slow_open(*a, **k):
    fd = _open(*a, **k)
    time.sleep(0.2)
    return fd
def slow_link(*a, **k):
    _link(*a, **k)
    time.sleep(0.2)
def slow_unlink(*a, **k):
    time.sleep(0.2)
    _unlink(*a, **k)
os.open, os.link, os.unlink = slow_open, slow_link, slow_unlink
from vggcifar.fsutil import LockError, RunLock
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
try:
    with RunLock(sys.argv[1]):
        print("got", os.getpid(), flush=True)
        time.sleep(1.0)
except LockError as exc:
    print(exc, flush=True)
"""


def race(folders: list[Path], racers: int = 6) -> list[list[str]]:
    """For each folder, what each of ``racers`` processes racing for its lock
    says, winners first; the races of all the folders run at the same time."""
    start = time.time() + 1.5
    procs = [[subprocess.Popen([sys.executable, "-c", RACER, str(folder), str(start)],
                               stdout=subprocess.PIPE, text=True) for _ in range(racers)] for folder in folders]
    return [sorted((p.communicate(timeout=60)[0].strip() for p in group), key=lambda a: not a.startswith("got"))
            for group in procs]


def assert_one_winner(answers: list[str], folder: Path) -> None:
    winners = [a for a in answers if a.startswith("got")]
    assert len(winners) == 1, answers
    pid = winners[0].split()[1]
    for refusal in answers[1:]:
        assert refusal == (f"{folder} is in use by process {pid} (lock file {folder / 'lock'}); "
                           "wait for it to finish or choose another --run-dir"), answers


def test_processes_racing_for_one_lock_get_it_once(tmp_path):
    # Exactly one of the racers gets a lock that does not exist yet; the
    # others are refused naming it. Two races, two folders.
    folders = [tmp_path / f"race{round_}" for round_ in range(2)]
    for folder, answers in zip(folders, race(folders)):
        assert_one_winner(answers, folder)
        assert sorted(p.name for p in folder.iterdir()) == []  # the lock and every temp file gone


def dead_holders_lock(folder: Path) -> int:
    """A lock file left by a holder killed with SIGKILL; its pid."""
    holder = hold_lock(folder)
    holder.kill()
    holder.wait()
    assert (folder / "lock").read_text().strip() == str(holder.pid)
    return holder.pid


def test_processes_racing_for_a_dead_holders_lock_get_it_once(tmp_path):
    # The lock file names a process killed with SIGKILL: every racer finds it,
    # and still exactly one gets the lock. (A lock that a racer judges stale by
    # its pid, removes and replaces can be removed again by a slower racer who
    # read the same dead pid: two holders.)
    folders = [tmp_path / f"race{round_}" for round_ in range(2)]
    dead = [dead_holders_lock(folder) for folder in folders]
    for folder, pid, answers in zip(folders, dead, race(folders)):
        assert_one_winner(answers, folder)
        assert str(pid) not in " ".join(answers)
        assert sorted(p.name for p in folder.iterdir()) == []


# --------------------------------------------------------------------------- #
# 5. downloads that break, archives that attack
# --------------------------------------------------------------------------- #
BODY = bytes(range(256)) * 2048  # 512 KiB
SHA = __import__("hashlib").sha256(BODY).hexdigest()


class BreakingServer:
    """127.0.0.1 only. ``mode``: "reset" sends half the body then resets the
    connection; "unsized" sends half the body without a Content-Length and
    closes cleanly; "503" always answers 503."""

    def __init__(self, mode: str):
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests += 1
                if mode == "503":
                    self.send_error(503)
                    return
                self.send_response(200)
                if mode == "reset":
                    self.send_header("Content-Length", str(len(BODY)))
                self.end_headers()
                self.wfile.write(BODY[:len(BODY) // 2])
                self.wfile.flush()
                if mode == "reset":  # SO_LINGER 0: close() sends RST, not FIN
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/cifar.tar.gz"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("mode,message", [
    ("reset", "cannot download"),
    ("unsized", "does not match the expected"),
    ("503", "HTTP 503"),
])
def test_broken_download_leaves_nothing(tmp_path, mode, message):
    server = BreakingServer(mode)
    target = tmp_path / "cache" / "cifar.tar.gz"
    try:
        with pytest.raises(download.DownloadError, match=message):
            download.fetch(server.url, target, sha256=SHA, retries=2, sleep=lambda s: None, progress=False,
                           timeout=10)
    finally:
        server.close()
    assert server.requests == (1 if mode == "unsized" else 2)  # a wrong file is not fetched again
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_hostile_archive_writes_nothing_anywhere(tmp_path, monkeypatch):
    arrays = fixtures.random_arrays(10, 4, seed=1)
    members = fixtures.python_members(*arrays)
    outside = tmp_path / "outside"
    outside.mkdir()
    work = tmp_path / "work" / "deep"
    work.mkdir(parents=True)
    path = work / "hostile.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        def add(name, blob=b"pwned", **fields):
            info = tarfile.TarInfo(name)
            info.size = len(blob) if not fields else 0
            for k, v in fields.items():
                setattr(info, k, v)
            tar.addfile(info, io.BytesIO(blob) if not fields else None)

        # A link to a folder outside, then a file through it; then the classic escapes.
        add("cifar-10-batches-py/door", type=tarfile.SYMTYPE, linkname=str(outside))
        add("cifar-10-batches-py/door/written-through-a-link")
        add(str(outside / "absolute"))
        add("cifar-10-batches-py/../../../outside/dotdot")
        for name, blob in members.items():
            add(name, blob)
    # An extraction writes relative to the working directory: make that a
    # folder the snapshot watches, so a relative write would be seen too.
    monkeypatch.chdir(work)
    before = snapshot(tmp_path)
    with pytest.raises(DataError, match="outside the archive|link"):
        load_cifar(path)
    assert snapshot(tmp_path) == before and list(outside.iterdir()) == []


def test_model_file_with_code_is_refused_and_never_runs(tmp_path):
    from vggcifar.inference import load_model

    marker = tmp_path / "ran"
    inputs = keras.Input((32, 32, 3))
    code = eval(f"lambda x: x if open({str(marker)!r}, 'w').close() is None else x")  # noqa: S307
    outputs = keras.layers.Lambda(code)(inputs)
    path = tmp_path / "hostile.keras"
    keras.Model(inputs, outputs).save(path)
    marker.unlink()  # building the model ran the lambda once; loading must not run it again
    with pytest.raises(ValueError, match="cannot be loaded safely"):
        load_model(path)
    assert not marker.exists()
    # The payload is real: without safe mode, loading runs the file's code.
    keras.saving.load_model(path, safe_mode=False)
    assert marker.exists()


# --------------------------------------------------------------------------- #
# a model that has not learned is called so
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("dominant,collapsed", [(18, True), (17, False)])
def test_collapse_is_detected_at_ninety_percent(dominant, collapsed):
    from vggcifar.config import make_config
    from vggcifar.metrics import summarize
    from vggcifar.report import collapse_message, milestone_section

    spec = make_config("spec").to_dict()
    names = [f"c{i}" for i in range(10)]
    pred = np.array([3] * dominant + list(range(20 - dominant)))  # 20 images, `dominant` of them called c3
    probs = np.eye(10, dtype=np.float32)[pred] * 0.9 + 0.01
    metrics = summarize(probs, np.arange(20) % 10, names)
    if collapsed:
        assert metrics["collapse"] == {"class": 3, "share": dominant / 20, "class_name": "c3"}
        assert "'c3', for 90.0% of the test images" in collapse_message(metrics, spec)
        # The report says so where the result is, with the likely causes.
        section = milestone_section({**metrics, "epoch": 1, "train_seconds": 1.0}, {"confusion": "p.png"}, spec)
        assert "> **Collapsed.** The model predicts one class, 'c3'" in section
        assert ("glorot initialisation in a 16-layer network without batch norm (He weights in `spec-he` and "
                "`vgg16-bn`)") in section
    else:
        assert metrics["collapse"] is None and collapse_message(metrics, spec) is None
        assert "Collapsed" not in milestone_section({**metrics, "epoch": 1, "train_seconds": 1.0},
                                                    {"confusion": "p.png"}, spec)


@pytest.mark.parametrize("recipe", ["spec", "spec-he", "vgg16-bn"])
def test_a_collapse_is_blamed_on_the_runs_own_settings(recipe):
    # A recipe is never told to use itself, nor blamed for what it does not have.
    from vggcifar.config import RECIPES, make_config
    from vggcifar.report import collapse_message

    metrics = {"collapse": {"class": 0, "share": 0.95, "class_name": "v-bar"}}
    config = make_config(recipe)
    text = collapse_message(metrics, config.to_dict())
    assert text.startswith("The model predicts one class, 'v-bar', for 95.0% of the test images")
    assert f"(recipe `{recipe}`)" in text and text.count(f"`{recipe}`") == 1
    assert ("glorot" in text) == config.kernel_initializer.startswith("glorot")
    assert ("without momentum" in text) == (config.momentum == 0)
    assert ("no batch normalisation" in text) == (not config.batch_norm)
    # The recipes it names for batch norm have it.
    for other in RECIPES:
        if f"batch norm in `{other}`" in text:
            assert make_config(other).batch_norm
    if config.momentum:  # a learning recipe: its rate, halved, is the option to try
        assert (f"a learning rate too high for this data, {config.lr} at batch {config.batch_size} "
                f"(try --lr {config.lr / 2:g})") in text
    short = collapse_message({**metrics, "short_run": {"steps": 60}}, config.to_dict())
    assert "too few optimizer steps" in short and "too few optimizer steps" not in text
