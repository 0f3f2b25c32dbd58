"""The CIFAR reader: every official layout, checked against keras' own parser,
and every kind of bad input it must refuse with one clear line."""

import dataclasses
import hashlib
import io
import os
import pickle
import pickletools
import tarfile

import numpy as np
import pytest

from vggcifar import data, fixtures, safepickle
from vggcifar.data import DataError, load_cifar, load_dataset, read_cifar

PY = "cifar-10-batches-py"


@pytest.fixture(scope="module")
def arrays():
    # Uneven counts per batch (23 over five batches) on purpose.
    return fixtures.random_arrays(23, 7, seed=1)


@pytest.fixture
def py_archive(tmp_path, arrays):
    return fixtures.write_archive(tmp_path / "cifar-10-python.tar.gz", *arrays)


def assert_same(d, arrays):
    x, y, xt, yt = arrays
    assert d.x_train.dtype == np.uint8 and d.x_train.shape == (len(x), 32, 32, 3)
    assert d.y_train.ndim == 1 and d.y_train.dtype.kind == "i"
    np.testing.assert_array_equal(d.x_train, x)
    np.testing.assert_array_equal(d.y_train, y)
    np.testing.assert_array_equal(d.x_test, xt)
    np.testing.assert_array_equal(d.y_test, yt)


# ------------------------------------------------------------ layouts
def test_python_archive(py_archive, arrays):
    d = load_cifar(py_archive)
    assert_same(d, arrays)
    assert d.class_names == data.CIFAR10_CLASSES and d.name == "cifar10"
    assert d.sha256 == hashlib.sha256(py_archive.read_bytes()).hexdigest()
    assert d.extra["md5"] == hashlib.md5(py_archive.read_bytes()).hexdigest()
    assert d.source == str(py_archive) and d.official is False


def test_binary_archive(tmp_path, arrays):
    p = fixtures.write_archive(tmp_path / "cifar-10-binary.tar.gz", *arrays, layout="binary")
    d = load_cifar(p)
    assert_same(d, arrays)
    assert d.class_names == data.CIFAR10_CLASSES and d.extra["format"] == "binary"


def _pixel_bytes(image) -> bytes:
    """One picture as the binary format's description lays it out: 1,024 red
    bytes, then 1,024 green, then 1,024 blue, each plane row by row."""
    out = bytearray()
    for channel in range(3):
        for row in range(32):
            for col in range(32):
                out.append(int(image[row, col, channel]))
    return bytes(out)


def test_binary_format_against_its_description(tmp_path, arrays):
    # Both directions, by a reader and a writer written here from the format's
    # description (1 label byte + 3,072 pixel bytes per record), not from the
    # project's fixture writer.
    x, y, xt, yt = arrays
    path = tmp_path / "cifar-10-binary.tar.gz"
    batches = np.array_split(np.arange(len(x)), 5)
    with tarfile.open(path, "w:gz") as tar:
        def add(name, blob):
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))

        for i, idx in enumerate(batches, 1):
            add(f"data_batch_{i}.bin", b"".join(bytes([int(y[j])]) + _pixel_bytes(x[j]) for j in idx))
        add("test_batch.bin", b"".join(bytes([int(yt[j])]) + _pixel_bytes(xt[j]) for j in range(len(xt))))
        add("batches.meta.txt", ("\n".join(data.CIFAR10_CLASSES) + "\n\n").encode())
    assert_same(load_cifar(path), arrays)

    members = fixtures.binary_members(x, y, xt, yt)
    blob = members["cifar-10-batches-bin/test_batch.bin"]
    assert len(blob) == len(xt) * 3073
    for j in range(len(xt)):
        record = blob[j * 3073:(j + 1) * 3073]
        assert record[0] == yt[j] and record[1:] == _pixel_bytes(xt[j])


@pytest.mark.parametrize("layout,folder", [("python", PY), ("binary", "cifar-10-batches-bin")])
@pytest.mark.parametrize("parent", [True, False])
def test_extracted_folder_or_its_parent(tmp_path, arrays, layout, folder, parent):
    root = fixtures.write_archive(tmp_path / "x", *arrays, layout=layout, extracted=True)
    d = load_cifar(root if parent else root / folder)
    assert_same(d, arrays)
    assert d.source == str(root / folder) and d.sha256 is None and not d.official


def test_cifar100(tmp_path):
    x, y, xt, yt = fixtures.random_arrays(13, 5, num_classes=100, seed=2)
    names = [f"class{i}" for i in range(100)]
    p = fixtures.write_archive(tmp_path / "cifar-100-python.tar.gz", x, y, xt, yt, layout="cifar100",
                               fine_names=names)
    d = load_cifar(p, dataset="cifar100")
    assert_same(d, (x, y, xt, yt))
    assert d.name == "cifar100" and d.class_names == names and d.num_classes == 100
    np.testing.assert_array_equal(d.extra["y_train_coarse"], y // 5)
    assert len(d.extra["coarse_class_names"]) == 20
    with pytest.raises(DataError, match="holds cifar100, not the requested cifar10"):
        load_cifar(p, dataset="cifar10")


KERAS_LAYOUTS = {
    "keras>=3.6 folder": ("cifar-10-batches-py-target", True),
    "keras>=3.6 archive": ("cifar-10-batches-py-target_archive", False),
    "older keras folder": (".", True),
    "older keras archive": ("cifar-10-batches-py.tar.gz", False),
    "our download": ("cifar-10-python.tar.gz", False),
}


@pytest.mark.parametrize("layout", KERAS_LAYOUTS)
def test_keras_cache(tmp_path, monkeypatch, arrays, layout):
    name, extracted = KERAS_LAYOUTS[layout]
    cache = tmp_path / "keras_home" / "datasets"
    fixtures.write_archive(cache / name, *arrays, extracted=extracted)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    from vggcifar import download

    monkeypatch.setattr(download, "fetch", lambda *a, **k: pytest.fail("downloaded although cached"))
    d = load_cifar()
    assert_same(d, arrays)
    assert d.source.startswith(str(cache))
    # The keras cache folder itself works as --data too.
    assert_same(load_cifar(tmp_path / "keras_home"), arrays)


def test_cache_miss_without_download_names_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(DataError) as err:
        load_cifar(download=False)
    assert str(tmp_path / "datasets") in str(err.value) and "--data PATH" in str(err.value)


def test_official_flag_follows_the_checksum(py_archive, monkeypatch):
    sha = hashlib.sha256(py_archive.read_bytes()).hexdigest()
    monkeypatch.setitem(data.ARCHIVES, "cifar10", dataclasses.replace(data.ARCHIVES["cifar10"], sha256=sha))
    d = load_cifar(py_archive)
    assert d.official and d.extra["official_name"] == "cifar-10-python.tar.gz"


def test_expected_sha256_is_checked(py_archive):
    with pytest.raises(DataError, match="does not match the expected"):
        read_cifar(py_archive, sha256="0" * 64)
    assert read_cifar(py_archive, sha256=hashlib.sha256(py_archive.read_bytes()).hexdigest()).sha256


def test_load_dataset(py_archive, arrays):
    assert_same(load_dataset(py_archive), arrays)
    s = load_dataset(dataset="synthetic", synthetic_train=20, synthetic_test=10)
    assert s.synthetic and len(s.x_train) == 20 and len(s.x_test) == 10 and s.x_train.dtype == np.uint8
    with pytest.raises(ValueError, match="imagenet"):
        load_dataset(dataset="imagenet")


# ------------------------------------------------------------ the reference parser
def test_parser_agrees_with_keras_load_batch(tmp_path, arrays):
    from keras.src.datasets.cifar import load_batch

    root = fixtures.write_archive(tmp_path / "x", *arrays, extracted=True) / PY
    ours = load_cifar(root)
    start = 0
    for name in [f"data_batch_{i}" for i in range(1, 6)]:
        x, y = load_batch(str(root / name))
        n = len(x)
        np.testing.assert_array_equal(ours.x_train[start:start + n].transpose(0, 3, 1, 2), x)
        np.testing.assert_array_equal(ours.y_train[start:start + n], y)
        start += n
    assert start == len(ours.x_train)
    x, y = load_batch(str(root / "test_batch"))
    np.testing.assert_array_equal(ours.x_test.transpose(0, 3, 1, 2), x)
    np.testing.assert_array_equal(ours.y_test, y)


def test_cifar100_agrees_with_keras_load_batch(tmp_path):
    from keras.src.datasets.cifar import load_batch

    arr = fixtures.random_arrays(9, 4, num_classes=100, seed=3)
    root = fixtures.write_archive(tmp_path / "x", *arr, layout="cifar100", extracted=True) / "cifar-100-python"
    ours = load_cifar(root)
    x, y = load_batch(str(root / "train"), label_key="fine_labels")
    np.testing.assert_array_equal(ours.x_train.transpose(0, 3, 1, 2), x)
    np.testing.assert_array_equal(ours.y_train, y)


def test_fixture_pickles_are_python2_style(arrays):
    blob = fixtures.python_members(*arrays)[f"{PY}/data_batch_1"]
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(blob)]
    names = {name for name, _ in ops}
    assert ops[0] == ("PROTO", 2)
    assert ("GLOBAL", "numpy.core.multiarray _reconstruct") in ops
    assert {"SHORT_BINSTRING", "BINSTRING", "REDUCE", "BUILD"} <= names
    assert not names & {"BINUNICODE", "SHORT_BINUNICODE", "BINBYTES", "SHORT_BINBYTES", "STACK_GLOBAL"}
    assert not any("_codecs" in str(arg) for _, arg in ops)
    # The standard unpickler, as keras runs it, reads the same thing.
    d = pickle.loads(blob, encoding="bytes")
    assert set(d) == {b"data", b"labels", b"batch_label", b"filenames"}
    assert isinstance(d[b"labels"], list) and isinstance(d[b"batch_label"], bytes)


def test_fixture_pickle_batches_long_lists_like_cpickle():
    blob = fixtures.dumps_py2({b"labels": list(range(2500))})
    ops = [op.name for op, _, _ in pickletools.genops(blob)]
    assert ops.count("APPENDS") == 3 and pickle.loads(blob, encoding="bytes")[b"labels"] == list(range(2500))


# ------------------------------------------------------------ hostile input
class _System:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _payload(marker):
    return pickle.dumps({b"data": _System(f"touch {marker}")}, protocol=2)


def test_hostile_payload_works_on_a_plain_unpickler(tmp_path):
    # The payload is real: a plain pickle.loads runs the command.
    marker = tmp_path / "ran"
    pickle.loads(_payload(marker))
    assert marker.exists()


@pytest.mark.parametrize("container", ["archive", "folder"])
def test_pickle_calling_os_system_never_runs(tmp_path, arrays, container):
    marker = tmp_path / "pwned"
    members = fixtures.python_members(*arrays)
    members[f"{PY}/data_batch_1"] = _payload(marker)
    path = (fixtures.write_tar(tmp_path / "a.tar.gz", members) if container == "archive"
            else fixtures.write_folder(tmp_path / "f", members))
    with pytest.raises(DataError) as err:
        load_cifar(path)
    assert "system" in str(err.value) and "data_batch_1" in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("blob,message", [
    (b"\x80\x02cnumpy\ndtype\nU\x01OK\x00K\x01\x87R.", "not a plain numeric type"),
    (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncbuiltins\nobject\n.", "refused global builtins.object"),
    (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\nK\x00K\x00\x85U\x01b\x87R.", "may only build numpy.ndarray"),
    (b"\x80\x02cnumpy\nndarray\nK\x05\x85R.", "not callable"),
    (b"\x80\x02cnumpy\nload\n.", "refused global numpy.load"),
])
def test_restricted_unpickler_refuses_misuse_of_numpy(blob, message):
    with pytest.raises((safepickle.UnsafePickleError, TypeError), match=message):
        safepickle.loads(blob)


def _tar_with(tmp_path, arrays, extra):
    members = fixtures.python_members(*arrays)
    path = tmp_path / "hostile.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
        extra(tar)
    return path


def test_member_with_dotdot_is_refused(tmp_path, arrays):
    def add(tar):
        info = tarfile.TarInfo(f"{PY}/../../escaped")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))

    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(DataError, match="points outside the archive"):
        load_cifar(_tar_with(work, arrays, add))
    assert not (tmp_path / "escaped").exists() and not (work.parent.parent / "escaped").exists()


def test_absolute_member_is_refused(tmp_path, arrays):
    def add(tar):
        info = tarfile.TarInfo("/tmp/vggcifar-absolute")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))

    with pytest.raises(DataError, match="points outside the archive"):
        load_cifar(_tar_with(tmp_path, arrays, add))


@pytest.mark.parametrize("kind,word", [("symlinks", "symbolic"), ("hardlinks", "hard")])
def test_link_named_like_a_batch_is_refused(tmp_path, arrays, kind, word):
    members = fixtures.python_members(*arrays)
    del members[f"{PY}/data_batch_3"]
    path = fixtures.write_tar(tmp_path / "a.tar.gz", members, **{kind: {f"{PY}/data_batch_3": "/etc/passwd"}})
    with pytest.raises(DataError, match=f"data_batch_3' is a {word} link"):
        load_cifar(path)


def test_symlinked_batch_in_a_folder_is_refused(tmp_path, arrays):
    root = fixtures.write_archive(tmp_path / "x", *arrays, extracted=True) / PY
    (root / "test_batch").rename(tmp_path / "elsewhere")
    (root / "test_batch").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(DataError, match="test_batch: not a regular file"):
        load_cifar(root)


@pytest.mark.parametrize("keep", [0.5, 0.97, -4])
def test_truncated_gzip(py_archive, keep):
    blob = py_archive.read_bytes()
    py_archive.write_bytes(blob[:keep] if isinstance(keep, int) else blob[:int(len(blob) * keep)])
    with pytest.raises(DataError, match="truncated|damaged|missing|cut short"):
        load_cifar(py_archive)


def test_corrupt_gzip_crc(py_archive):
    blob = bytearray(py_archive.read_bytes())
    blob[-6] ^= 0xFF  # inside the CRC32 trailer
    py_archive.write_bytes(bytes(blob))
    with pytest.raises(DataError, match="damaged"):
        load_cifar(py_archive)


def _batch(arrays, changes):
    x, y = arrays[0][:4], arrays[1][:4]
    d = {b"batch_label": b"training batch 1 of 5", b"labels": [int(v) for v in y],
         b"data": fixtures.rows(x), b"filenames": [b"a.png"] * 4}
    d.update(changes)
    return fixtures.dumps_py2({k: v for k, v in d.items() if v is not None})


@pytest.mark.parametrize("changes,message", [
    ({b"data": np.zeros((4, 3000), np.uint8)}, r"uint8 \(4, 3000\), expected uint8 \(N, 3072\)"),
    ({b"data": np.zeros((4, 3072), np.float32)}, "float32"),
    ({b"data": np.zeros(4 * 3072, np.uint8)}, "expected uint8"),
    ({b"data": None}, "no `data` array"),
    ({b"labels": [0, 1, 2]}, "4 images but 3 labels"),
    ({b"labels": [0, 1, 2, 10]}, "label 10 outside the 10 classes"),
    ({b"labels": [0, 1, -1, 2]}, "label -1 outside"),
    ({b"labels": [b"cat"] * 4}, "list of integers"),
    ({b"filenames": [b"a.png"]}, "different number of `filenames`"),
])
def test_bad_batches_name_the_member(tmp_path, arrays, changes, message):
    members = fixtures.python_members(*arrays)
    members[f"{PY}/data_batch_2"] = _batch(arrays, changes)
    with pytest.raises(DataError, match=message) as err:
        load_cifar(fixtures.write_tar(tmp_path / "a.tar.gz", members))
    assert f"{PY}/data_batch_2" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("blob,message", [
    (b"not a pickle at all", "not a readable CIFAR pickle"),
    (fixtures.dumps_py2([1, 2, 3]), "expected a pickled dict"),
    (fixtures.dumps_py2({b"label_names": []}), "non-empty list of strings"),
])
def test_bad_meta(tmp_path, arrays, blob, message):
    members = fixtures.python_members(*arrays)
    members[f"{PY}/batches.meta"] = blob
    with pytest.raises(DataError, match=message):
        load_cifar(fixtures.write_tar(tmp_path / "a.tar.gz", members))


def test_missing_member(tmp_path, arrays):
    members = fixtures.python_members(*arrays)
    del members[f"{PY}/data_batch_4"]
    with pytest.raises(DataError, match="missing cifar-10-batches-py/data_batch_4"):
        load_cifar(fixtures.write_tar(tmp_path / "a.tar.gz", members))
    root = fixtures.write_folder(tmp_path / "f", members) / PY
    with pytest.raises(DataError, match="missing data_batch_4"):
        load_cifar(root)


def test_duplicate_member(tmp_path, arrays):
    def add(tar):
        blob = fixtures.python_members(*arrays)[f"{PY}/test_batch"]
        info = tarfile.TarInfo(f"{PY}/test_batch")
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))

    with pytest.raises(DataError, match="appears twice"):
        load_cifar(_tar_with(tmp_path, arrays, add))


def test_binary_record_length_and_labels(tmp_path, arrays):
    members = fixtures.binary_members(*arrays)
    name = "cifar-10-batches-bin/data_batch_1.bin"
    good = members[name]
    members[name] = good[:-1]
    with pytest.raises(DataError, match="data_batch_1.bin: .* not a whole number of 3073-byte records"):
        load_cifar(fixtures.write_tar(tmp_path / "a.tar.gz", members))
    members[name] = bytes([200]) + good[1:]
    with pytest.raises(DataError, match="label 200 outside"):
        load_cifar(fixtures.write_tar(tmp_path / "b.tar.gz", members))


def test_not_cifar(tmp_path):
    p = fixtures.write_tar(tmp_path / "other.tar.gz", {"something/else": b"x"})
    with pytest.raises(DataError, match="no CIFAR members"):
        load_cifar(p)
    (tmp_path / "plain.txt").write_text("hello")
    with pytest.raises(DataError, match="truncated or damaged"):
        load_cifar(tmp_path / "plain.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no CIFAR data in this folder"):
        load_cifar(tmp_path / "empty")
    with pytest.raises(DataError, match="no such file or folder"):
        load_cifar(tmp_path / "nope")


def test_pixels_stay_uint8_and_contiguous(py_archive):
    d = load_cifar(py_archive)
    for a in (d.x_train, d.x_test):
        assert a.dtype == np.uint8 and a.flags.c_contiguous and a.flags.writeable


def test_gzip_plain_tar_also_reads(tmp_path, arrays):
    p = fixtures.write_tar(tmp_path / "cifar.tar", fixtures.python_members(*arrays))
    with open(p, "rb") as f:
        assert f.read(2) != b"\x1f\x8b"
    assert_same(load_cifar(p), arrays)


@pytest.mark.parametrize("n_train", [25, 23, 3])  # even batches, uneven ones, empty ones
def test_any_count_per_batch_in_any_member_order(tmp_path, n_train):
    arrays = fixtures.random_arrays(n_train, 4, seed=n_train)
    members = fixtures.python_members(*arrays)
    shuffled = dict(sorted(members.items(), key=lambda kv: hashlib.md5(kv[0].encode()).digest()))
    assert list(shuffled) != list(members)
    assert_same(load_cifar(fixtures.write_tar(tmp_path / "a.tar.gz", shuffled)), arrays)
    assert_same(load_cifar(fixtures.write_archive(tmp_path / "b.tar.gz", *arrays, layout="binary")), arrays)
