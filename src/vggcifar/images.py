"""Pictures from files, made into what the network takes: uint8 RGB, 32x32.

``read_image`` turns one PNG or JPEG file into a uint8 ``(H, W, 3)`` array;
``to_model_input`` resizes a batch of such arrays to the network's input
size. ``vggcifar predict`` uses both; ``vggcifar evaluate`` passes the CIFAR
test set through ``to_model_input`` too (for 32x32 images it returns its
input unchanged), so the two commands cannot prepare images differently.

How a file becomes an array:

* Formats: PNG and JPEG only (MPO, the multi-picture JPEG some cameras write,
  counts as JPEG; its first picture is used), decided by what Pillow's PNG
  and JPEG readers recognise in the bytes, never by the file's extension.
  Only those two readers are run on the file; any other format is refused
  by name.
* Size limit: at most ``MAX_PIXELS`` (8192 x 8192 = 67,108,864) pixels, checked
  against the size in the file's header before any pixel is decoded, so a
  small file that claims to be huge (a decompression bomb) costs nothing.
  Pillow's own, looser guard (``DecompressionBombWarning`` /
  ``DecompressionBombError``) is turned into the same refusal, which states
  the picture's size and this limit only.
* EXIF orientation is applied (``ImageOps.exif_transpose``): the array is
  the picture as a viewer shows it.
* Transparency (RGBA, LA, a palette or a single colour marked transparent)
  is flattened onto ``BACKGROUND``, white: what most viewers and web pages
  show behind a transparent picture, and what clip-art and product photos
  with a cut-out background are made to be seen on.
* 16-bit greyscale is scaled to 8 bits as round(v * 255 / 65535), so 65535
  becomes 255 and the whole range is kept (not clipped). Pillow itself
  reduces 16-bit colour PNGs to 8 bits by their high byte (v // 256), which
  differs from that scaling by at most 1.
* Palette, greyscale, 1-bit and CMYK pictures are converted to RGB.

Resizing (``RESAMPLING``): area averaging, one method for every picture.
Each output pixel is the mean of the source area it covers, a source pixel
that straddles two outputs counting in each by the part it shares: every
source pixel counts equally, so nothing aliases and no detail is dropped;
there is no ringing and no value beyond 0..255; for a whole-number factor it
is exactly the block mean. It is computed in float32 and rounded once.
(Pillow's BOX filter is not this for fractional factors: it gives each source
pixel all or none of its weight by where its centre falls, and it rounds
between its horizontal and vertical passes.) Enlarging a picture smaller than
32x32 repeats its pixels, blending where an output pixel straddles two. The
whole picture is resized to 32x32 whatever its aspect ratio (nothing is
cropped): crop a picture to a square around its subject first for the best
results, as CIFAR's pictures are square.
"""

from __future__ import annotations

import io
import stat
import struct
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vggcifar.fsutil import first_line

#: The formats accepted, as Pillow names them (MPO is a JPEG with extra pictures).
ALLOWED_FORMATS = ("PNG", "JPEG", "MPO")
#: The Pillow readers run on a file: nothing else parses its bytes.
_READERS = ("PNG", "JPEG")
#: The largest picture accepted, in pixels (8192 x 8192).
MAX_PIXELS = 8192 * 8192
#: The colour transparent pixels are flattened onto (white).
BACKGROUND = (255, 255, 255)
#: The one resampling method, used for every resize (see the module's notes).
RESAMPLING = "area"
_BAND = 512  # picture rows converted to float at a time while resizing
#: The network's input size (height, width).
INPUT_SIZE = (32, 32)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"


class ImageError(ValueError):
    """A file that cannot be used as a picture; the message names the file,
    what is wrong and what to do."""


def _too_large(path, width: int, height: int) -> ImageError:
    return ImageError(f"{path}: its header claims {width}x{height} = {width * height:,} pixels, more than "
                      f"the limit of {MAX_PIXELS:,} (8192x8192); refused before decoding (a decompression "
                      "bomb, or a picture to shrink first)")


def _corrupt(path, fmt: str, why: str) -> ImageError:
    return ImageError(f"{path}: {fmt} file is truncated or corrupt ({why}); save the picture again as PNG or JPEG")


def _check_file(path: Path) -> None:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot be read ({exc.strerror or first_line(exc)})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(f"{path}: is a directory, not an image file; name the image files in it")
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(f"{path}: is not a regular file; give a PNG or JPEG file")
    if st.st_size == 0:
        raise ImageError(f"{path}: is empty (0 bytes); give a PNG or JPEG file")


def _claimed_format(f) -> str:
    """"PNG" or "JPEG" by the file's signature, for messages about a damaged file."""
    f.seek(0)
    head = f.read(8)
    return "PNG" if head.startswith(_PNG_SIGNATURE) else "JPEG" if head.startswith(_JPEG_SIGNATURE) else "image"


def _diagnose_unreadable(f, path) -> ImageError:
    """Why Pillow's PNG and JPEG readers did not recognise the file ``f`` (named ``path``)."""
    f.seek(0)
    head = f.read(24)
    if head.startswith(_PNG_SIGNATURE):
        # Pillow reads a PNG's headers up to its first pixel data; a file that
        # ends before that is refused as unidentified, even when its IHDR
        # chunk (at a fixed place) says how big the picture claims to be.
        if len(head) == 24 and head[12:16] == b"IHDR":
            width, height = struct.unpack(">II", head[16:24])
            if width * height > MAX_PIXELS:
                return _too_large(path, width, height)
        return _corrupt(path, "PNG", "its headers are incomplete or damaged")
    if head.startswith(_JPEG_SIGNATURE):
        return _corrupt(path, "JPEG", "its headers are incomplete or damaged")
    # Name the format, for the message only: every reader Pillow has may look
    # at the header, but nothing is decoded.
    fmt = None
    try:
        f.seek(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(f) as im:
                fmt = im.format
    except Exception:  # noqa: BLE001 - any failure just means "unknown format"
        pass
    if fmt:
        return ImageError(f"{path}: is a {fmt} image; only PNG and JPEG are accepted: convert it to PNG")
    return ImageError(f"{path}: is not a PNG or JPEG image (its content is not a picture Pillow recognises)")


def _header_size(f, path) -> tuple[int, int] | None:
    """The (width, height) the file's header states, read by the PNG or JPEG
    reader alone: what ``Image.open`` reads before its own size check."""
    f.seek(0)
    prefix = f.read(16)
    for fmt in _READERS:
        factory, accept = Image.OPEN[fmt]
        if accept is not None and not accept(prefix):
            continue
        f.seek(0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return tuple(factory(f, str(path)).size)
        except Exception:  # noqa: BLE001 - this reader does not take it: try the next
            continue
    return None


def _refused_by_pillow(f, path) -> ImageError:
    """Pillow's own size guard stopped the file: the same refusal as ours,
    with its size and our limit (Pillow's limit, twice as loose, is not ours
    to quote), unless this process lowered Pillow's limit below ours."""
    size = _header_size(f, path)
    if size is None:
        return ImageError(f"{path}: its header claims more than the limit of {MAX_PIXELS:,} pixels "
                          "(8192x8192); refused before decoding (a decompression bomb, or a picture to shrink first)")
    width, height = size
    if width * height > MAX_PIXELS:
        return _too_large(path, width, height)
    return ImageError(f"{path}: its header claims {width}x{height} = {width * height:,} pixels, more than "
                      f"PIL.Image.MAX_IMAGE_PIXELS ({Image.MAX_IMAGE_PIXELS:,}) allows in this process; "
                      "refused before decoding (raise that limit, or shrink the picture first)")


def _open(f, path) -> Image.Image:
    """Pillow's PNG or JPEG reader on the file ``f`` (named ``path``): headers only, size checked."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            f.seek(0)
            im = Image.open(f, formats=list(_READERS))
        except UnidentifiedImageError:
            raise _diagnose_unreadable(f, path) from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise _refused_by_pillow(f, path) from None
        except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
            raise _corrupt(path, _claimed_format(f), first_line(exc)) from None
    if im.format not in ALLOWED_FORMATS:  # a reader that answers with another format name
        im.close()
        raise ImageError(f"{path}: is a {im.format} image; only PNG and JPEG are accepted: convert it to PNG")
    width, height = im.size
    if width * height > MAX_PIXELS:
        im.close()
        raise _too_large(path, width, height)
    return im


def _flatten(im: Image.Image) -> Image.Image:
    """RGBA onto BACKGROUND, as RGB."""
    background = Image.new("RGBA", im.size, (*BACKGROUND, 255))
    return Image.alpha_composite(background, im.convert("RGBA")).convert("RGB")


def _to_rgb(im: Image.Image) -> np.ndarray:
    """A decoded picture of any PNG/JPEG mode as uint8 (H, W, 3)."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):  # 16-bit greyscale PNG
        wide = np.clip(np.asarray(im), 0, 65535).astype(np.uint32)  # 65535 * 255 fits in 32 bits
        grey = ((wide * 255 + 32767) // 65535).astype(np.uint8)
        rgb = np.repeat(grey[..., None], 3, axis=-1)
        key = im.info.get("transparency")
        if isinstance(key, int):  # one grey level marked transparent (tRNS)
            rgb[wide == key] = BACKGROUND
        return rgb
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info:
        return np.asarray(_flatten(im))
    return np.asarray(im if im.mode == "RGB" else im.convert("RGB"))


def read_image(path) -> np.ndarray:
    """One PNG or JPEG file as uint8 RGB ``(H, W, 3)``, as a viewer shows it
    (see the module's notes); raises ``ImageError`` with a one-line reason."""
    path = Path(path)
    _check_file(path)
    try:
        with open(path, "rb") as f:
            return _decode(f, path)
    except OSError as exc:  # the file vanished or became unreadable meanwhile
        raise ImageError(f"{path}: cannot be read ({exc.strerror or first_line(exc)})") from None


def decode_image(data: bytes, path) -> np.ndarray:
    """``read_image`` for a file's bytes already read (by a reader that also
    hashes them, so what is decoded is what was hashed); ``path`` names the
    file in messages."""
    if not data:
        raise ImageError(f"{path}: is empty (0 bytes); give a PNG or JPEG file")
    return _decode(io.BytesIO(data), path)


def _decode(f, path) -> np.ndarray:
    """The picture in the open binary file ``f`` (named ``path``) as uint8 RGB ``(H, W, 3)``."""
    im = _open(f, path)
    with im:
        fmt = "JPEG" if im.format == "MPO" else im.format
        try:
            im.load()
        except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
            raise _corrupt(path, fmt, first_line(exc)) from None
        upright = ImageOps.exif_transpose(im)
        rgb = _to_rgb(upright)
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def to_model_input(images: np.ndarray | Sequence[np.ndarray], size: tuple[int, int] = INPUT_SIZE) -> np.ndarray:
    """uint8 RGB pictures ``(H, W, 3)`` (an ``(N, H, W, 3)`` array or a list of
    any sizes) as one uint8 ``(N, height, width, 3)`` batch, each resized by
    area averaging (``RESAMPLING``). An array already of that size is
    returned as it is (no copy): CIFAR's 32x32 images pass through unchanged.
    ``evaluate`` and ``predict`` both prepare their input here."""
    height, width = size
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"Expected uint8 images of shape (N, H, W, 3). Received: shape={images.shape}")
        if images.shape[1:3] == (height, width):
            if images.dtype != np.uint8:
                raise ValueError(f"Expected uint8 images. Received: dtype={images.dtype}")
            return images
    out = np.empty((len(images), height, width, 3), np.uint8)
    for i, image in enumerate(images):
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"Expected uint8 images of shape (H, W, 3). "
                             f"Received: shape={image.shape}, dtype={image.dtype}")
        if image.shape[:2] == (height, width):
            out[i] = image
        else:
            out[i] = _resize(image, width, height)
    return out


def _area_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in): output pixel i covers source [i * n_in / n_out, (i + 1) *
    n_in / n_out); each source pixel counts by the length it shares with that
    span. Rows sum to 1."""
    scale = n_in / n_out
    lo = np.arange(n_out)[:, None] * scale
    j = np.arange(n_in)[None, :]
    overlap = np.minimum(lo + scale, j + 1) - np.maximum(lo, j)
    return (np.clip(overlap, 0, None) / scale).astype(np.float32)


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area averaging: rows, then columns, in float32, rounded once. The rows
    are done in bands so a large picture is never copied whole as floats."""
    rows = _area_weights(image.shape[0], height)
    acc = np.zeros((height, image.shape[1], 3), np.float32)
    for start in range(0, image.shape[0], _BAND):
        band = image[start:start + _BAND].astype(np.float32)
        acc += np.tensordot(rows[:, start:start + _BAND], band, axes=(1, 0))
    out = np.einsum("ow,hwc->hoc", _area_weights(image.shape[1], width), acc)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
