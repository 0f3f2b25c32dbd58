"""Training as several processes: how the supervisor reads a worker's end and
names a lost process, the processes' agreements (timed checkpoints and stops,
the step a resume starts from, the data), and end to end on this host: two
JAX processes of one CPU device each train as one process on two devices, and
when either is killed the other ends with one line, its checkpoints intact,
and --resume on both ends where an uninterrupted run ends."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import QUIET, TINY, final_variables, wait_for_checkpoint, xla_flags
from vggcifar import backend, checkpoint, cluster, fsutil
from vggcifar.cli import STATUS_LOST_PROCESS, main
from vggcifar.rundir import RunDir

# What JAX's runtime (jaxlib 0.10.2) writes on stderr as it ends a process,
# as recorded from the runs below (stack frames shortened).
ABSL_NOISE = (b"I0000 00:00:1795706049.572725   17925 port.cc:153] oneDNN custom operations are on.\n"
              b"W0000 00:00:1795706049.572725   17925 cpu_feature_guard.cc:9] This TensorFlow binary is optimized\n")
PREEMPTION_WARNING = (
    b"W1126 14:42:57.024972   28087 preemption_sync_manager.cc:147] Failed to retrieve preemption notice from "
    b"coordination service: UNAVAILABLE: recvmsg:Connection reset by peer\n"
    b"Additional GRPC error information from remote target coordination_service while calling "
    b"/xla.coordination.CoordinationService/GetKeyValue:\n"
    b":UNKNOWN:Error received from peer  {grpc_message:\"Socket closed\", grpc_status:14}. This is only expected "
    b"if one of the tasks is unhealthy. Check the logs for the actual root cause.\n")
HEARTBEATS_STOPPED = (
    b"E1126 15:14:57.102573   18286 coordination_service.cc:1549] [5159116464509465772] Use error polling to "
    b"propagate the following error to all tasks: UNAVAILABLE: The following tasks are unhealthy (stopped "
    b"sending heartbeats):\n"
    b"1\n"
    b"The tasks have crashed. Check the task logs for an earlier error, or scheduler events (e.g. preemption, "
    b"eviction) to debug further. [type.googleapis.com/tensorflow.CoordinationServiceError='']\n"
    b"E1126 15:14:57.103173   18297 coordination_service_agent.cc:289] Polled an error from coordination service "
    b"(this can be an error from this or another task).\n"
    b"F1126 15:14:57.103396   18297 client.h:80] Terminating process because the JAX distributed service detected "
    b"fatal errors. This most likely indicates that another task died; see the other task logs for more details. "
    b"absl::Status: UNAVAILABLE: The following tasks are unhealthy (stopped sending heartbeats):\n"
    b"1\n"
    b"The tasks have crashed. Check the task logs for an earlier error, or scheduler events (e.g. preemption, "
    b"eviction) to debug further.\n"
    b"\n"
    b"RPC: /xla.coordination.CoordinationService/PollForError [type.googleapis.com/tensorflow.CoordinationServiceError='']\n"
    b"*** Check failure stack trace: ***\n"
    b"    @     0x7f2018440634  absl::lts_20260107::log_internal::LogMessage::SendToLog()\n"
    b"    @     0x7f20284a71f5  (unknown)\n")
BARRIER_TIMEOUT = (
    b"F1126 14:39:46.297147   26541 client.h:80] Terminating process because the JAX distributed service detected "
    b"fatal errors. absl::Status: INTERNAL: Shutdown barrier has failed.\n"
    b"Barrier result: 'INTERNAL: Barrier failed because: task is set to ERROR: UNAVAILABLE: Task 2 heartbeat "
    b"timeout. This indicates that the remote task has failed, got preempted, or crashed unexpectedly.\n"
    b"*** Check failure stack trace: ***\n")
COORDINATOR_GONE = (
    b"E1126 14:42:57.025036   28087 coordination_service_agent.cc:289] Polled an error from coordination service "
    b"(this can be an error from this or another task).\n"
    b"F1126 14:42:57.025041   28087 client.h:80] Terminating process because the JAX distributed service detected "
    b"fatal errors. This most likely indicates that another task died; see the other task logs for more details. "
    b"absl::Status: UNAVAILABLE: Failed to send RPC to coordination service. Either the leader task was \n"
    b"Additional GRPC error information from remote target coordination_service while calling "
    b"/xla.coordination.CoordinationService/PollForError:\n"
    b":UNKNOWN:Error received from peer  {grpc_message:\"recvmsg:Connection reset by peer\", grpc_status:14}\n"
    b"*** Check failure stack trace: ***\n"
    b"    @     0x7f0599840634  absl::lts_20260107::log_internal::LogMessage::SendToLog()\n")
GLOO = ("UNKNOWN: Gloo AllGather failed: [external/gloo/gloo/transport/tcp/pair.cc:538] Read error "
        "[127.0.0.1]:51897: Connection reset by peer")


def read(*chunks: bytes, show_all: bool = False) -> tuple[cluster.WorkerOutput, list[bytes]]:
    shown = []
    output = cluster.WorkerOutput(shown.append, show_all)
    for chunk in chunks:
        for line in chunk.splitlines(keepends=True):
            output.line(line)
    return output, shown


# --------------------------------------------------------------------------- #
# the supervisor's reading
# --------------------------------------------------------------------------- #
def test_worker_output_passes_our_lines_and_holds_the_runtime_back():
    ours = b"vggcifar: warning: something the user should read\n"
    output, shown = read(ABSL_NOISE, ours, (cluster.LOST_MARK + GLOO + "\n").encode(), HEARTBEATS_STOPPED,
                         b"vggcifar: a line after the runtime's error\n")
    assert shown == [ours]
    assert output.lost_detail == GLOO
    assert output.held_text().startswith(HEARTBEATS_STOPPED.decode()[:40])
    assert output.held_text().endswith("vggcifar: a line after the runtime's error\n")
    # A warning of the distributed runtime: its lines and all after it are held.
    output, shown = read(ABSL_NOISE, ours, PREEMPTION_WARNING, COORDINATOR_GONE)
    assert shown == [ours] and output.held_text() == (PREEMPTION_WARNING + COORDINATOR_GONE).decode()
    # VGGCIFAR_BACKEND_LOG=1: everything is shown, and still read.
    output, shown = read(ABSL_NOISE, HEARTBEATS_STOPPED, show_all=True)
    assert b"".join(shown) == ABSL_NOISE + HEARTBEATS_STOPPED
    assert output.held_text() == "" and "unhealthy" in output.runtime_text()


@pytest.mark.parametrize("said,lost,detail", [
    (HEARTBEATS_STOPPED, 1, "its heartbeats stopped"),
    (BARRIER_TIMEOUT, 2, "its heartbeats stopped"),
    (COORDINATOR_GONE, 0, "the coordination service it hosts stopped answering"),
    (PREEMPTION_WARNING + COORDINATOR_GONE, 0, "the coordination service it hosts stopped answering"),
])
def test_the_runtime_s_abort_names_the_lost_process(said, lost, detail):
    end = cluster.judge(-signal.SIGABRT, read(said)[0])
    assert (end.status, end.peer_lost, end.lost, end.detail) == (128 + signal.SIGABRT, True, lost, detail)
    assert end.signal == signal.SIGABRT


def test_a_worker_s_other_ends_are_not_a_lost_process():
    # A failed collective and no verdict in time: lost, the process unnamed.
    end = cluster.judge(STATUS_LOST_PROCESS, read((cluster.LOST_MARK + GLOO + "\n").encode())[0])
    assert (end.peer_lost, end.lost, end.detail) == (True, None, GLOO)
    # An abort of another kind is shown as it is.
    crash = b"F1126 15:14:57.103396   18297 some_kernel.cc:12] Check failed: x > 0\n*** Check failure stack trace: ***\n"
    end = cluster.judge(-signal.SIGABRT, read(crash)[0])
    assert not end.peer_lost and end.held == crash.decode() and end.status == 134
    # The processes never all met: a start that failed, not a loss.
    never = (b"F1126 16:43:13.950433   12125 client.h:80] Terminating process because the JAX distributed service "
             b"detected fatal errors. absl::Status: DEADLINE_EXCEEDED: Deadline Exceeded\n\n"
             b"RPC: /xla.coordination.CoordinationService/RegisterTask\n*** Check failure stack trace: ***\n")
    end = cluster.judge(-signal.SIGABRT, read(never)[0])
    assert end.never_joined and not end.peer_lost
    assert not cluster.judge(0, read(b"vggcifar: fine\n")[0]).peer_lost
    assert not cluster.judge(2, read(b"vggcifar: error: no such file\n")[0]).peer_lost


def test_collective_failures_are_told_from_other_errors():
    assert cluster.collective_failed(ValueError(GLOO))
    assert cluster.collective_failed(RuntimeError("Gloo AllReduce failed: Connection closed by peer [10.0.0.2]:41"))
    assert not cluster.collective_failed(ValueError("batch_size=33 does not split evenly among 2 devices"))


def test_timeouts_come_from_the_environment():
    assert cluster.timeouts({}) == {"initialization": 300, "heartbeat": 100, "shutdown": 300}
    assert cluster.timeouts({"VGGCIFAR_CLUSTER_HEARTBEAT_SECONDS": "7"})["heartbeat"] == 7
    for bad in ("0", "ten", "-3"):
        with pytest.raises(ValueError, match=f"VGGCIFAR_CLUSTER_HEARTBEAT_SECONDS='{bad}'.*unset it for 100"):
            cluster.timeouts({"VGGCIFAR_CLUSTER_HEARTBEAT_SECONDS": bad})


CLUSTER_ARGS = ["train", "--dataset", "synthetic", "--coordinator", "10.0.0.1:1234", "--num-processes", "2",
                "--process-id", "1", "--run-dir", "runs/x"]


def test_the_supervisor_says_one_line(monkeypatch, capsys):
    ends = iter([cluster.WorkerEnd(134, True, 0, "the coordination service it hosts stopped answering", "held"),
                 cluster.WorkerEnd(75, True, None, GLOO, ""),
                 cluster.WorkerEnd(134, False, None, "", "F1126 the runtime's own words\n", signal=6),
                 cluster.WorkerEnd(143, False, None, "", ""),
                 cluster.WorkerEnd(0, False, None, "", ""),
                 cluster.WorkerEnd(134, False, None, "", "F1126 RegisterTask\n", never_joined=True)])
    monkeypatch.setattr(cluster, "run_worker", lambda argv: next(ends))
    assert main(CLUSTER_ARGS) == STATUS_LOST_PROCESS
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vggcifar: process 0 was lost (the coordination service")
    assert err.rstrip().endswith("(here: vggcifar train --resume --run-dir runs/x --coordinator 10.0.0.1:1234 "
                                 "--num-processes 2 --process-id 1)")
    assert main(CLUSTER_ARGS) == STATUS_LOST_PROCESS
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"vggcifar: another process was lost ({GLOO})")
    assert main(CLUSTER_ARGS) == 134  # not explained: what the runtime said, then the signal
    err = capsys.readouterr().err
    assert err.startswith("F1126 the runtime's own words\nvggcifar: the training process was ended by signal 6")
    assert main(CLUSTER_ARGS) == 143 and capsys.readouterr().err == ""  # stopped on SIGTERM: it said so itself
    assert main(CLUSTER_ARGS) == 0 and capsys.readouterr().err == ""
    assert main(CLUSTER_ARGS) == 2  # the processes never all met
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did not all start within 300 s (VGGCIFAR_CLUSTER_INIT_SECONDS)" in err


def test_several_processes_need_a_run_dir(capsys):
    assert main(CLUSTER_ARGS[:-2]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs --run-dir" in err


# --------------------------------------------------------------------------- #
# the processes' agreements, with another process's answers made up
# --------------------------------------------------------------------------- #
def two_processes(monkeypatch, other_row):
    """Pretend this is process 0 of 2 whose peer answers ``other_row(mine)``."""
    monkeypatch.setattr(backend, "process_slot", lambda: (2, 0))
    monkeypatch.setattr(backend, "gather_ints",
                        lambda values, width: np.stack([np.pad(np.asarray(values, np.int32)[:width],
                                                               (0, width - min(len(values), width)),
                                                               constant_values=-1),
                                                        other_row(values, width)]))


def write_checkpoint(run: RunDir, step: int) -> Path:
    path = run.checkpoint(step)
    path.mkdir(parents=True)
    fsutil.write_json(path / "state.json", {"global_step": step})
    return path


def test_resume_takes_the_newest_step_every_process_has(tmp_path, monkeypatch):
    run = RunDir(tmp_path / "run")
    for step in (8, 12):
        write_checkpoint(run, step)
    # The other process was lost one checkpoint behind this one.
    two_processes(monkeypatch, lambda values, width: np.array([4, 8] + [-1] * (width - 2), np.int32))
    messages = []
    assert checkpoint.common_checkpoint(run, messages.append) == [run.checkpoint(8)]
    assert run.list_checkpoints() == [run.checkpoint(8)]  # step 12: no other process can go on from it
    assert len(messages) == 1 and "ckpt-000000012" in messages[0] and "(step 8)" in messages[0]
    # None in common: every process starts over.
    two_processes(monkeypatch, lambda values, width: np.full(width, -1, np.int32))
    assert checkpoint.common_checkpoint(run, messages.append) == []
    assert run.list_checkpoints() == []


def test_a_checkpoint_is_removed_whole(tmp_path, monkeypatch):
    run = RunDir(tmp_path / "run")
    for step in (1, 2):
        (write_checkpoint(run, step) / "variables.npz").write_bytes(b"x")
    # Killed while removing: what is left is a temp, never a half checkpoint.
    monkeypatch.setattr(fsutil.shutil, "rmtree", lambda *a, **k: None)
    fsutil.remove_dir(run.checkpoint(1))
    assert run.list_checkpoints() == [run.checkpoint(2)]
    monkeypatch.undo()
    fsutil.remove_stale_temps(run.checkpoints)
    assert sorted(p.name for p in run.checkpoints.iterdir()) == ["ckpt-000000002"]
    fsutil.remove_dir(run.checkpoint(2))
    assert not any(run.checkpoints.iterdir())


def test_processes_train_on_the_same_data(monkeypatch):
    from vggcifar.loop import check_same_data

    x, y = np.zeros((8, 32, 32, 3), np.uint8), np.arange(8) % 2
    two_processes(monkeypatch, lambda values, width: np.asarray(values, np.int32))
    check_same_data(x, y)
    two_processes(monkeypatch, lambda values, width: np.asarray(values, np.int32) + [1, 0, 0])
    with pytest.raises(ValueError, match="process 1's training set differs from process 0's"):
        check_same_data(x, y)


def test_another_process_s_signal_and_clock_decide_for_all(tmp_path, monkeypatch):
    from vggcifar.config import make_config
    from vggcifar.data import load_synthetic
    from vggcifar.runs import train_run
    from vggcifar.loop import Interrupted

    # The other process's answers after this process's n-th call: its clock says
    # a checkpoint is due after call 2, it received SIGTERM before call 4's end.
    calls = []

    def agree_max(values):
        calls.append(list(values))
        n = len(calls)
        return [max(values[0], signal.SIGTERM if n >= 4 else 0), max(values[1], int(n == 2)), *values[2:]]

    monkeypatch.setattr(backend, "agree_max", agree_max)
    run = RunDir(tmp_path / "run")
    config = make_config("spec", **TINY, epochs=2, batch_size=16, lr=0.05)  # 10 steps an epoch
    with pytest.raises(Interrupted) as stop:
        train_run(config, load_synthetic(train=160, test=16, seed=3), run.path, **QUIET)
    assert stop.value.signum == signal.SIGTERM
    # Its own clock never said so (checkpoint_minutes is 10): only the agreement did.
    assert [p.name for p in run.list_checkpoints()] == ["ckpt-000000002", "ckpt-000000004"]


# --------------------------------------------------------------------------- #
# end to end: two JAX processes on this host
# --------------------------------------------------------------------------- #
HEARTBEAT_SECONDS = 10  # the runtime's heartbeat timeout in these tests (default 100)
RUN_ARGS = ["--dataset", "synthetic", "--limit-train", "256", "--limit-test", "32", "--epochs", "2",
            "--batch-size", "32", "--lr", "0.01", "--seed", "5", "--quiet", "--set", "model=vgg11",
            "--set", "width=0.0625", "--set", "dense_units=16", "--devices", "all"]


def _has_jax() -> bool:
    return subprocess.run([sys.executable, "-c", "import jax"], capture_output=True).returncode == 0


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "VGGCIFAR_BACKEND_LOG"}
    return {**env, "XLA_FLAGS": xla_flags(), "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1",
            "VGGCIFAR_CLUSTER_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[1] / "src"),
                                                        os.environ.get("PYTHONPATH")])), **extra}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(root: Path, *extra: str, port: int) -> list[subprocess.Popen]:
    """The two processes of one run, each with its own run folder root/rI."""
    return [subprocess.Popen([sys.executable, "-m", "vggcifar", "train", *RUN_ARGS, *extra,
                              "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                              "--process-id", str(i), "--run-dir", str(root / f"r{i}")],
                             env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in (0, 1)]


def _finish(procs, timeout=400) -> list[tuple[int, str, str]]:
    """(status, stdout, stderr) of each process, in order, once all have ended."""
    try:
        results = []
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            results.append((p.returncode, out, err))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def _steps(run: Path) -> list[int]:
    return [int(p.name.split("-")[1]) for p in RunDir(run).list_checkpoints()]


def _alive_with(path: Path) -> list[int]:
    """Pids of the processes whose command line names ``path`` (the workers die with their supervisors)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(path).encode() in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            pass
    return pids


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The final variables of the run on one process with two (virtual CPU) devices."""
    if not _has_jax():
        pytest.skip("jax is not installed (pip install -e '.[test]' installs it)")
    run = tmp_path_factory.mktemp("one-process") / "run"
    proc = subprocess.run([sys.executable, "-m", "vggcifar", "train", *RUN_ARGS, "--run-dir", str(run)],
                          env=_env(XLA_FLAGS=xla_flags("--xla_force_host_platform_device_count=2")),
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return final_variables(run)


def assert_same_variables(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("victim", [0, 1])
def test_a_lost_process_ends_the_other_in_one_line_and_resume_ends_as_without_it(tmp_path, uninterrupted, victim):
    # Two processes on one device each train as one process on two devices,
    # here with a loss on the way. A checkpoint after every call: processes
    # killed mid-run are at most one apart.
    procs = _start(tmp_path, "--checkpoint-minutes", "0.0001", port=_free_port())
    survivor = 1 - victim
    try:
        wait_for_checkpoint(tmp_path / f"r{victim}", procs[victim], minimum_step=5)
        procs[victim].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        status = procs[survivor].wait(timeout=180)
        seconds = time.monotonic() - killed
    finally:
        results = _finish(procs, timeout=30)
    out, err = results[survivor][1:]
    assert status == STATUS_LOST_PROCESS, err[-3000:]
    # One line: which process, and how to resume; no traceback, no C++ stack dump.
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"vggcifar: process {victim} was lost ("), err[-3000:]
    assert f"--resume --run-dir {tmp_path / f'r{survivor}'} --coordinator" in lines[0]
    assert lines[0].endswith(f"--num-processes 2 --process-id {survivor})"), lines[0]
    # Process 0 hosts the coordination service: its loss is known at once;
    # another's once its heartbeats have been missing for the timeout.
    assert seconds < (15 if victim == 0 else HEARTBEAT_SECONDS + 30), seconds
    deadline = time.monotonic() + 10
    while _alive_with(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive_with(tmp_path), "a worker outlived its supervisor"
    # Every checkpoint left is whole.
    for i in (0, 1):
        for ckpt in RunDir(tmp_path / f"r{i}").list_checkpoints():
            assert fsutil.read_json(ckpt / "state.json")["global_step"] == int(ckpt.name.split("-")[1])
            assert len(checkpoint.read_variables(ckpt)) == len(uninterrupted)
    common = max(set(_steps(tmp_path / "r0")) & set(_steps(tmp_path / "r1")))
    assert common >= 5
    if victim == 1:
        return  # the resume does not depend on which process was lost: it is run once, after process 0's loss
    early = checkpoint.read_variables(RunDir(tmp_path / "r0").list_checkpoints()[0])
    resumed = _finish(_start(tmp_path, "--resume", port=_free_port()))
    for status, out, err in resumed:
        assert status == 0, err[-3000:]
        assert f"(global step {common})" in out
        assert err == ""
    final = [final_variables(tmp_path / f"r{i}") for i in (0, 1)]
    assert_same_variables(final[0], uninterrupted)
    assert_same_variables(final[1], uninterrupted)
    # The comparison can fail: since the loss, training moved the weights far beyond its tolerance.
    assert max(np.max(np.abs(a - b)) for a, b in zip(early, final[0]) if a.dtype.kind == "f") > 1e-3
    # Each process wrote its whole run folder, with the same checkpoints and history.
    assert _steps(tmp_path / "r0") == _steps(tmp_path / "r1") and _steps(tmp_path / "r0")[-1] == 16
    assert RunDir(tmp_path / "r0").read_history() != [] and all(
        {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}
        for a, b in zip(RunDir(tmp_path / "r0").read_history(), RunDir(tmp_path / "r1").read_history()))
    assert (tmp_path / "r1" / "report.md").is_file() and (tmp_path / "r1" / "model.keras").is_file()
