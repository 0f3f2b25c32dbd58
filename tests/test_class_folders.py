"""A folder of class folders as a data set (vggcifar.imagefolder): its layouts,
its pictures as Pillow itself decodes them, hostile files skipped and named,
its seeded stratified test split, its cache, and the commands that read it."""

import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TINY_ARGS
from vggcifar import fsutil, imagefolder
from vggcifar.cifarfiles import DataError
from vggcifar.cli import main
from vggcifar.data import load_dataset, load_source, read_path


@pytest.fixture(autouse=True)
def keras_home(tmp_path, monkeypatch):
    """The folder cache goes beside the Keras cache: here, a temp folder."""
    home = tmp_path / "keras-home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


def _noise(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _write(folder: Path, name: str, image: np.ndarray) -> np.ndarray:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(folder / name)
    return image


def _split_folder(root: Path, classes=("cat", "dog", "emu"), train=4, test=2) -> dict:
    """ROOT/train/<class>/ and ROOT/test/<class>/ of 32x32 noise PNGs; their arrays by (part, class)."""
    arrays = {}
    for part, n in (("train", train), ("test", test)):
        for c, name in enumerate(classes):
            arrays[part, name] = [_write(root / part / name, f"{i:02d}.png", _noise(32, 32, [part == "test", c, i]))
                                  for i in range(n)]
    return arrays


def _as_set(x, y):
    return sorted(bytes([label]) + image.tobytes() for image, label in zip(x, y))


# ------------------------------------------------------------------ layouts
def test_train_and_test_folders_are_read_as_pillow_decodes_them(tmp_path):
    arrays = _split_folder(tmp_path / "pets")
    d = load_dataset(tmp_path / "pets")
    assert d.class_names == ["cat", "dog", "emu"] and d.name == "pets" and d.class_folders
    assert (len(d.x_train), len(d.x_test)) == (12, 6) and d.x_train.dtype == np.uint8
    for part, x, y in (("train", d.x_train, d.y_train), ("test", d.x_test, d.y_test)):
        # The oracle: Pillow's own decoding of each file, labelled by its folder.
        expected = [(image, c) for c, name in enumerate(d.class_names) for image in arrays[part, name]]
        assert _as_set(x, y) == _as_set([e for e, _ in expected], [c for _, c in expected])
    # Not class by class (that would end in four emus): a held-out tail of the training set holds several classes.
    assert d.y_train.tolist() != sorted(d.y_train.tolist()) and len(set(d.y_train[-4:].tolist())) > 1
    assert np.bincount(d.y_train).tolist() == [4, 4, 4]
    assert d.skipped == [] and d.describe()["layout"] == "train/ and test/"
    # The same seed gives the same order; another seed another order of the same images.
    again = load_dataset(tmp_path / "pets")
    assert np.array_equal(again.x_train, d.x_train) and np.array_equal(again.y_train, d.y_train)
    other = load_dataset(tmp_path / "pets", split_seed=1)
    assert not np.array_equal(other.y_train, d.y_train)
    assert _as_set(other.x_train, other.y_train) == _as_set(d.x_train, d.y_train)


def test_pictures_of_any_size_are_made_32x32_as_predict_makes_them(tmp_path):
    from vggcifar.images import read_image, to_model_input

    root = tmp_path / "sizes"
    _write(root / "a", "big.png", _noise(97, 61, 1))
    _write(root / "a", "small.jpg", _noise(9, 12, 2))
    _write(root / "b", "grey.png", _noise(50, 50, 3)[..., 0])  # greyscale PNG
    _write(root / "b", "other.png", _noise(40, 30, 4))
    d = read_path(root, test_share=0.5)
    files = [root / "a" / "big.png", root / "a" / "small.jpg", root / "b" / "grey.png", root / "b" / "other.png"]
    expected = [to_model_input([read_image(f)])[0] for f in files]
    assert _as_set(np.concatenate([d.x_train, d.x_test]), np.concatenate([d.y_train, d.y_test])) == \
        _as_set(expected, [0, 0, 1, 1])


def test_only_class_folders_get_a_seeded_stratified_test_split(tmp_path):
    root = tmp_path / "flat"
    counts = {"a": 10, "b": 7, "c": 3, "d": 2}
    for c, (name, n) in enumerate(counts.items()):
        for i in range(n):
            _write(root / name, f"{i}.png", _noise(32, 32, 100 * c + i))
    d = load_dataset(root, test_share=0.3)
    # round(0.3 n), at least one and at most n - 1 of each class.
    assert np.bincount(d.y_test).tolist() == [3, 2, 1, 1]
    assert np.bincount(d.y_train).tolist() == [7, 5, 2, 1]
    assert d.extra["test_share"] == 0.3 and d.extra["split_seed"] == 0
    assert d.describe()["layout"] == "test split made here"
    again = load_dataset(root, test_share=0.3)
    assert np.array_equal(again.x_test, d.x_test) and np.array_equal(again.x_train, d.x_train)
    other = load_dataset(root, test_share=0.3, split_seed=5)
    assert np.bincount(other.y_test).tolist() == [3, 2, 1, 1]
    assert _as_set(other.x_test, other.y_test) != _as_set(d.x_test, d.y_test)
    # The default share, 0.2.
    assert np.bincount(load_dataset(root).y_test).tolist() == [2, 1, 1, 1]
    with pytest.raises(ValueError, match="Received: test_share=1.5"):
        load_dataset(root, test_share=1.5)


# ------------------------------------------------------------------ hostile files
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _bomb() -> bytes:
    """A 60-byte PNG whose header claims 30000x30000 pixels."""
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 10))
            + _chunk(b"IEND", b""))


@pytest.fixture
def hostile(tmp_path):
    """Good pictures, and in the class folders: a truncated PNG, a text file,
    a decompression bomb, a link to a real picture outside the folder, a pipe;
    hidden files; a stray file beside the class folders."""
    root = tmp_path / "hostile"
    arrays = _split_folder(root, classes=("ant", "bee"), train=3, test=2)
    whole = (root / "train" / "ant" / "00.png").read_bytes()
    (root / "train" / "ant" / "cut.png").write_bytes(whole[: len(whole) // 2])
    (root / "train" / "ant" / "notes.png").write_text("not a picture\n")
    (root / "train" / "bee" / "bomb.png").write_bytes(_bomb())
    _write(tmp_path / "outside", "secret.png", _noise(32, 32, 99))
    os.symlink(tmp_path / "outside" / "secret.png", root / "train" / "bee" / "link.png")
    os.mkfifo(root / "test" / "bee" / "pipe.png")
    (root / "train" / "ant" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "train" / ".ipynb_checkpoints").mkdir()
    (root / "README.txt").write_text("about these pictures\n")
    return root, arrays


def test_hostile_files_are_skipped_and_named(hostile):
    root, arrays = hostile
    d = load_dataset(root)
    skipped = {Path(s["file"]).relative_to(root).as_posix(): s["reason"] for s in d.skipped}
    assert set(skipped) == {"train/ant/cut.png", "train/ant/notes.png", "train/bee/bomb.png", "train/bee/link.png",
                            "test/bee/pipe.png", "README.txt"}
    assert "PNG file is truncated or corrupt" in skipped["train/ant/cut.png"]
    assert "is not a PNG or JPEG image" in skipped["train/ant/notes.png"]
    assert "30000x30000" in skipped["train/bee/bomb.png"] and "refused before decoding" in skipped["train/bee/bomb.png"]
    assert "symbolic link" in skipped["train/bee/link.png"] and "never followed" in skipped["train/bee/link.png"]
    assert "not a regular file" in skipped["test/bee/pipe.png"]
    assert "not inside a class folder" in skipped["README.txt"]
    # What is read is exactly the good pictures: the linked picture outside the folder is not among them.
    assert _as_set(d.x_train, d.y_train) == _as_set(arrays["train", "ant"] + arrays["train", "bee"], [0] * 3 + [1] * 3)
    assert _as_set(d.x_test, d.y_test) == _as_set(arrays["test", "ant"] + arrays["test", "bee"], [0] * 2 + [1] * 2)
    assert d.describe()["skipped_files"] == 6
    # From the cache: the same skipped files, the same reasons.
    again = load_dataset(root)
    assert again.extra["cached"] and again.skipped == d.skipped


def test_a_file_too_large_to_be_a_picture_is_skipped_unread(hostile, monkeypatch):
    root, _ = hostile
    monkeypatch.setattr(imagefolder, "MAX_FILE_BYTES", 5000)  # the good pictures are about 3,200 bytes
    big = root / "train" / "ant" / "huge.png"
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 9992)
    reasons = {Path(s["file"]).name: s["reason"] for s in load_dataset(root).skipped}
    assert "is 10,000 bytes, more than the 5,000" in reasons["huge.png"]


def test_a_class_without_a_readable_picture_is_an_error_in_one_line(tmp_path):
    root = tmp_path / "bad"
    _split_folder(root, classes=("a", "b"), train=2, test=1)
    for f in (root / "train" / "b").iterdir():
        f.write_bytes(b"GIF89a not really")
    with pytest.raises(DataError) as exc:
        load_dataset(root)
    text = str(exc.value)
    assert len(text.splitlines()) == 1 and text.startswith(str(root / "train" / "b"))
    assert "none of its 2 files is a readable picture" in text and "00.png" in text
    for f in (root / "train" / "b").iterdir():
        f.unlink()
    with pytest.raises(DataError, match=r"train/b: it holds no pictures"):
        load_dataset(root)


@pytest.mark.parametrize("change, message", [
    (lambda r: (r / "test" / "b").rename(r / "test" / "c"), "only in train/: b; only in test/: c"),
    (lambda r: os.rename(r / "test", r / "valid"), "has train/ but no test/"),
    (lambda r: [p.unlink() for p in (r / "train").glob("*/*")], "train/a: it holds no pictures"),
    (lambda r: [p.unlink() for p in r.glob("*/*/*")], "its class folders hold no files"),
])
def test_layout_errors_name_the_folder_and_the_fix(tmp_path, change, message):
    root = tmp_path / "x"
    _split_folder(root, classes=("a", "b"), train=2, test=1)
    change(root)
    with pytest.raises(DataError, match=message) as exc:
        load_dataset(root)
    assert len(str(exc.value).splitlines()) == 1 and str(exc.value).startswith(str(root))


def test_a_linked_class_folder_is_refused(tmp_path):
    root = tmp_path / "x"
    _split_folder(tmp_path / "elsewhere", classes=("a",), train=2, test=1)
    _split_folder(root, classes=("b",), train=2, test=1)
    os.symlink(tmp_path / "elsewhere" / "train" / "a", root / "train" / "a")
    with pytest.raises(DataError, match="train/a: is a symbolic link; links are never followed"):
        load_dataset(root)


def test_cifar100s_train_and_test_files_are_not_taken_for_folders(tmp_path):
    # CIFAR-100's batches are files named train and test: a folder of class
    # folders with train/ and test/ folders is not that layout.
    from vggcifar import cifarfiles

    _split_folder(tmp_path / "f", classes=("a", "b"), train=2, test=1)
    assert not cifarfiles.holds_cifar(tmp_path / "f") and imagefolder.is_class_folders(tmp_path / "f")


# ------------------------------------------------------------------ the cache
def test_the_cache_is_keyed_by_content(tmp_path, keras_home, monkeypatch):
    root = tmp_path / "c"
    _split_folder(root, classes=("a", "b"), train=3, test=1)
    first = load_dataset(root)
    cache = keras_home / "datasets" / imagefolder.CACHE_FOLDER
    assert first.extra["cache"] == str(cache / f"{first.sha256}.npz") and Path(first.extra["cache"]).is_file()
    assert not first.extra["cached"]

    # A hit decodes nothing.
    from vggcifar import images

    def no_decoding(*_):
        raise AssertionError("decoded")

    with monkeypatch.context() as m:
        m.setattr(images, "decode_image", no_decoding)
        hit = load_dataset(root)
    assert hit.extra["cached"] and np.array_equal(hit.x_train, first.x_train)

    # One picture's pixels changed, its size and time stamp kept: read again.
    target = root / "train" / "a" / "00.png"
    st = target.stat()
    image = np.asarray(Image.open(target)).copy()
    image[0, 0] ^= 0xFF
    Image.fromarray(image).save(target)
    assert target.stat().st_size == st.st_size
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    changed = load_dataset(root)
    assert not changed.extra["cached"] and changed.sha256 != first.sha256
    assert _as_set(changed.x_train, changed.y_train) != _as_set(first.x_train, first.y_train)
    # A file renamed: read again too.
    target.rename(target.with_name("99.png"))
    assert not load_dataset(root).extra["cached"]
    # A damaged cache entry is read past.
    entry = Path(load_dataset(root).extra["cache"])
    entry.write_bytes(b"PK\3\4 damaged")
    again = load_dataset(root)
    assert not again.extra["cached"] and load_dataset(root).extra["cached"]
    with np.load(entry) as z:
        assert z["x"].shape == (len(again.x_train) + len(again.x_test), 32, 32, 3)


def test_expected_content_hash(tmp_path):
    root = tmp_path / "h"
    _split_folder(root, classes=("a", "b"), train=2, test=1)
    key = read_path(root).sha256
    assert read_path(root, sha256=key.upper()).sha256 == key
    with pytest.raises(DataError, match="does not match the expected"):
        read_path(root, sha256="0" * 64)


# ------------------------------------------------------------------ commands
def test_data_info_and_verify(hostile, tmp_path, capsys):
    root, _ = hostile
    assert main(["data", "info", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"source:   {root} (class folders: train/ and test/, split seed 0)" in out
    assert "skipped:  6 files not a readable picture" in out and "bomb.png: its header claims" in out
    assert re.search(r"^ant\s+3\s+2$", out, re.M) and re.search(r"^bee\s+3\s+2$", out, re.M)
    assert main(["data", "verify", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 7 and err[-1].startswith("vggcifar: error: ") and "and 5 more" in err[-1]

    clean = tmp_path / "clean"
    _split_folder(clean, classes=("a", "b"), train=2, test=1)
    assert main(["data", "verify", str(clean)]) == 0
    out = capsys.readouterr().out
    key = read_path(clean).sha256
    assert out == f"ok: {clean}: clean, 4 train + 2 test images, 2 classes in class folders, content sha256 {key}\n"
    assert main(["data", "verify", str(clean), "--sha256", "ab" * 32]) == 2
    assert "does not match" in capsys.readouterr().err
    assert main(["data", "verify", str(clean), "--official"]) == 2
    assert "not the official archive" in capsys.readouterr().err
    assert main(["data", "info", str(clean / "train"), "--test-share", "0.5"]) == 0
    assert "test split made here, test share 0.5" in capsys.readouterr().out


def test_a_test_share_for_cifar_data_is_refused(tmp_path, capsys):
    from vggcifar import fixtures

    archive = fixtures.write_archive(tmp_path / "c.tar.gz", *fixtures.random_arrays(10, 4))
    with pytest.raises(DataError, match="--data-test-share splits a folder of class folders"):
        load_dataset(archive, test_share=0.2)
    with pytest.raises(ValueError, match="the synthetic set has its own test set"):
        load_dataset(None, "synthetic", test_share=0.2)
    assert main(["data", "info", str(archive), "--test-share", "0.5"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "this is CIFAR data, which has its own test set" in err


def test_a_long_read_says_how_far_it_is(tmp_path, monkeypatch):
    import io

    root = tmp_path / "p"
    _split_folder(root, classes=("a", "b"), train=2, test=1)
    monkeypatch.setattr(imagefolder, "PROGRESS_SECONDS", 0.0)  # a line after every file
    lines = io.StringIO()
    read_path(root, progress=lines)
    text = lines.getvalue().splitlines()
    assert f"hashing {root}: 1 of 6 files (16%)" in text[0]
    assert any(line.startswith(f"reading {root}: 5 of 6 files (83%)") for line in text)
    quiet = io.StringIO()
    monkeypatch.setattr(imagefolder, "PROGRESS_SECONDS", 5.0)
    read_path(root, progress=quiet)  # from the cache, in well under 5 s: no line
    assert quiet.getvalue() == ""


@pytest.mark.slow
def test_training_evaluation_and_resume_read_the_folder_as_the_run_did(tmp_path, capsys):
    # Six classes (top-5 is measured above five), no test/ folder: the split is
    # made here, recorded in run.json, and made again the same by evaluate and --resume.
    root = tmp_path / "six"
    for c in range(6):
        for i in range(6):
            _write(root / f"class-{c}", f"{i}.png", _noise(40, 36, 10 * c + i))
    (root / "class-0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0")
    (root / "class-1" / "notes.txt").write_text("x")
    (root / "class-2" / "list.csv").write_text("x")
    (root / "class-3" / "more.doc").write_text("x")
    run = tmp_path / "run"
    assert main(["train", "--data", str(root), "--data-test-share", "0.34", "--recipe", "spec", "--epochs", "1",
                 "--batch-size", "8", "--precision", "float32", "--quiet", "--run-dir", str(run), *TINY_ARGS]) == 0
    out = capsys.readouterr().out
    # The log: the count and the first few by name; metrics.json: all of them.
    assert f"skipped 4 files that are not a readable picture (all of them, with their reasons, in {run}" in out
    assert f"  {root / 'class-0' / 'broken.png'}: PNG file is truncated or corrupt" in out and "  and 1 more" in out
    metrics = fsutil.read_json(run / "metrics.json")
    assert {Path(s["file"]).name for s in metrics["skipped_files"]} == {"broken.png", "notes.txt", "list.csv",
                                                                        "more.doc"}
    assert metrics["class_names"] == [f"class-{c}" for c in range(6)] and metrics["images"] == 12
    assert metrics["top_5_accuracy"] is not None
    recorded = fsutil.read_json(run / "run.json")["data"]
    assert recorded["data"] == str(root) and recorded["test_share"] == 0.34 and recorded["split_seed"] == 0
    env = fsutil.read_json(run / "environment.json")["dataset"]
    assert env["format"] == "class folders" and env["skipped_files"] == 4 and env["sha256"]
    report = (run / "report.md").read_text()
    assert "test split made here, test share 0.34, split seed 0" in report and "**Skipped files.** 4 files" in report
    assert "| epochs | test accuracy | top-5 accuracy | test loss |" in report

    # evaluate RUN_DIR: the run's own test images, so the run's own figures.
    assert main(["evaluate", str(run)]) == 0
    out = capsys.readouterr().out
    again = fsutil.read_json(run / "evaluation" / "metrics.json")
    assert again["confusion_matrix"] == metrics["confusion_matrix"]
    assert again["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert again["top_5_accuracy"] == pytest.approx(metrics["top_5_accuracy"])
    assert f"(top-5: {100 * metrics['top_5_accuracy']:.2f}%) on 12 images" in out
    assert len(again["skipped_files"]) == 4
    # --resume reloads the same split: the record as the plan carries it.
    from vggcifar.request import make_request
    from vggcifar.runs import resume_plan

    plan = resume_plan(make_request("train", resume=True, run_dir=run))
    resumed, fresh = load_source(plan.source), load_dataset(root, test_share=0.34)
    assert np.array_equal(resumed.x_test, fresh.x_test) and np.array_equal(resumed.y_train, fresh.y_train)
    assert len(resumed.y_test) == 12 and len(load_dataset(root).y_test) == 6  # the default share, 0.2, differs


def test_the_python_api_reads_a_folder_as_the_command_line_does(tmp_path):
    import vggcifar

    root = tmp_path / "api"
    _split_folder(root / "all", classes=("a", "b", "c"), train=5, test=0)
    (x_train, y_train), (x_test, y_test) = data = vggcifar.load_data(data=root / "all" / "train",
                                                                     data_test_share=0.4)
    assert data.class_names == ["a", "b", "c"] and y_test.shape == (6, 1) and x_train.shape == (9, 32, 32, 3)
    expected = load_dataset(root / "all" / "train", test_share=0.4)
    assert np.array_equal(x_test, expected.x_test) and np.array_equal(y_train[:, 0], expected.y_train)
