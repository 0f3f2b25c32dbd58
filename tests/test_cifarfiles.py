"""The archive parser's refusals, word for word (each names the file or
member and the fix), the keras cache's layouts, and the reader's own file
object and guards (safepickle). test_data.py covers the layouts that load."""

import dataclasses
import hashlib
import io
import pickle
import tarfile

import numpy as np
import pytest

from vggcifar import cifarfiles, fixtures, safepickle
from vggcifar.cifarfiles import DataError
from vggcifar.data import load_cifar

PY, BIN, C100 = "cifar-10-batches-py", "cifar-10-batches-bin", "cifar-100-python"
FIX = "replace it with the official archive from https://www.cs.toronto.edu/~kriz/cifar.html"


@pytest.fixture(scope="module")
def arrays():
    return fixtures.random_arrays(10, 4, seed=3)


def refusal(path) -> str:
    with pytest.raises(DataError) as err:
        load_cifar(path)
    return str(err.value)


def archive_with(tmp_path, members, name="a.tar.gz") -> str:
    return str(fixtures.write_tar(tmp_path / name, members))


@pytest.mark.parametrize("member,blob,message", [
    (f"{PY}/data_batch_2", fixtures.dumps_py2([1, 2]), "expected a pickled dict, found list; " + FIX),
    (f"{PY}/data_batch_2", fixtures.dumps_py2({5: 1}), "unexpected key 5; " + FIX),
    (f"{PY}/data_batch_2", b"\x80\x02}q\x00(", "not a readable CIFAR pickle (EOFError: Ran out of input); " + FIX),
    (f"{PY}/data_batch_2", b"cbuiltins\nprint\n.", "refused global builtins.print: only numpy array globals are "
     "allowed; refusing to load it (not an official CIFAR file)"),
    (f"{PY}/batches.meta", fixtures.dumps_py2({b"names": [b"a"]}),
     "`label_names` must be a non-empty list of strings; " + FIX),
    (f"{PY}/batches.meta", fixtures.dumps_py2({b"label_names": []}), "`label_names` must be a non-empty list"),
])
def test_refusals_name_the_member_inside_the_archive(tmp_path, arrays, member, blob, message):
    members = fixtures.python_members(*arrays)
    members[member] = blob
    path = archive_with(tmp_path, members)
    assert refusal(path).startswith(f"{path}:{member}: ") and message in refusal(path)


def test_a_batch_without_its_labels_names_the_key(tmp_path, arrays):
    members = fixtures.python_members(*arrays)
    members[f"{PY}/test_batch"] = fixtures.dumps_py2({b"data": fixtures.rows(arrays[2])})
    path = archive_with(tmp_path, members)
    assert refusal(path) == f"{path}:{PY}/test_batch: no `labels`; {FIX}"


def cifar100(n_train=10, n_test=4, **kw):
    x, y, xt, yt = fixtures.random_arrays(n_train, n_test, num_classes=100, seed=4)
    return fixtures.cifar100_members(x, y, xt, yt, **kw), (x, y, xt, yt)


def test_cifar100_refusals_name_the_member_and_key(tmp_path):
    members, _ = cifar100()
    members[f"{C100}/meta"] = fixtures.dumps_py2({b"fine_label_names": [b"a"] * 100, b"coarse_label_names": 7})
    path = archive_with(tmp_path, members)
    assert refusal(path).startswith(f"{path}:{C100}/meta: `coarse_label_names` must be a non-empty list")
    members[f"{C100}/meta"] = fixtures.dumps_py2({b"coarse_label_names": [b"a"] * 20})
    path = archive_with(tmp_path, members, "b.tar.gz")
    assert refusal(path).startswith(f"{path}:{C100}/meta: `fine_label_names` must be a non-empty list")
    members, (x, y, xt, yt) = cifar100(coarse_test=np.full(4, 20))
    path = archive_with(tmp_path, members, "c.tar.gz")
    assert refusal(path) == (f"{path}:{C100}/test: coarse label 20 outside the 20 classes 0..19; the file is "
                             f"damaged, {FIX}")
    members, _ = cifar100()
    batch = pickle.loads(members[f"{C100}/train"], encoding="bytes")
    batch[b"coarse_labels"] = batch[b"coarse_labels"][:3]
    members[f"{C100}/train"] = fixtures.dumps_py2(batch)
    path = archive_with(tmp_path, members, "d.tar.gz")
    assert refusal(path) == f"{path}:{C100}/train: 10 images but 3 coarse_labels; the file is damaged, {FIX}"


def test_cifar100_without_coarse_names_still_has_both_splits_coarse_labels(tmp_path):
    members, (x, y, xt, yt) = cifar100()
    d = load_cifar(archive_with(tmp_path, members, "cifar-100-python.tar.gz"))
    np.testing.assert_array_equal(d.extra["y_test_coarse"], yt // 5)
    np.testing.assert_array_equal(d.extra["y_train_coarse"], y // 5)
    assert len(d.extra["coarse_class_names"]) == 20


def test_labels_outside_the_classes_say_the_range(tmp_path, arrays):
    x, y, xt, yt = arrays
    members = fixtures.python_members(x, y, xt, np.array([0, 1, 2, 10]))
    path = archive_with(tmp_path, members)
    assert refusal(path) == f"{path}:{PY}/test_batch: label 10 outside the 10 classes 0..9; the file is damaged, {FIX}"


def test_missing_members_are_counted(tmp_path, arrays):
    members = fixtures.python_members(*arrays)
    for name in ("data_batch_2", "data_batch_4", "test_batch"):
        del members[f"{PY}/{name}"]
    path = archive_with(tmp_path, members)
    assert refusal(path) == (f"{path}: missing {PY}/data_batch_2 and 2 more; the data is incomplete, {FIX}")
    del members[f"{PY}/batches.meta"]
    members[f"{PY}/test_batch"] = fixtures.python_members(*arrays)[f"{PY}/test_batch"]
    members[f"{PY}/data_batch_2"] = members[f"{PY}/data_batch_4"] = members[f"{PY}/data_batch_1"]
    path = archive_with(tmp_path, members, "b.tar.gz")
    assert refusal(path) == f"{path}: missing {PY}/batches.meta; the data is incomplete, {FIX}"
    folder = fixtures.write_archive(tmp_path / "f", *arrays, extracted=True) / PY
    (folder / "data_batch_5").unlink()
    assert refusal(folder) == f"{folder}: missing data_batch_5; the data is incomplete, {FIX}"


@pytest.mark.parametrize("empty", ["training", "test"])
def test_a_split_without_images_is_named(tmp_path, arrays, empty):
    x, y, xt, yt = arrays
    if empty == "training":
        x, y = x[:0], y[:0]
    else:
        xt, yt = xt[:0], yt[:0]
    path = archive_with(tmp_path, fixtures.python_members(x, y, xt, yt))
    assert refusal(path) == f"{path}: no {empty} images; {FIX}"


def test_binary_meta_that_is_not_text(tmp_path, arrays):
    members = fixtures.binary_members(*arrays)
    members[f"{BIN}/batches.meta.txt"] = b"\xff\xfe\x00"
    path = archive_with(tmp_path, members)
    assert refusal(path) == f"{path}:{BIN}/batches.meta.txt: expected one class name a line; {FIX}"


def test_archive_members_larger_than_a_read_step(tmp_path):
    # 400 test images in one member: 1.2 MB, more than the 1 MiB read step.
    x, y, xt, yt = fixtures.random_arrays(10, 400, seed=5)
    path = fixtures.write_tar(tmp_path / "a.tar", fixtures.python_members(x, y, xt, yt))
    d = load_cifar(path)
    np.testing.assert_array_equal(d.x_test, xt)
    np.testing.assert_array_equal(d.y_test, yt)
    assert d.extra["container"] == "archive" and d.extra["md5"] == hashlib.md5(path.read_bytes()).hexdigest()


def test_special_files_and_huge_members_are_refused_before_reading(tmp_path, arrays):
    members = fixtures.python_members(*arrays)
    path = tmp_path / "fifo.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo(f"{PY}/data_batch_1")
        info.type = tarfile.FIFOTYPE
        tar.addfile(info)
    assert refusal(path) == (f"{path}: member '{PY}/data_batch_1' is a special file, not a regular file; refusing "
                             f"the archive (links are never followed), {FIX}")
    huge = tarfile.TarInfo(f"{PY}/data_batch_1")
    huge.size = 600 * 2**20
    (tmp_path / "huge.tar").write_bytes(huge.tobuf())  # the header alone: its data is never read
    assert refusal(tmp_path / "huge.tar") == (f"{tmp_path / 'huge.tar'}: member '{PY}/data_batch_1' is "
                                              f"{600 * 2**20} bytes, far larger than any CIFAR file; {FIX}")
    del members


@pytest.mark.parametrize("name", ["\\evil", "C:evil", "a/../../x"])
def test_member_names_that_leave_the_archive(tmp_path, arrays, name):
    members = fixtures.python_members(*arrays)
    members[name] = b"x"
    path = archive_with(tmp_path, members)
    assert refusal(path) == (f"{path}: member {name!r} points outside the archive; refusing the archive (it is "
                             f"not an official CIFAR archive), {FIX}")


def test_dot_parts_of_member_names_are_dropped(tmp_path, arrays):
    members = {f"./{name}": blob for name, blob in fixtures.python_members(*arrays).items()}
    assert load_cifar(archive_with(tmp_path, members)).num_classes == 10


def test_sha256_and_official_names(tmp_path, arrays, monkeypatch):
    path = fixtures.write_archive(tmp_path / "a.tar.gz", *arrays)
    sha, md5 = hashlib.sha256(path.read_bytes()).hexdigest(), hashlib.md5(path.read_bytes()).hexdigest()
    assert load_cifar(path, sha256=sha.upper()).sha256 == sha  # either case
    wrong = "AB" * 32
    assert refusal_with(path, sha256=wrong) == (f"{path}: sha256 {sha} does not match the expected {wrong.lower()}; "
                                                "pass the right archive or the right hash")
    assert not load_cifar(path).official
    # An archive known by its md5 alone (no published sha256).
    monkeypatch.setitem(cifarfiles.ARCHIVES, "cifar10", dataclasses.replace(
        cifarfiles.ARCHIVES["cifar10"], sha256=None, md5=md5, filename="known.tar.gz"))
    d = load_cifar(path)
    assert d.official and d.extra["official_name"] == "known.tar.gz"


def refusal_with(path, **kw) -> str:
    with pytest.raises(DataError) as err:
        load_cifar(path, **kw)
    return str(err.value)


def test_folder_data_says_so(tmp_path, arrays):
    folder = fixtures.write_archive(tmp_path / "f", *arrays, extracted=True)
    d = load_cifar(folder)
    assert d.extra["container"] == "folder" and d.extra["md5"] is None


# ------------------------------------------------------------ the keras cache
@pytest.mark.parametrize("relative", ["cifar-100-python.tar.gz", "cifar-100-python-target_archive",
                                      "cifar-100-python-target/cifar-100-python", "cifar-100-python"])
def test_cifar100_in_each_keras_cache_layout(tmp_path, monkeypatch, relative):
    members, (x, y, xt, yt) = cifar100()
    cache = tmp_path / "home" / "datasets"
    target = cache / relative
    if relative.endswith(("gz", "_archive")):
        target.parent.mkdir(parents=True)
        fixtures.write_tar(target, members)
    else:
        fixtures.write_folder(target.parent if relative.endswith(C100) else target, members)
        if not relative.endswith(C100):
            target = target / C100
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "home"))
    assert cifarfiles.find_cached("cifar100") == target
    assert cifarfiles.find_cached("cifar10") is None
    # A folder above the data finds it too, with or without naming the dataset.
    d = load_cifar(tmp_path / "home")
    assert d.name == "cifar100" and d.source == str(target)
    np.testing.assert_array_equal(d.x_test, xt)


def test_binary_archive_in_the_keras_cache(tmp_path, monkeypatch, arrays):
    cache = tmp_path / "datasets"
    cache.mkdir()
    fixtures.write_tar(cache / "cifar-10-binary.tar.gz", fixtures.binary_members(*arrays))
    assert cifarfiles.find_cached("cifar10", tmp_path) == cache / "cifar-10-binary.tar.gz"


def test_keras_cache_dir_follows_its_argument_keras_home_and_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "me"))
    monkeypatch.delenv("KERAS_HOME", raising=False)
    assert cifarfiles.keras_cache_dir() == tmp_path / "me" / ".keras" / "datasets"
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "k"))
    assert cifarfiles.keras_cache_dir() == tmp_path / "k" / "datasets"
    assert cifarfiles.keras_cache_dir(tmp_path / "c") == tmp_path / "c" / "datasets"
    assert cifarfiles.keras_cache_dir("~/x") == tmp_path / "me" / "x" / "datasets"


# ------------------------------------------------------------ safepickle's guards
def test_reader_reads_like_a_file():
    r = safepickle._Reader(bytearray(b"ab\ncd\nef"))
    assert r.readline() == b"ab\n" and r.read(1) == b"c" and r.read(0) == b"" and r.readline() == b"d\n"
    buf = bytearray(5)
    assert r.readinto(buf) == 2 and bytes(buf[:2]) == b"ef" and r.read() == b"" and r.readline() == b""
    r = safepickle._Reader(b"xyz")
    assert r.read(None) == b"xyz"
    r = safepickle._Reader(b"xyz")
    assert r.read(-1) == b"xyz" and r.readinto(bytearray(2)) == 0
    r = safepickle._Reader(b"last line")
    assert r.readline() == b"last line" and r.pos == 9
    r = safepickle._Reader(b"0123456789")
    assert r.read(3) == b"012"
    buf = bytearray(4)
    assert r.readinto(buf) == 4 and bytes(buf) == b"3456" and r.read(100) == b"789"


def test_the_numpy_guards_accept_only_what_cifar_needs():
    empty = safepickle._reconstruct(safepickle._NDARRAY, (0,), b"b")
    assert empty.shape == (0,) and empty.dtype == np.uint8
    assert safepickle._reconstruct(safepickle._NDARRAY, 0, "b").shape == (0,)
    assert repr(safepickle._NDARRAY) == "numpy.ndarray"
    for args, message in [
        ((np.ndarray, (0,), b"b"), "_reconstruct may only build numpy.ndarray, got type"),
        ((safepickle._NDARRAY, (1,), b"b"), "_reconstruct expects the empty shape (0,), got (1,)"),
        ((safepickle._NDARRAY, 1, b"b"), "_reconstruct expects the empty shape (0,), got 1"),
        ((safepickle._NDARRAY, (0,), "B"), "_reconstruct expects the typecode 'b', got 'B'"),
    ]:
        with pytest.raises(safepickle.UnsafePickleError) as err:
            safepickle._reconstruct(*args)
        assert str(err.value) == message
    assert safepickle._dtype(b"u1") == np.uint8 and safepickle._dtype("<f4") == np.float32
    for spec, message in [
        (5, "dtype expects a short type code, got 5"),
        ("int32", "dtype expects a short type code, got 'int32'"),
        ("zz", "unknown dtype 'zz'"),
        ("<c16", "dtype '<c16' is not a plain numeric type"),
        (b"O", "dtype 'O' is not a plain numeric type"),
        (b"\xff\xfe", "unknown dtype"),
    ]:
        with pytest.raises(safepickle.UnsafePickleError) as err:
            safepickle._dtype(spec)
        assert str(err.value).startswith(message), err.value


def test_a_persistent_id_is_refused():
    blob = b"\x80\x02P0\n."  # PROTO 2, PERSID "0", STOP
    with pytest.raises(safepickle.UnsafePickleError, match="^refused persistent id: not used by CIFAR batches$"):
        safepickle.loads(blob)
    with pytest.raises(safepickle.UnsafePickleError, match=r"^refused global os\.system: only numpy array"):
        safepickle.loads(b"cos\nsystem\n.")
    assert isinstance(safepickle.loads(io.BytesIO(pickle.dumps([1], protocol=2)).getvalue()), list)


# ------------------------------------------------------------ more refusals and layouts
def test_two_missing_members_and_coarse_training_labels(tmp_path, arrays):
    members = fixtures.python_members(*arrays)
    del members[f"{PY}/data_batch_1"], members[f"{PY}/test_batch"]
    path = archive_with(tmp_path, members)
    assert refusal(path) == f"{path}: missing {PY}/data_batch_1 and 1 more; the data is incomplete, {FIX}"
    members, _ = cifar100(coarse_train=np.full(10, 25))
    path = archive_with(tmp_path, members, "c.tar.gz")
    assert refusal(path).startswith(f"{path}:{C100}/train: coarse label 25 outside the 20 classes 0..19")


def test_cifar100_meta_without_coarse_names_and_with_str_or_broken_names(tmp_path):
    members, (x, y, xt, yt) = cifar100()
    fine = [f"f{i}" for i in range(100)]
    members[f"{C100}/meta"] = pickle.dumps({"fine_label_names": fine}, protocol=2)  # str names, no coarse ones
    d = load_cifar(archive_with(tmp_path, members))
    assert d.class_names == fine and d.extra["coarse_class_names"] is None
    np.testing.assert_array_equal(d.extra["y_train_coarse"], y // 5)
    members[f"{C100}/meta"] = fixtures.dumps_py2({b"fine_label_names": [b"caf\xe9"] * 100})  # not UTF-8
    assert load_cifar(archive_with(tmp_path, members, "b.tar.gz")).class_names[0] == "caf\ufffd"
    members[f"{C100}/meta"] = b"not a pickle"
    path = archive_with(tmp_path, members, "c.tar.gz")
    assert refusal(path).startswith(f"{path}:{C100}/meta: not a readable CIFAR pickle")


def test_an_archive_of_two_datasets_and_a_member_of_exactly_the_largest_size(tmp_path, arrays):
    members = fixtures.python_members(*arrays) | cifar100()[0]
    path = archive_with(tmp_path, members)
    first, second = sorted({name.split("/")[0] for name in members})
    assert refusal(path).startswith(f"{path}: holds both ")
    assert f"{first}/" in refusal(path) and f"{second}/" in refusal(path) and "pass one dataset's archive" in refusal(path)
    edge = tarfile.TarInfo(f"{PY}/data_batch_1")
    edge.size = cifarfiles._MAX_MEMBER  # the largest allowed: read, and found truncated
    (tmp_path / "edge.tar").write_bytes(edge.tobuf())
    assert refusal(tmp_path / "edge.tar").startswith(f"{tmp_path / 'edge.tar'}: truncated or damaged archive")


def test_a_folder_with_some_batches_or_a_fifo(tmp_path, arrays):
    import os

    folder = fixtures.write_archive(tmp_path / "f", *arrays, extracted=True) / PY
    (folder / "test_batch").unlink()
    assert refusal(folder) == f"{folder}: missing test_batch; the data is incomplete, {FIX}"
    (folder / "test_batch").write_bytes(fixtures.python_members(*arrays)[f"{PY}/test_batch"])
    (folder / "data_batch_3").unlink()
    os.mkfifo(folder / "data_batch_3")  # reading it would wait forever
    assert refusal(folder) == (f"{folder / 'data_batch_3'}: not a regular file (links are never followed); "
                               "copy the real file there")


def test_read_files_checks_its_arguments_and_picks_the_named_dataset(tmp_path, arrays):
    both = tmp_path / "both"
    fixtures.write_archive(both / "cifar-10-python.tar.gz", *arrays)
    members, (x, y, xt, yt) = cifar100()
    fixtures.write_tar(both / "cifar-100-python.tar.gz", members)
    assert cifarfiles.read_files(both)["name"] == "cifar10"
    d = cifarfiles.read_files(both, dataset="cifar100")
    assert d["name"] == "cifar100" and d["source"] == str(both / "cifar-100-python.tar.gz")
    with pytest.raises(ValueError, match=r"^Expected `dataset` to be 'cifar10' or 'cifar100'\. Received: "
                                         r"dataset='svhn'$"):
        cifarfiles.read_files(both, dataset="svhn")
    folder = fixtures.write_archive(tmp_path / "f", *arrays, extracted=True) / PY
    with pytest.raises(DataError) as err:
        cifarfiles.read_files(folder, sha256="ab" * 32)
    assert str(err.value) == f"{folder}: is a folder, so its sha256 cannot be checked; pass the archive instead"


def test_an_empty_folder_named_like_the_data_is_not_the_data(tmp_path):
    (tmp_path / "datasets" / "cifar-10-batches-py").mkdir(parents=True)
    assert cifarfiles.find_cached("cifar10", tmp_path) is None


def test_a_line_that_is_only_a_newline():
    r = safepickle._Reader(b"\nab")
    assert r.readline() == b"\n" and r.readline() == b"ab"
