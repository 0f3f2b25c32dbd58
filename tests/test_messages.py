"""What a user reads when a file is unusable: one line that names the file and
the fix (a truncated model, a picture over the size limit), and a model file
built to exhaust memory refused from its zip directory before any member is read."""

import struct
import tracemalloc
import warnings
import zipfile
import zlib

import pytest
from PIL import Image

from vggcifar import inference
from vggcifar.images import MAX_PIXELS, ImageError, read_image
from vggcifar.inference import MAX_CONFIG_BYTES, load_model


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    import keras

    inputs = keras.Input((32, 32, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(x))
    path = tmp_path_factory.mktemp("m") / "whole.keras"
    keras.Model(inputs, outputs).save(path)
    return path


def refusal(path, read=None, error=ValueError) -> str:
    """What ``read`` (load_model by default) raises for ``path``: one line that names the file."""
    with pytest.raises(error) as caught:
        (read or load_model)(path)
    text = str(caught.value)
    assert len(text.splitlines()) == 1 and str(path) in text, text
    return text


def refusal_and_peak_memory(path) -> tuple[str, int]:
    """``refusal(path)`` and the peak of Python's allocations while it ran."""
    tracemalloc.start()
    try:
        return refusal(path), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# --------------------------------------------------------------------------- #
# model files
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("keep", [0.5, 0.99, 0.0001])
def test_truncated_model_is_not_a_complete_zip_not_a_missing_file(tmp_path, model_file, keep):
    data = model_file.read_bytes()
    cut = tmp_path / "trunc.keras"
    cut.write_bytes(data[: max(1, int(len(data) * keep))])
    text = refusal(cut)
    assert "is not a complete .keras (zip) file" in text and "copy the whole file again" in text, text
    assert "not found" not in text.lower()


def test_damaged_member_is_named(tmp_path, model_file):
    # The directory is intact, the weights' bytes are not: their checksum fails.
    data = bytearray(model_file.read_bytes())
    start = data.find(b"model.weights.h5") + 30 + len("model.weights.h5")  # past the local header
    data[start + 2048:start + 2048 + 512] = bytes(512)
    (tmp_path / "damaged.keras").write_bytes(bytes(data))
    text = refusal(tmp_path / "damaged.keras")
    assert "is not a complete .keras (zip) file (its model.weights.h5 member is damaged" in text, text


def set_declared_size(path, member: str, size: int) -> None:
    """Make ``path``'s zip directory (and local header) claim ``size`` bytes for ``member``."""
    data = bytearray(path.read_bytes())
    name = member.encode()
    for signature, offset in ((b"PK\x01\x02", 24), (b"PK\x03\x04", 22)):
        at = 0
        while (at := data.find(signature, at)) >= 0:
            name_at = at + (46 if signature == b"PK\x01\x02" else 30)
            if data[name_at:name_at + len(name)] == name:
                data[at + offset:at + offset + 4] = struct.pack("<I", size)
            at += 4
    path.write_bytes(bytes(data))


def keras_zip(path, config: bytes, *, compression=zipfile.ZIP_DEFLATED, weights: bytes = b"") -> None:
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        z.writestr("metadata.json", b'{"keras_version": "3.0.0"}')
        z.writestr("config.json", config)
        z.writestr("model.weights.h5", weights)


@pytest.fixture
def nothing_is_read(monkeypatch):
    """Fail if any zip member is opened or Keras is asked to load the file."""
    import keras

    real = zipfile.ZipFile.open

    def opened(self, name, mode="r", *a, **k):
        if mode == "r":
            raise AssertionError(f"member {name} was opened")
        return real(self, name, mode, *a, **k)

    def loaded(*a, **k):
        raise AssertionError("keras.saving.load_model was called")

    monkeypatch.setattr(zipfile.ZipFile, "open", opened)
    monkeypatch.setattr(keras.saving, "load_model", loaded)


def test_config_that_inflates_to_hundreds_of_mb_is_refused_unread(tmp_path, nothing_is_read):
    # 2x the cap of real bytes (spaces deflate about 1000:1), then a directory
    # that claims 300 MB.
    path = tmp_path / "bomb.keras"
    keras_zip(path, b" " * (2 * MAX_CONFIG_BYTES))
    assert path.stat().st_size < MAX_CONFIG_BYTES // 100
    text, peak = refusal_and_peak_memory(path)
    assert f"its config.json member would inflate to {2 * MAX_CONFIG_BYTES:,} bytes" in text, text
    assert "16,777,216" in text and "refused before reading it" in text
    assert peak < 1 << 20, peak  # the 32 MiB were never inflated
    lie = tmp_path / "lie.keras"
    keras_zip(lie, b"{}")
    set_declared_size(lie, "config.json", 300 * 10**6)
    assert "would inflate to 300,000,000 bytes" in refusal(lie)


def test_weights_member_that_inflates_far_past_its_stored_size_is_refused(tmp_path, nothing_is_read):
    path = tmp_path / "weights-bomb.keras"
    keras_zip(path, b"{}", weights=b"\0" * 1000)
    set_declared_size(path, "model.weights.h5", 3 * 10**9)
    text = refusal(path)
    assert "model.weights.h5 member would inflate from" in text and "3,000,000,000 bytes" in text, text


def test_a_model_saved_by_keras_passes_the_check(model_file):
    inference.check_keras_archive(model_file)  # stored members, a small config
    assert load_model(model_file).output_shape == (None, 10)


def test_config_that_lies_small_is_cut_at_its_declared_size(tmp_path):
    # The directory says 2 bytes, the data inflates to 64 MiB: zipfile stops
    # at the declared size and the checksum fails; the memory stays small.
    path = tmp_path / "small-lie.keras"
    keras_zip(path, b" " * (4 * MAX_CONFIG_BYTES))
    set_declared_size(path, "config.json", 2)
    text, peak = refusal_and_peak_memory(path)
    assert "is not a complete .keras (zip) file (its config.json member is damaged" in text, text
    assert peak < 8 << 20, peak


# --------------------------------------------------------------------------- #
# pictures over the size limit
# --------------------------------------------------------------------------- #
def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose headers are complete (Pillow opens it) and claim width x height."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 10))
            + _chunk(b"IEND", b""))


def jpeg_claiming(path, width: int, height: int) -> bytes:
    """A real JPEG whose frame header (SOF0) is rewritten to claim width x height."""
    Image.new("RGB", (8, 8), (200, 30, 30)).save(path, format="JPEG")
    data = bytearray(path.read_bytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def picture_refusal(path) -> str:
    return refusal(path, read_image, ImageError)


@pytest.mark.parametrize("fmt", ["png", "jpg"])
@pytest.mark.parametrize("side", [20000, 10000])  # over Pillow's error limit; between its warning and error
def test_picture_over_the_limit_says_its_size_and_our_limit_only(tmp_path, fmt, side):
    path = tmp_path / f"big.{fmt}"
    path.write_bytes(png_claiming(side, side) if fmt == "png" else jpeg_claiming(path, side, side))
    with warnings.catch_warnings():  # Pillow's own guard does fire
        warnings.simplefilter("error")
        with pytest.raises((Image.DecompressionBombError, Image.DecompressionBombWarning)):
            Image.open(path)
    text = picture_refusal(path).replace(str(path), "PATH")
    assert f"{side}x{side} = {side * side:,} pixels" in text and f"{MAX_PIXELS:,}" in text, text
    assert str(2 * Image.MAX_IMAGE_PIXELS) not in text and f"{2 * Image.MAX_IMAGE_PIXELS:,}" not in text
    assert "DOS attack" not in text and text.count("limit") == 1, text
