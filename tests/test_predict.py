"""vggcifar predict: picture files read safely, prepared like evaluate's
input, classified by a model loaded in safe mode; one-line errors per file."""

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vggcifar.cli import main
from vggcifar.data import CIFAR10_CLASSES, CIFAR100_CLASSES, class_names_for, load_synthetic
from vggcifar.images import BACKGROUND, ImageError, read_image, to_model_input

SRC = Path(__file__).parents[1] / "src"


# ------------------------------------------------------------------ helpers
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _ihdr(width, height, depth=8, color_type=2) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0))


def _png(width, height, depth, color_type, rows: list[bytes]) -> bytes:
    """A PNG written by hand (filter 0 on every row), for the kinds Pillow does not write."""
    raw = b"".join(b"\x00" + row for row in rows)
    return _ihdr(width, height, depth, color_type) + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")


def _noise(h, w, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _message(path) -> str:
    with pytest.raises(ImageError) as exc:
        read_image(path)
    text = str(exc.value)
    assert len(text.splitlines()) == 1 and text.startswith(str(path))
    return text


# ------------------------------------------------------------------ reading pictures
def test_rgb_png_is_read_exactly_at_any_size(tmp_path):
    x = _noise(23, 41)
    Image.fromarray(x).save(tmp_path / "a.png")
    got = read_image(tmp_path / "a.png")
    assert got.dtype == np.uint8 and got.shape == (23, 41, 3)
    np.testing.assert_array_equal(got, x)


def test_exif_orientation_is_applied(tmp_path):
    # Orientation 6: the stored rows are the picture's right side; a viewer
    # turns it 90 degrees clockwise.
    x = np.zeros((24, 40, 3), np.uint8)
    x[:, :20] = (250, 10, 10)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(x).save(tmp_path / "rotated.jpg", quality=95, exif=exif.tobytes())
    stored = np.asarray(Image.open(tmp_path / "rotated.jpg").convert("RGB"))
    got = read_image(tmp_path / "rotated.jpg")
    assert stored.shape == (24, 40, 3) and got.shape == (40, 24, 3)
    np.testing.assert_array_equal(got, np.rot90(stored, k=-1))
    # The red left half of the stored picture is now the top half.
    assert got[:20, :, 0].mean() > 200 and got[20:, :, 0].mean() < 50


def test_rgba_png_is_flattened_onto_the_background(tmp_path):
    rgba = np.array([[[255, 0, 0, 255], [0, 0, 255, 0], [0, 200, 0, 128]]], np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    got = read_image(tmp_path / "rgba.png").astype(int)
    a = rgba[..., 3:4] / 255.0
    expected = rgba[..., :3] * a + np.array(BACKGROUND) * (1 - a)
    np.testing.assert_allclose(got, expected, atol=1)
    assert got[0, 0].tolist() == [255, 0, 0] and got[0, 1].tolist() == list(BACKGROUND)


def test_la_png_is_flattened_and_made_rgb(tmp_path):
    la = np.array([[[40, 255], [40, 0]]], np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    got = read_image(tmp_path / "la.png")
    assert got.tolist() == [[[40, 40, 40], list(BACKGROUND)]]


def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path):
    values = [0, 257, 32767, 32768, 65535]
    Image.fromarray(np.array([values], np.uint16)).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")  # really 16-bit
    got = read_image(tmp_path / "grey16.png")
    # v * 255 / 65535 is v / 257, rounded.
    assert got[0, :, 0].tolist() == [0, 1, 127, 128, 255]
    assert (got[..., 0] == got[..., 1]).all() and (got[..., 0] == got[..., 2]).all()


def test_16_bit_colour_png_keeps_its_range(tmp_path):
    values = [0, 257, 32768, 65535]
    row = b"".join(struct.pack(">HHH", v, 0, 65535 - v) for v in values)
    (tmp_path / "rgb16.png").write_bytes(_png(4, 1, 16, 2, [row]))
    got = read_image(tmp_path / "rgb16.png").astype(int)
    np.testing.assert_allclose(got[0, :, 0], np.array(values) / 257, atol=1)
    assert got[0, -1, 0] == 255 and got[0, 0, 2] == 255 and (got[0, :, 1] == 0).all()


def test_palette_png_with_and_without_transparency(tmp_path):
    p = Image.new("P", (2, 1))
    p.putpalette([10, 20, 30, 0, 255, 0])
    p.putpixel((1, 0), 1)
    p.save(tmp_path / "opaque.png")
    p.save(tmp_path / "transparent.png", transparency=0)
    assert Image.open(tmp_path / "transparent.png").mode == "P"
    assert read_image(tmp_path / "opaque.png").tolist() == [[[10, 20, 30], [0, 255, 0]]]
    assert read_image(tmp_path / "transparent.png").tolist() == [[list(BACKGROUND), [0, 255, 0]]]


def test_greyscale_jpeg_becomes_rgb(tmp_path):
    Image.new("L", (16, 8), 100).save(tmp_path / "grey.jpg", quality=95)
    got = read_image(tmp_path / "grey.jpg")
    assert got.shape == (8, 16, 3)
    assert (got[..., 0] == got[..., 1]).all() and (got[..., 1] == got[..., 2]).all()
    assert abs(int(got[0, 0, 0]) - 100) <= 1


def test_mpo_counts_as_jpeg_and_gives_its_first_picture(tmp_path):
    first, second = Image.new("RGB", (8, 8), (250, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 250))
    first.save(tmp_path / "camera.jpg", format="MPO", save_all=True, append_images=[second])
    got = read_image(tmp_path / "camera.jpg").astype(int)
    assert got[..., 0].min() > 240 and got[..., 2].max() < 10


def test_format_is_decided_by_content_not_extension(tmp_path):
    x = _noise(5, 6)
    Image.fromarray(x).save(tmp_path / "picture.txt", format="PNG")
    np.testing.assert_array_equal(read_image(tmp_path / "picture.txt"), x)
    Image.fromarray(x).save(tmp_path / "disguised.png", format="GIF")
    assert "is a GIF image; only PNG and JPEG" in _message(tmp_path / "disguised.png")


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF", "WEBP"])
def test_other_formats_are_refused_by_name(tmp_path, fmt):
    Image.init()  # Image.SAVE lists only the plugins loaded so far: all of them, whatever ran before
    if fmt == "WEBP" and fmt not in Image.SAVE:  # an optional codec; the other three are always built in
        pytest.skip(f"this Pillow cannot write {fmt}")
    Image.fromarray(_noise(4, 4)).save(tmp_path / "p.img", format=fmt)
    assert f"is a {fmt} image; only PNG and JPEG are accepted" in _message(tmp_path / "p.img")


def test_header_claiming_a_huge_picture_is_refused_before_decoding(tmp_path):
    (tmp_path / "bomb.png").write_bytes(_ihdr(20000, 20000))  # signature + IHDR, no pixel data
    text = _message(tmp_path / "bomb.png")
    assert "20000x20000" in text and "67,108,864" in text and "before decoding" in text


def _jpeg_header(width, height) -> bytes:
    """A baseline JPEG's markers (SOI, SOF0 with the size, SOS), no pixel data."""
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\x01\x11\x00\x02\x11\x00\x03\x11\x00"
    sos = b"\xff\xda" + struct.pack(">HB", 12, 3) + b"\x01\x00\x02\x00\x03\x00\x00\x3f\x00"
    return b"\xff\xd8" + sof + sos + b"\x00" * 16 + b"\xff\xd9"


@pytest.mark.parametrize("width,height,refused", [
    (20000, 20000, True),  # past Pillow's own guard too
    (9000, 9000, True),  # under Pillow's guard, over ours
    (8193, 8192, True),  # one column over
    (8192, 8192, False),  # exactly the limit: decoding starts (and finds no pixel data)
])
def test_jpeg_header_size_is_checked_at_the_limit(tmp_path, width, height, refused):
    (tmp_path / "p.jpg").write_bytes(_jpeg_header(width, height))
    text = _message(tmp_path / "p.jpg")
    assert ("refused before decoding" in text) is refused, text
    if refused:
        assert "67,108,864" in text
    else:
        assert "JPEG file is truncated or corrupt" in text
    (tmp_path / "p.png").write_bytes(_ihdr(width, height))  # the same limit for a PNG's header
    assert ("refused before decoding" in _message(tmp_path / "p.png")) is refused


def test_size_pillow_reads_is_checked_before_any_pixel_is_decoded(tmp_path, monkeypatch):
    # A PNG Pillow opens (its headers are complete) that claims 9000x9000:
    # under Pillow's own limit, over ours.
    data = _ihdr(9000, 9000) + _chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + _chunk(b"IEND", b"")
    (tmp_path / "big.png").write_bytes(data)
    assert Image.open(tmp_path / "big.png").size == (9000, 9000)
    assert 9000 * 9000 < Image.MAX_IMAGE_PIXELS

    def no_decoding(self):
        raise AssertionError("decoded")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    from PIL import ImageFile
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    text = _message(tmp_path / "big.png")
    assert "9000x9000 = 81,000,000 pixels" in text


@pytest.mark.parametrize("side, pillow_says", [(12, "warning"), (20, "error")])
def test_pillows_own_bomb_guard_is_a_refusal_too(tmp_path, monkeypatch, side, pillow_says):
    # Pillow warns above MAX_IMAGE_PIXELS and raises above twice that.
    Image.fromarray(_noise(side, side)).save(tmp_path / "p.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    text = _message(tmp_path / "p.png")
    assert "refused before decoding" in text and f"{side * side} pixels" in text


@pytest.mark.parametrize("fmt, name", [("PNG", "t.png"), ("JPEG", "t.jpg")])
def test_truncated_files_are_refused(tmp_path, fmt, name):
    Image.fromarray(_noise(64, 64)).save(tmp_path / "whole", format=fmt)
    data = (tmp_path / "whole").read_bytes()
    (tmp_path / name).write_bytes(data[: len(data) // 2])
    assert f"{fmt} file is truncated or corrupt" in _message(tmp_path / name)


def test_png_cut_inside_its_headers_is_refused(tmp_path):
    (tmp_path / "h.png").write_bytes(_ihdr(16, 16)[:20])
    assert "PNG file is truncated or corrupt" in _message(tmp_path / "h.png")


def test_empty_missing_directory_and_text(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    assert "is empty (0 bytes)" in _message(tmp_path / "empty.png")
    assert "no such file" in _message(tmp_path / "missing.png")
    (tmp_path / "folder.png").mkdir()
    assert "is a directory" in _message(tmp_path / "folder.png")
    (tmp_path / "notes.jpg").write_text("not a picture\n")
    assert "is not a PNG or JPEG image" in _message(tmp_path / "notes.jpg")


# ------------------------------------------------------------------ the one resize
def test_resize_is_the_identity_for_32x32_arrays():
    x = load_synthetic(1, 20, seed=3).x_test
    assert to_model_input(x) is x
    np.testing.assert_array_equal(to_model_input(list(x)), x)


@pytest.mark.parametrize("factor", [2, 3])
def test_resize_is_area_averaging(factor):
    x = _noise(32 * factor, 32 * factor, seed=factor)
    got = to_model_input([x]).astype(float)[0]
    block_mean = x.reshape(32, factor, 32, factor, 3).astype(float).mean(axis=(1, 3))
    # Rounded once: within half a level of the exact block mean.
    np.testing.assert_allclose(got, block_mean, atol=0.5 + 1e-3)


def test_resize_weights_partial_pixels_by_overlap():
    # 3 columns to 2: each output covers 1.5 source columns.
    x = np.zeros((32, 48, 3), np.uint8)
    x[:, 0::3], x[:, 1::3], x[:, 2::3] = 0, 90, 180
    got = to_model_input([x])[0, 0, :2, 0].tolist()
    assert got == [round((0 + 0.5 * 90) / 1.5), round((0.5 * 90 + 180) / 1.5)]  # 30, 150


def test_resize_takes_mixed_sizes_and_refuses_other_arrays():
    out = to_model_input([_noise(7, 50), _noise(32, 32), _noise(300, 200)])
    assert out.shape == (3, 32, 32, 3) and out.dtype == np.uint8
    with pytest.raises(ValueError, match="uint8"):
        to_model_input([np.zeros((40, 40, 3), np.float32)])
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        to_model_input(np.zeros((2, 32, 32), np.uint8))


# ------------------------------------------------------------------ class names
def test_class_names_follow_the_output_count():
    assert class_names_for(10) == CIFAR10_CLASSES
    assert class_names_for(100) == CIFAR100_CLASSES
    assert class_names_for(3) == ["class 0", "class 1", "class 2"]
    # The official meta file lists the fine labels alphabetically.
    assert len(set(CIFAR100_CLASSES)) == 100 and CIFAR100_CLASSES == sorted(CIFAR100_CLASSES)
    assert CIFAR100_CLASSES[0] == "apple" and CIFAR100_CLASSES[99] == "worm"


# ------------------------------------------------------------------ models
def _tiny(num_classes=10, rescale=1 / 255, seed=0):
    from vggcifar.model import build_vgg

    return build_vgg("vgg11", num_classes=num_classes, width=1 / 16, dense_units=8, rescale=rescale,
                     input_layout="channels_last", seed=seed)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.keras"
    _tiny().save(path)
    return path


@pytest.fixture()
def pictures(tmp_path):
    """Two good pictures (a PNG and a JPEG) and two bad files."""
    Image.fromarray(_noise(32, 32, 1)).save(tmp_path / "good.png")
    Image.fromarray(_noise(60, 90, 2)).save(tmp_path / "good.jpg")
    Image.fromarray(_noise(8, 8)).save(tmp_path / "bad.gif")
    return [tmp_path / "good.png", tmp_path / "bad.gif", tmp_path / "good.jpg", tmp_path / "missing.png"]


def test_png_of_a_test_image_is_predicted_as_in_memory_evaluation(tmp_path, model_path):
    from vggcifar.inference import load_model
    from vggcifar.prediction import predict_files
    from vggcifar.inference import predict_probs

    x = load_synthetic(1, 6, seed=7).x_test
    paths = []
    for i, image in enumerate(x):
        paths.append(tmp_path / f"test{i}.png")
        Image.fromarray(image).save(paths[-1])
    expected = predict_probs(load_model(model_path), x)
    results = predict_files(model_path, paths, top=10, precision="float32")
    assert [r["path"] for r in results] == [str(p) for p in paths]
    for r, probs in zip(results, expected):
        got = np.zeros(10)
        for t in r["top_k"]:
            got[t["class"]] = t["probability"]
            assert t["label"] == CIFAR10_CLASSES[t["class"]]
        assert r["top_k"][0]["class"] == int(np.argmax(probs))
        np.testing.assert_allclose(got, probs, rtol=1e-5, atol=1e-7)


def test_evaluate_and_predict_share_the_resize(model_path):
    from vggcifar.inference import load_model, model_probs
    from vggcifar.inference import predict_probs

    model = load_model(model_path)
    # Pictures at twice the size, each pixel a 2x2 block: averaging areas
    # brings back the 32x32 originals exactly, whatever the code does inside.
    originals = np.stack([_noise(32, 32, 5), _noise(32, 32, 6)])
    big = originals.repeat(2, axis=1).repeat(2, axis=2)
    np.testing.assert_array_equal(to_model_input(big), originals)
    np.testing.assert_allclose(model_probs(model, big), predict_probs(model, originals), rtol=1e-6)
    small = load_synthetic(1, 4).x_test
    np.testing.assert_allclose(model_probs(model, small), predict_probs(model, small), rtol=1e-6)


def test_model_with_a_lambda_layer_is_refused(tmp_path, pictures):
    import keras

    from vggcifar.prediction import predict_files

    marker = str(tmp_path / "ran")  # written whenever the layer's code runs
    inputs = keras.Input((32, 32, 3), dtype="uint8")
    x = keras.layers.Lambda(lambda t: (open(marker, "w").close(), t)[1] / 255.0)(inputs)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    keras.Model(inputs, outputs).save(tmp_path / "lambda.keras")
    Path(marker).unlink()
    with pytest.raises(ValueError, match="lambda.keras: cannot be loaded safely") as refused:
        predict_files(tmp_path / "lambda.keras", pictures[:1])
    assert not Path(marker).exists()
    assert "safe_mode" not in str(refused.value)  # no advice to turn the protection off


def test_h5_and_non_keras_files_are_refused(tmp_path, model_path, pictures, capsys):
    (tmp_path / "model.h5").write_bytes(model_path.read_bytes())
    assert main(["predict", str(tmp_path / "model.h5"), str(pictures[0])]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "only .keras model files are accepted" in err
    (tmp_path / "text.keras").write_text("not a model\n")
    assert main(["predict", str(tmp_path / "text.keras"), str(pictures[0])]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "text.keras: is not a complete .keras (zip) file" in err


def test_model_without_its_pixel_scaling_is_refused(tmp_path, pictures):
    from vggcifar.prediction import predict_files

    _tiny(rescale=None).save(tmp_path / "float.keras")
    with pytest.raises(ValueError, match="not raw uint8 pixels"):
        predict_files(tmp_path / "float.keras", pictures[:1])


def test_safe_mode_is_never_turned_off_in_src():
    offenders = [str(p) for p in SRC.rglob("*.py") if "safe_mode=False" in p.read_text(encoding="utf-8")]
    assert offenders == []
    assert "safe_mode=True" in (SRC / "vggcifar" / "inference.py").read_text()


# ------------------------------------------------------------------ the command
def test_cli_answers_good_pictures_and_reports_bad_ones(model_path, pictures, capsys):
    assert main(["predict", str(model_path), *map(str, pictures)]) == 2
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == str(pictures[0]) and lines[4] == str(pictures[2]) and len(lines) == 8
    for line in lines[1:4] + lines[5:8]:
        label, percent = line.split()
        assert label in CIFAR10_CLASSES and percent.endswith("%")
    errors = err.strip().splitlines()
    assert len(errors) == 2 and all(e.startswith("vggcifar: error: ") for e in errors)
    assert str(pictures[1]) in errors[0] and "GIF" in errors[0]
    assert str(pictures[3]) in errors[1] and "no such file" in errors[1]
    assert "Traceback" not in err


def test_cli_json_and_top_k(model_path, pictures, capsys):
    assert main(["predict", str(model_path), *map(str, pictures), "--json", "--top-k", "4"]) == 2
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert [r["path"] for r in doc] == [str(p) for p in pictures]
    assert "error" in doc[1] and "error" in doc[3] and "top_k" not in doc[1]
    # Each answer is its own picture's, as if it were asked about alone.
    from vggcifar.prediction import predict_files

    for r, path in ((doc[0], pictures[0]), (doc[2], pictures[2])):
        alone = predict_files(model_path, [path], top=4)[0]
        assert [t["class"] for t in r["top_k"]] == [t["class"] for t in alone["top_k"]]
        np.testing.assert_allclose([t["probability"] for t in r["top_k"]],
                                   [t["probability"] for t in alone["top_k"]], rtol=1e-5)
    assert doc[0]["top_k"] != doc[2]["top_k"]
    for r in (doc[0], doc[2]):
        probs = [t["probability"] for t in r["top_k"]]
        assert len(probs) == 4 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert [t["label"] for t in r["top_k"]] == [CIFAR10_CLASSES[t["class"]] for t in r["top_k"]]
    assert len(err.strip().splitlines()) == 2


def test_cli_all_good_exits_0(model_path, pictures, capsys):
    assert main(["predict", str(model_path), str(pictures[0]), "--top-k", "1"]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 2 and err == ""


def test_cli_top_k_outside_the_classes(model_path, pictures, capsys):
    assert main(["predict", str(model_path), str(pictures[0]), "--top-k", "11"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "10 classes" in err
    with pytest.raises(SystemExit) as exc:
        main(["predict", str(model_path), str(pictures[0]), "--top-k", "0"])
    assert exc.value.code == 2


def test_other_output_counts_are_named_class_n(tmp_path, pictures, capsys):
    _tiny(num_classes=3).save(tmp_path / "three.keras")
    assert main(["predict", str(tmp_path / "three.keras"), str(pictures[0]), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert sorted(t["label"] for t in doc[0]["top_k"]) == ["class 0", "class 1", "class 2"]


def test_a_run_folders_own_class_names_are_used(tmp_path, pictures, capsys):
    # A model in a run folder answers in the names its run recorded (here a
    # 3-class set); a stray or mismatched metrics.json is ignored.
    from vggcifar import fsutil

    run = tmp_path / "run"
    run.mkdir()
    _tiny(num_classes=3).save(run / "model.keras")
    fsutil.write_json(run / "metrics.json", {"class_names": ["v-bar", "checker", "dots"]})
    assert main(["predict", str(run / "model.keras"), str(pictures[0]), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert sorted(t["label"] for t in doc[0]["top_k"]) == ["checker", "dots", "v-bar"]
    fsutil.write_json(run / "metrics.json", {"class_names": ["a", "b"]})  # wrong count
    assert main(["predict", str(run / "model.keras"), str(pictures[0]), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert sorted(t["label"] for t in doc[0]["top_k"]) == ["class 0", "class 1", "class 2"]


# ------------------------------------------------------------------ folders
@pytest.fixture()
def album(tmp_path):
    """A folder: two pictures and a text file, a hidden file, a subfolder with
    a picture and an empty subfolder."""
    root = tmp_path / "album"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty").mkdir()
    Image.fromarray(_noise(40, 40, 5)).save(root / "b.png")
    Image.fromarray(_noise(20, 30, 6)).save(root / "a.jpg")
    (root / "c.txt").write_text("not a picture\n")
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    Image.fromarray(_noise(32, 32, 7)).save(root / "sub" / "z.png")
    Image.fromarray(_noise(32, 32, 8)).save(root / "sub" / "deeper" / "y.png")
    return root


def test_a_folder_is_its_files_sorted(model_path, album):
    from vggcifar.prediction import picture_paths, predict_files

    assert picture_paths([album]) == [album / "a.jpg", album / "b.png", album / "c.txt"]
    assert picture_paths([album], recursive=True) == [album / "a.jpg", album / "b.png", album / "c.txt",
                                                      album / "sub" / "deeper" / "y.png", album / "sub" / "z.png"]
    results = predict_files(model_path, [album, album / "sub" / "z.png"], top=2)
    assert [r["path"] for r in results] == [str(album / n) for n in ("a.jpg", "b.png", "c.txt", "sub/z.png")]
    assert "is not a PNG or JPEG image" in results[2]["error"]
    # Each answer is the one its file gets alone.
    for r in (results[0], results[1], results[3]):
        alone = predict_files(model_path, [r["path"]], top=2)[0]
        assert [t["class"] for t in r["top_k"]] == [t["class"] for t in alone["top_k"]]


def test_cli_reads_folders_and_subfolders_with_recursive(model_path, album, capsys):
    assert main(["predict", str(model_path), str(album), "--json"]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert [Path(r["path"]).name for r in doc] == ["a.jpg", "b.png", "c.txt"]
    assert main(["predict", str(model_path), str(album), "--recursive", "--json"]) == 2
    out, err = capsys.readouterr()
    assert [Path(r["path"]).name for r in json.loads(out)] == ["a.jpg", "b.png", "c.txt", "y.png", "z.png"]
    assert err.count("vggcifar: error: ") == 1 and "c.txt" in err
    assert main(["predict", str(model_path), str(album / "sub"), "--top-k", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == str(album / "sub" / "z.png") and len(out) == 2


def test_folders_without_pictures_are_answered_in_one_line(model_path, album, capsys):
    assert main(["predict", str(model_path), str(album / "empty"), str(album / "sub" / "deeper")]) == 2
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == str(album / "sub" / "deeper" / "y.png")
    assert err.strip() == f"vggcifar: error: {album / 'empty'}: a folder with no picture files in it"
    (album / "only").mkdir()
    (album / "only" / "inner").mkdir()
    assert main(["predict", str(model_path), str(album / "only")]) == 2
    assert "only folders; add --recursive to read them" in capsys.readouterr().err
