"""``vggcifar data info`` / ``data verify`` and the shared --data/--dataset options."""

import argparse
import dataclasses
import hashlib

import pytest

from vggcifar import data, fixtures, options
from vggcifar.cli import main


@pytest.fixture
def archive(tmp_path):
    x, y, xt, yt = fixtures.random_arrays(20, 10, seed=7)
    y[:] = [0] * 5 + [3] * 15  # known counts per class
    return fixtures.write_archive(tmp_path / "cifar-10-python.tar.gz", x, y, xt, yt)


def test_info(archive, capsys):
    assert main(["data", "info", str(archive)]) == 0
    out = capsys.readouterr().out
    assert str(archive) in out and "python layout" in out
    assert hashlib.sha256(archive.read_bytes()).hexdigest() in out
    assert "official: no" in out and "20 train + 10 test images" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[-10:]}
    assert rows["airplane"][0] == "5" and rows["cat"][0] == "15" and rows["dog"][0] == "0"


def test_info_official(archive, capsys, monkeypatch):
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    monkeypatch.setitem(data.ARCHIVES, "cifar10", dataclasses.replace(data.ARCHIVES["cifar10"], sha256=sha))
    assert main(["data", "info", str(archive)]) == 0
    assert "official: yes, the bytes of cifar-10-python.tar.gz" in capsys.readouterr().out


def test_info_from_the_cache_never_downloads(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert main(["data", "info"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vggcifar: error: no cifar10 in the keras cache") and str(tmp_path) in err
    assert err.count("\n") == 1


def test_verify_ok(archive, capsys):
    assert main(["data", "verify", str(archive)]) == 0
    assert capsys.readouterr().out.startswith(f"ok: {archive}: cifar10, 20 train + 10 test images")


def test_verify_damaged(tmp_path, capsys):
    members = fixtures.python_members(*fixtures.random_arrays(5, 2))
    members["cifar-10-batches-py/test_batch"] = members["cifar-10-batches-py/test_batch"][:-100]
    path = fixtures.write_tar(tmp_path / "bad.tar.gz", members)
    assert main(["data", "verify", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert "cifar-10-batches-py/test_batch: not a readable CIFAR pickle" in captured.err
    assert "Traceback" not in captured.err


def test_verify_official_and_sha256(archive, capsys):
    assert main(["data", "verify", "--official", str(archive)]) == 2
    assert "not the official archive" in capsys.readouterr().err
    assert main(["data", "verify", "--sha256", "ab" * 32, str(archive)]) == 2
    assert "does not match" in capsys.readouterr().err
    assert main(["data", "verify", "--sha256", hashlib.sha256(archive.read_bytes()).hexdigest(), str(archive)]) == 0


def test_verify_missing_path(tmp_path, capsys):
    assert main(["data", "verify", str(tmp_path / "nope.tar.gz")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def _source(args) -> dict:
    return data.data_source(args.data, args.dataset, args.data_url, args.data_sha256)


def _parser():
    p = argparse.ArgumentParser()
    options.add_data_options(p)
    return p


def test_data_options(archive):
    p = _parser()
    assert p.parse_args([]).dataset is None and p.parse_args([]).data is None  # None: cifar10, or a run's own
    with pytest.raises(SystemExit):
        p.parse_args(["--data", "x", "--dataset", "cifar100"])
    d = data.load_source(_source(p.parse_args(["--data", str(archive)])))
    assert d.source == str(archive) and len(d.x_train) == 20
    s = data.load_source(_source(p.parse_args(["--dataset", "synthetic"])), synthetic_train=30,
                         synthetic_test=10)
    assert s.synthetic and (len(s.x_train), len(s.x_test)) == (30, 10)


def test_data_options_pass_the_mirror(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(data, "load_cifar", lambda source, **kw: seen.update(kw, source=source) or "loaded")
    args = _parser().parse_args(["--dataset", "cifar100", "--data-url", "https://m.invalid/c.tgz",
                                 "--data-sha256", "ab" * 32])
    assert data.load_source(_source(args)) == "loaded"
    assert seen["source"] is None and seen["dataset"] == "cifar100"
    assert seen["url"] == "https://m.invalid/c.tgz" and seen["sha256"] == "ab" * 32


def test_evaluate_passes_the_mirror(tmp_path, monkeypatch, capsys):
    import keras

    inputs = keras.Input((32, 32, 3))
    keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(inputs))).save(tmp_path / "m.keras")
    seen = {}

    def record(source, **kw):
        seen.update(kw, source=source)
        raise ValueError("stopped after the data request")

    monkeypatch.setattr(data, "load_cifar", record)
    assert main(["evaluate", str(tmp_path / "m.keras"), "--dataset", "cifar100",
                 "--data-url", "https://m.invalid/c.tgz", "--data-sha256", "ab" * 32]) == 2
    assert "stopped after the data request" in capsys.readouterr().err
    assert seen["dataset"] == "cifar100" and seen["url"] == "https://m.invalid/c.tgz" and seen["sha256"] == "ab" * 32
