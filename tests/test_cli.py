"""The command line through main(argv): exit codes and one-line errors."""

import os
import re
import subprocess
import sys

import pytest

from conftest import BACKEND_CHOICE_PROBE
from vggcifar.cli import main


def test_unknown_model_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["summary", "--model", "vgg17"])
    assert exc.value.code == 2
    assert "invalid choice: 'vgg17'" in capsys.readouterr().err


def test_bad_number_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["summary", "--num-classes", "zero"])
    assert exc.value.code == 2
    assert "expected a positive integer, received 'zero'" in capsys.readouterr().err


def test_value_error_becomes_one_line_and_status_2(capsys):
    assert main(["summary", "--dense-units", "-3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vggcifar: error: ") and "Received: dense_units=-3" in err
    assert len(err.strip().splitlines()) == 1


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("vggcifar ")


def test_python_dash_m_and_default_backend():
    # The package's default, said so and recorded (a user's choice: tests/test_steps.py).
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    out = subprocess.run([sys.executable, "-c", BACKEND_CHOICE_PROBE], env=env, capture_output=True, text=True,
                         check=True)
    name, said, recorded = out.stdout.strip().split(" | ")
    assert name == "tensorflow" and said.startswith("the default") and recorded == said, out.stdout
    # A user's choice wins over the package default (checked before keras loads:
    # other backends need not be installed here).
    env["KERAS_BACKEND"] = "jax"
    code = "import os, vggcifar; print(os.environ['KERAS_BACKEND'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "jax"
    # So does keras imported first: the package then leaves the choice alone.
    env.pop("KERAS_BACKEND")
    code = "import sys; sys.modules['keras'] = None; import os, vggcifar; print(os.environ.get('KERAS_BACKEND'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "None"


def test_command_output_holds_no_backend_start_up_lines(tmp_path):
    # The backend's own start-up lines (TensorFlow writes INFO lines about
    # oneDNN, CUDA and CPU flags to stderr as it loads) stay out of a
    # command's output: an error is one line, and a success prints nothing there.
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    ok = subprocess.run([sys.executable, "-m", "vggcifar", "summary", "--model", "vgg11"],
                        env=env, capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stderr == "" and "WEIGHTS(N)" in ok.stdout
    # The control: the same command unfiltered does write the backend's lines.
    loud = subprocess.run([sys.executable, "-m", "vggcifar", "summary", "--model", "vgg11"],
                          env={**env, "VGGCIFAR_BACKEND_LOG": "1"}, capture_output=True, text=True)
    assert loud.returncode == 0 and loud.stdout == ok.stdout
    assert re.search(r"^[IWE]\d{4} [\d:.]+ +\d+ \w+\.cc:\d+\]", loud.stderr, re.M), loud.stderr
    # An error once the backend has loaded (the data folder is found missing after it).
    bad = subprocess.run([sys.executable, "-m", "vggcifar", "train", "--data", str(tmp_path / "none"), "--epochs", "1",
                          "--run-dir", str(tmp_path / "run")], env=env, capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.startswith("vggcifar: error: ") and len(bad.stderr.splitlines()) == 1, bad.stderr


def test_default_backend_is_pinned_in_its_extra_and_the_base_needs_none():
    import tomllib
    from pathlib import Path

    import vggcifar
    from vggcifar.cli import KERAS_BACKENDS

    root = Path(__file__).parents[1]
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    assert [d.replace(" ", "") for d in extras[vggcifar.DEFAULT_BACKEND]] == [f"{vggcifar.DEFAULT_BACKEND}==2.21.0"]
    names = {d.split("[")[0].split("=")[0].split(">")[0].strip() for d in pyproject["project"]["dependencies"]}
    assert not names & set(KERAS_BACKENDS) and "keras" in names
    # Each backend's extra has the backend's name, as the no-backend message says.
    assert all(any(d.startswith(b) for d in extras[b]) for b in KERAS_BACKENDS)
    assert "gpu" in extras
    # `make setup` (the README's commands) installs the CPU default.
    assert f"-e '.[{vggcifar.DEFAULT_BACKEND},test]'" in (root / "Makefile").read_text()


def test_no_backend_installed_is_one_line_naming_the_extra():
    # None in sys.modules makes an import fail as if the package were not
    # installed; commands that build no model still work.
    mock = ("import sys\n"
            "for name in ('tensorflow', 'jax', 'torch'):\n"
            "    sys.modules[name] = None\n")
    code = (mock +
            "from vggcifar.cli import main\n"
            "print('RECIPES', main(['recipes', 'spec', '--json']) == 0)\n"
            "print('SUMMARY', main(['summary', '--model', 'vgg11']))\n")
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "RECIPES True" in out.stdout and "SUMMARY 2" in out.stdout, out.stderr[-2000:]
    assert out.stderr == ("vggcifar: error: Keras' tensorflow backend is not installed: pip install -e "
                          "'.[tensorflow]' (or another backend's extra: tensorflow, the CPU default; jax; torch)\n")
    # The control: the same commands with the backends there build the model.
    out = subprocess.run([sys.executable, "-c", code.replace(mock, "")], env=env, capture_output=True, text=True,
                         timeout=120)
    assert "SUMMARY 0" in out.stdout, out.stderr[-2000:]


def test_a_lone_installed_backend_is_the_default(monkeypatch):
    import importlib.util

    import vggcifar

    real = importlib.util.find_spec
    for missing, expected in ((("tensorflow",), "jax"), (("tensorflow", "jax"), "torch")):
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a, gone=missing: None if name in gone else real(name, *a)
                            if name != "torch" else object())
        monkeypatch.setattr(vggcifar, "_has_nvidia_gpu", lambda: False)
        chosen, why = vggcifar.default_backend()
        assert (chosen, why) == (expected, "the backend installed (tensorflow, the default, is not)")


def test_backend_log_filter_drops_only_start_up_chatter():
    # Written straight to descriptor 2, as the backend's C++ code does; the
    # progress line (carriage return, no newline) must pass at once, unheld.
    code = r"""
import os, sys
from vggcifar.quietlog import BackendLogFilter
with BackendLogFilter():
    os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
    os.write(2, b"I0000 00:00:1795659365.641135   20131 port.cc:153] oneDNN custom operations are on.\n")
    os.write(2, b"E0000 00:00:1795659371.716460   20131 cuda_platform.cc:52] failed call to cuInit: UNKNOWN\n")
    os.write(2, b"E0000 00:00:1795659371.716460   20131 allocator.cc:1] out of memory\n")
    os.write(2, b"Epoch 1/3 step 5\r")
    os.write(2, b"I0")
    os.write(2, b"000 00:00:17.1 7 x.cc:1] split\n")
    sys.stderr.write("vggcifar: error: kept\n")
"""
    env = {k: v for k, v in os.environ.items() if k != "VGGCIFAR_BACKEND_LOG"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True)
    assert out.stderr == (b"E0000 00:00:1795659371.716460   20131 allocator.cc:1] out of memory\n"
                          b"Epoch 1/3 step 5\rvggcifar: error: kept\n")
    env["VGGCIFAR_BACKEND_LOG"] = "1"  # everything, for debugging the backend
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True)
    assert out.stderr.count(b"\n") == 6 and b"oneDNN" in out.stderr and b"cuInit" in out.stderr


def test_every_test_the_guarantees_cite_exists():
    # The Guarantees table names the test behind each promise: each must exist.
    import re
    from pathlib import Path

    root = Path(__file__).parents[1]
    page = root / "docs" / "guarantees.md"
    cited = set(re.findall(r"`(tests/test_\w+\.py)::(test_\w+)`", page.read_text()))
    assert len(cited) >= 20
    for path, name in sorted(cited):
        source = (root / path).read_text()
        assert re.search(rf"^def {name}\(", source, re.M), f"{page.name} cites {path}::{name}, which does not exist"


def test_experiment_milestones_follow_epochs():
    from vggcifar.cli import build_parser
    from vggcifar.request import default_milestones

    assert default_milestones(None) == [10, 20, 50, 100]
    assert default_milestones(4) == [4]
    assert default_milestones(30) == [10, 20, 30]
    assert default_milestones(100) == [10, 20, 50, 100]
    assert default_milestones(150) == [10, 20, 50, 100, 150]
    args = build_parser().parse_args(["experiment", "--epochs", "4"])
    assert args.milestones is None  # resolved from --epochs when the command runs


def test_every_option_of_every_command_has_help():
    # The parser walked whole: every command and action, every option and
    # positional argument says what it is in `--help`.
    import argparse

    from vggcifar.cli import build_parser

    missing, seen = [], 0

    def walk(parser, path):
        nonlocal seen
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    if not (choice.help or "").strip():
                        missing.append(f"{path} {choice.dest}")
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
                continue
            seen += 1
            if action.help in (None, argparse.SUPPRESS) or not action.help.strip():
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "vggcifar")
    assert not missing, missing
    assert seen > 100  # the walk reached every command's options


def test_make_demo_is_long_enough_to_learn():
    # The demo's options as the Makefile gives them, through the parser: the
    # run's short-run check finds it long enough (it measured 90-97% in about
    # a minute of training on 2 cores, seeds 0-2).
    import shlex
    from pathlib import Path

    from vggcifar import budget
    from vggcifar.cli import _request, build_parser
    from vggcifar.config import trained_images

    makefile = (Path(__file__).parents[1] / "Makefile").read_text().replace("\\\n", " ")
    line = next(line for line in makefile.splitlines() if line.startswith("DEMO_ARGS :="))
    args = build_parser().parse_args(["experiment", *shlex.split(line.split(":=", 1)[1])])
    config = _request(args).config()
    assert args.dataset == "synthetic" and config.recipe != "spec"  # offline, and a recipe that learns
    images = trained_images(config, config.limit_train)
    assert budget.short_run(config, images) is None
    assert budget.step_budget(config, images).steps >= budget.MIN_STEPS
    assert "$(DEMO_ARGS)" in makefile[makefile.index("\ndemo:"):]
