"""What a run prints while it trains: a bounded plain log when stdout is not a
terminal, Keras' bar when it is, and time estimates that count compilation
(step durations are injected, so nothing here depends on this machine's speed)."""

import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import TINY_ARGS
from vggcifar.progress import Progress, steady_seconds_per_step

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # escape codes, carriage returns, backspaces


def simulate(progress: Progress, durations, *, chunk: int = 1, first_epoch: int = 0, first_step: int = 0):
    """Drive ``progress`` as the training loop does, ``chunk`` steps a call,
    each step taking the next of ``durations`` (per epoch: a list of lists)."""
    for e, epoch_durations in enumerate(durations, first_epoch):
        progress.epoch_start(e)
        step = first_step if e == first_epoch else 0
        while step < progress.steps_per_epoch:
            n = min(chunk, progress.steps_per_epoch - step)
            seconds = float(sum(epoch_durations[step:step + n]))
            step += n
            progress.step(step, 2.0 / step, 0.1, seconds)
        progress.epoch_end({"epoch": e + 1, "loss": 1.0, "accuracy": 0.5, "val_accuracy": None},
                           train_seconds=0.0)


def lines_of(epochs, steps, *, chunk=1, durations=None):
    out = []
    p = Progress(epochs, steps, batch_size=32, log=out.append, interactive=False)
    simulate(p, durations or [[0.1] * steps] * epochs, chunk=chunk)
    return out


@pytest.mark.parametrize("steps", [1, 2, 7, 10, 11, 19, 20, 21, 157, 1563, 50000])
@pytest.mark.parametrize("chunk", [1, 4, 64])
def test_plain_log_has_a_bounded_number_of_lines_per_epoch(steps, chunk):
    # 0.1 s a step: epochs of 0.1 s to 5,000 s.
    out = lines_of(2, steps, chunk=chunk)
    assert not any(CONTROL.search(line) for line in out)
    per_epoch = [[line for line in out if line.startswith(f"epoch {e}/2 step ")] for e in (1, 2)]
    every = -(-steps // 10)  # a tenth of the epoch, in steps
    for e, lines in enumerate(per_epoch, 1):
        assert len(lines) <= Progress.PLAIN_LINES, lines
        steps_named = [int(re.search(r"step (\d+)/", line).group(1)) for line in lines]
        assert steps_named == sorted(steps_named) and all(0 < s < steps for s in steps_named)
        if chunk == 1 and e == 1 and steps > 10:
            assert steps_named[0] == every  # the run's first line: its speed, at the first tenth
        # Lines at least PLAIN_SECONDS of training apart (0.1 s a step), none in a short epoch after the first.
        assert all(0.1 * (b - a) >= Progress.PLAIN_SECONDS - 1e-9 for a, b in zip(steps_named, steps_named[1:]))
        if e == 2 and 0.1 * steps < Progress.PLAIN_SECONDS:
            assert lines == [], lines
        if chunk == 1 and 0.1 * every >= Progress.PLAIN_SECONDS:
            assert len(lines) == (steps - 1) // every, lines  # a long epoch: a line each tenth
    assert sum(line.startswith("epoch 1/2:") for line in out) == 1  # the epoch's own line


def test_a_three_epoch_run_of_one_second_epochs_writes_one_progress_line():
    out = lines_of(3, 100, durations=[[0.01] * 100] * 3)
    assert [line.split(":")[0] for line in out if " step " in line] == ["epoch 1/3 step 10/100 (10%)"]
    assert len(out) == 4  # and the three epochs' own lines


def test_plain_line_says_step_loss_accuracy_speed_and_eta():
    out = lines_of(1, 100, durations=[[0.5] + [0.25] * 99])
    line = next(line for line in out if " step " in line)
    # 32 images in 0.25 s: 128 img/s; 90 steps left at 0.25 s: 22.5 s.
    assert line == "epoch 1/1 step 10/100 (10%): loss 0.2000, accuracy 0.1000, 128 img/s, epoch ETA 0:00:22"


def test_quiet_prints_no_progress_lines():
    out = []
    simulate(Progress(2, 50, log=out.append, verbose=0, interactive=False), [[0.1] * 50] * 2)
    assert not any(" step " in line for line in out) and sum(line.startswith("epoch ") for line in out) == 2


def test_on_a_terminal_the_bar_is_keras(capsys):
    out = []
    simulate(Progress(1, 5, log=out.append, interactive=True), [[0.1] * 5])
    assert out[0] == "Epoch 1/1" and not any(" step " in line for line in out)
    assert "5/5" in capsys.readouterr().out  # Keras' Progbar, on stdout


def test_steady_rate_leaves_out_compilation_and_keeps_the_mean_of_the_rest():
    assert steady_seconds_per_step([(1, 0.1), (1, 0.3), (1, 3.0), (2, 0.4)]) == pytest.approx(0.8 / 4)
    assert steady_seconds_per_step([(4, 0.8)]) == pytest.approx(0.2)
    assert steady_seconds_per_step([]) is None


# --------------------------------------------------------------------------- #
# the first estimate, against what the steps then take
# --------------------------------------------------------------------------- #
def demo_like_durations(epochs=3, steps=20, seed=0):
    """As `make demo` ran (measured): the first step compiles (5 s), the
    short last batch of epoch 1 compiles again (2.7 s), the other steps take
    0.1-0.3 s on a shared CPU."""
    rng = np.random.default_rng(seed)
    durations = [list(rng.uniform(0.1, 0.3, steps)) for _ in range(epochs)]
    durations[0][0] = 5.0
    durations[0][-1] = 2.7
    return durations


def estimate_of(out) -> float:
    line = next(line for line in out if line.startswith("estimate: "))
    h, m, s = re.search(r"estimate: (\d+):(\d\d):(\d\d)", line).groups()
    return int(h) * 3600 + int(m) * 60 + int(s)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("chunk", [1, 3])
def test_first_estimate_is_within_a_quarter_of_the_training_time(seed, chunk):
    durations = demo_like_durations(seed=seed)
    out = []
    # 2,500 images at batch 128: 20 steps, the last one of 68 images.
    simulate(Progress(3, 20, batch_size=128, images=2500, log=out.append, interactive=False), durations,
             chunk=chunk)
    total = sum(map(sum, durations))
    assert estimate_of(out) == pytest.approx(total, rel=0.25), (estimate_of(out), total, out)
    assert estimate_of(out) == pytest.approx(total, rel=0.12), (estimate_of(out), total, out)
    # Before: the compiled steps 2-4 alone, times 60 steps: the compilation left out.
    old = np.mean(durations[0][1:4]) * 60
    assert old < 0.75 * total
    line = next(line for line in out if line.startswith("estimate: "))
    assert "of training for 3 epochs" in line and "of compilation" in line and "short last batch" in line


def test_no_recompilation_is_expected_without_a_short_last_batch():
    durations = demo_like_durations(seed=0)
    durations[0][-1] = 0.2
    out = []
    simulate(Progress(3, 20, batch_size=125, images=2500, log=out.append, verbose=0), durations)
    assert "short last batch" not in next(line for line in out if line.startswith("estimate"))
    assert estimate_of(out) == pytest.approx(sum(map(sum, durations)), rel=0.12)


def test_first_estimate_waits_for_enough_compiled_steps():
    # 3 compiled steps make 1.5 s: the estimate waits for the fifth step (2 s of them).
    steps = []
    p = Progress(1, 30, log=lambda line: steps.append((p._step, line)), verbose=0)
    simulate(p, [[3.0] + [0.5] * 29])
    assert [s for s, line in steps if line.startswith("estimate")] == [5]


def test_epoch_eta_counts_compiled_steps_only():
    durations = demo_like_durations(epochs=5, steps=40, seed=1)
    out = []
    simulate(Progress(5, 40, log=out.append, verbose=0), durations)
    etas = [re.search(r"ETA (\d+):(\d\d):(\d\d)", line).groups() for line in out if line.startswith("epoch ")]
    for done, (h, m, s) in enumerate(etas[:-1], 1):
        rest = sum(map(sum, durations[done:]))
        assert int(h) * 3600 + int(m) * 60 + int(s) == pytest.approx(rest, rel=0.25, abs=1), (done, rest, out)


def test_a_resumed_run_estimates_what_is_left():
    durations = demo_like_durations(epochs=3, steps=20, seed=2)
    out = []
    p = Progress(3, 20, log=out.append, verbose=0)
    p.resumed(1, 5, 25)
    durations[1][5] = 4.0  # the resumed process compiles again
    simulate(p, durations[1:], first_epoch=1, first_step=5)
    rest = sum(durations[1][5:]) + sum(durations[2])
    assert "more of training to epoch 3" in next(line for line in out if line.startswith("estimate"))
    assert estimate_of(out) == pytest.approx(rest, rel=0.25)


# --------------------------------------------------------------------------- #
# a real run, its output written to a file
# --------------------------------------------------------------------------- #
@pytest.mark.slow
def test_run_written_to_a_file_has_no_escape_codes_and_few_lines_per_epoch(tmp_path):
    # 40 steps an epoch (160 images, batch 4): a terminal would get a bar
    # redrawn 40 times an epoch; the file gets a few lines, paced by time.
    log = tmp_path / "log.txt"
    argv = ["train", "--dataset", "synthetic", "--limit-train", "160", "--limit-test", "16", "--epochs", "2",
            "--batch-size", "4", "--run-dir", str(tmp_path / "run"), *TINY_ARGS]
    with open(log, "wb") as f:
        done = subprocess.run([sys.executable, "-m", "vggcifar", *argv], stdout=f, stderr=subprocess.STDOUT,
                              timeout=300)
    text = log.read_text()
    assert done.returncode == 0, text[-3000:]
    assert not CONTROL.search(text.replace("\n", "")), repr(text[:500])
    for epoch in (1, 2):
        steps = [line for line in text.splitlines() if line.startswith(f"epoch {epoch}/2 step ")]
        # The run's first line comes at the first tenth; then one each 30 s of training at most.
        assert (epoch == 2 or len(steps) >= 1) and len(steps) <= Progress.PLAIN_LINES, text
        assert all("img/s" in line and "loss" in line and "accuracy" in line for line in steps), steps
    # Besides the epochs' lines, a fixed few: run folder, backend, learning
    # rate, the short-run word, the estimate (a slow machine makes one), the
    # test accuracy, the collapse warning and the last line.
    assert len(text.splitlines()) <= 2 * (Progress.PLAIN_LINES + 1) + 8, text


def test_the_loop_reports_step_times_and_the_estimate_matches_the_time_of_learning(tmp_path, monkeypatch):
    # The loop's clock is replaced by one that each step advances by a
    # scripted duration: a 5 s first step (the compilation), then 0.5 s.
    import types

    from conftest import TINY
    from vggcifar import loop as T
    from vggcifar.config import make_config
    from vggcifar.data import load_synthetic
    from vggcifar.runs import train_run

    clock = [0.0]
    durations = iter([5.0] + [0.5] * 100)
    real = T.make_runner

    def make(*args, **kwargs):
        runner = real(*args, **kwargs)
        run = runner.run

        def scripted(rows):
            out = run(rows)
            clock[0] += sum(next(durations) for _ in rows)
            return out

        runner.run = scripted
        return runner

    monkeypatch.setattr(T, "make_runner", make)
    monkeypatch.setattr(T, "time", types.SimpleNamespace(perf_counter=lambda: clock[0], monotonic=lambda: 0.0))
    out = []
    config = make_config("spec", **TINY, epochs=2, batch_size=16, lr=0.01, steps_per_execution=1)
    metrics = train_run(config, load_synthetic(train=160, test=16, seed=1), tmp_path / "run", verbose=0,
                        log=out.append)
    assert metrics["train_seconds"] == pytest.approx(5.0 + 19 * 0.5)
    # After 4 compiled steps (2 s): 7 s spent, 15 steps at 0.5 s to come.
    assert estimate_of(out) == 14, out
    assert estimate_of(out) == pytest.approx(metrics["train_seconds"], rel=0.25)
    epoch_1 = next(line for line in out if line.startswith("epoch 1/2:"))
    assert "trained 0:00:10, ETA 0:00:05 of training" in epoch_1, epoch_1
