"""The command line through main(argv): exit codes and one-line errors."""

import os
import subprocess
import sys

import pytest

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
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    code = "import vggcifar, keras; print(keras.backend.backend())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "torch"
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


def test_default_backend_is_pinned_in_pyproject():
    import tomllib
    from pathlib import Path

    import vggcifar

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    deps = pyproject["project"]["dependencies"]
    assert any(d.replace(" ", "").startswith(f"{vggcifar.DEFAULT_BACKEND}==") for d in deps)
