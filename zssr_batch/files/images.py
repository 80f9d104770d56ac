"""Decode and encode images: 8/16 bit, gray / gray+alpha / RGB / RGBA / palette, EXIF orientation.

Everything becomes a float32 array (C, H, W) in [0, 1] for the engine, with the
alpha channel kept apart (it is upscaled on its own, with plain bicubic), and
comes back out in the input's bit depth and channel layout. Pillow reads and
writes everything except 16-bit colour, which it silently cuts to 8 bits; those
files go through OpenCV. Writes are atomic: a temporary file in the target
folder, fsynced, then renamed over the target.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import struct
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import storage

# Pillow modes -> what we convert to before reading the pixels.
_CONVERT = {"1": "L", "P": None, "PA": "RGBA", "La": "LA", "RGBa": "RGBA", "RGBX": "RGB", "CMYK": "RGB",
            "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB"}
_SIXTEEN_BIT_GRAY = ("I;16", "I;16L", "I;16B", "I;16N")
_NO_16_BIT = {".jpg", ".jpeg", ".bmp", ".webp", ".gif"}
EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif")


class ImageError(ValueError):
    """An input that cannot be used; the message is one line naming the cause."""


@dataclass
class Picture:
    """An image as the engine sees it, plus what is needed to write it back the same way."""

    color: np.ndarray  # (C, H, W) float32 in [0, 1], C = 1 or 3
    alpha: np.ndarray | None = None  # (1, H, W) float32 in [0, 1]
    bit_depth: int = 8
    icc_profile: bytes | None = None
    notes: list[str] = field(default_factory=list)  # e.g. "first of 12 frames"
    sha256: str = ""  # of the file it was read from (resume checks that an input is unchanged)

    @property
    def channels(self) -> int:
        return self.color.shape[0] + (0 if self.alpha is None else 1)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)"""
        return self.color.shape[1], self.color.shape[2]


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an (H, W[, C]) array, as ``ImageOps.exif_transpose`` does."""
    ops = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: np.swapaxes(a, 0, 1), 6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a, 1)[::-1],
           8: lambda a: np.rot90(a, 1)}
    return np.ascontiguousarray(ops[orientation](arr)) if orientation in ops else arr


def _is_16bit_color(im: Image.Image) -> bool:
    """Pillow opens 16-bit colour PNG/TIFF as 8-bit RGB(A); its decoder tile still names the raw 16-bit mode."""
    if im.mode not in ("RGB", "RGBA"):
        return False
    return any(";16" in str(tile.args) for tile in getattr(im, "tile", []) or [])


def icc_colour_space(icc: bytes) -> str:
    """The data colour space an ICC profile describes ('RGB', 'GRAY', 'CMYK', ...), from its header
    (bytes 16-19 of every ICC profile); '' for what is not a profile."""
    return icc[16:20].decode("latin-1").strip() if len(icc) >= 20 else ""


def _split(arr: np.ndarray, scale: float, bit_depth: int, icc: bytes | None, notes: list[str]) -> Picture:
    a = arr.astype(np.float32) / scale
    if a.ndim == 2:
        a = a[..., None]
    a = np.ascontiguousarray(np.transpose(a, (2, 0, 1)))
    color, alpha = (a[:-1], a[-1:]) if a.shape[0] in (2, 4) else (a, None)
    if icc:
        # A profile describes the pixels it came with: a CMYK profile read with a CMYK JPEG no longer
        # applies to the RGB pixels it was converted to, and copied onto the output it would tell
        # every viewer to read RGB as CMYK.
        space, want = icc_colour_space(icc), "GRAY" if color.shape[0] == 1 else "RGB"
        if space != want:
            notes = [*notes, f"its {space or 'unreadable'} colour profile was dropped: the output is {want}"]
            icc = None
    return Picture(color, alpha, bit_depth, icc, notes)


def image_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """(h, w) from the file's header alone (no pixels decoded, an object's first bytes only); None
    for what cannot be read."""
    try:
        with storage.open_read(path) as f, Image.open(f) as im:
            return im.size[1], im.size[0]
    except Exception:  # noqa: BLE001 - such a file fails later with its own one-line cause
        return None


def load_image(path: str | os.PathLike, max_pixels: int | None = None) -> Picture:
    """Read an image file (or object); raises ImageError with a one-line cause for anything unusable."""
    path = os.fspath(path)
    if max_pixels is not None:  # our limit replaces Pillow's bomb guard where ours is looser
        Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, max_pixels)
    try:
        data = storage.read_bytes(path)  # once: decoded from memory, and hashed for the report
        pic = _decode(data, path, max_pixels)
        pic.sha256 = hashlib.sha256(data).hexdigest()
        return pic
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a directory") from None


def _decode(data: bytes, path: str, max_pixels: int | None) -> Picture:
    try:
        with Image.open(io.BytesIO(data)) as im:
            sixteen_bit_color = _is_16bit_color(im)  # before anything loads the pixels and clears the tiles
            notes = []
            frames = getattr(im, "n_frames", 1)
            if frames > 1:
                notes.append(f"first of {frames} frames")
            w, h = im.size
            if max_pixels is not None and w * h > max_pixels:
                raise ImageError(f"{path}: {w}x{h} exceeds --max-pixels {max_pixels}")
            icc = im.info.get("icc_profile")
            orientation = im.getexif().get(0x0112, 1)
            if sixteen_bit_color:
                import cv2

                pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
                if pixels is None or pixels.dtype != np.uint16:
                    raise ImageError(f"{path}: could not decode 16-bit colour data")
                pixels = cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGBA if pixels.shape[-1] == 4 else cv2.COLOR_BGR2RGB)
                return _split(_orient(pixels, orientation), 65535.0, 16, icc, notes)
            im.seek(0)
            im = ImageOps.exif_transpose(im)
            mode = im.mode
            if mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif mode in _CONVERT:
                im = im.convert(_CONVERT[mode])
            if im.mode in _SIXTEEN_BIT_GRAY or im.mode == "I":
                ints = np.asarray(im).astype(np.int64)
                if ints.size and (ints.min() < 0 or ints.max() > 65535):
                    raise ImageError(f"{path}: 32-bit integer pixels are not supported")
                return _split(ints, 65535.0, 16, icc, notes)
            if im.mode == "F":
                raise ImageError(f"{path}: floating-point images are not supported")
            if im.mode not in ("L", "LA", "RGB", "RGBA"):
                raise ImageError(f"{path}: unsupported image mode {im.mode}")
            return _split(np.asarray(im), 255.0, 8, icc, notes)
    except ImageError:
        raise
    except UnidentifiedImageError:
        kind = "empty file" if not data else "not an image (or an unsupported format)"
        raise ImageError(f"{path}: {kind}") from None
    except Image.DecompressionBombError as e:
        found = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{found.group(1)} pixels" if found else "its declared size"
        limit = f"--max-pixels {max_pixels}" if max_pixels is not None else f"{Image.MAX_IMAGE_PIXELS} pixels"
        raise ImageError(f"{path}: {size} exceeds {limit} (decompression bomb?)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "truncated" in msg.lower() or isinstance(e, EOFError):
            msg = f"truncated or corrupt file ({msg})"
        raise ImageError(f"{path}: {msg}") from None


def to_array(pic: Picture) -> np.ndarray:
    """Quantise a Picture to (H, W[, C]) uint8 / uint16 with alpha last."""
    planes = pic.color if pic.alpha is None else np.concatenate([pic.color, pic.alpha])
    top = 65535 if pic.bit_depth == 16 else 255
    q = np.floor(np.clip(planes, 0, 1) * top + 0.5).astype(np.uint16 if top == 65535 else np.uint8)
    q = np.transpose(q, (1, 2, 0))
    return q[..., 0] if q.shape[-1] == 1 else q


def encode_image(pic: Picture, suffix: str) -> bytes:
    """Bytes of ``pic`` in the format named by ``suffix`` ('.png', '.jpg', ...)."""
    suffix = suffix.lower()
    if suffix not in EXTENSIONS:
        raise ImageError(f"cannot write '{suffix}' files; use one of {', '.join(EXTENSIONS)}")
    if pic.bit_depth == 16 and suffix in _NO_16_BIT:
        pic = Picture(pic.color, pic.alpha, 8, pic.icc_profile)  # the format holds 8 bits only
    arr = to_array(pic)
    if pic.bit_depth == 16:
        import cv2

        if arr.ndim == 3 and arr.shape[-1] == 2:  # no 16-bit gray+alpha writer: store it as RGBA
            arr = np.concatenate([np.repeat(arr[..., :1], 3, axis=-1), arr[..., 1:]], axis=-1)
        if arr.ndim == 3:
            arr = cv2.cvtColor(arr, cv2.COLOR_RGBA2BGRA if arr.shape[-1] == 4 else cv2.COLOR_RGB2BGR)
        ok, buf = cv2.imencode(suffix, arr)
        if not ok:
            raise ImageError(f"OpenCV could not encode a 16-bit '{suffix}' image")
        data = buf.tobytes()
        # OpenCV writes no colour profile; a PNG carries one in an iCCP chunk, which we add
        # (a 16-bit TIFF goes without: ``keeps_profile`` says so, for the row's notes).
        return _with_png_profile(data, pic.icc_profile) if pic.icc_profile and suffix == ".png" else data
    if drops_alpha(pic, suffix) and arr.ndim == 3 and arr.shape[-1] in (2, 4):
        arr = arr[..., :-1]  # no alpha in this format (the row says so)
        arr = arr[..., 0] if arr.shape[-1] == 1 else arr
    im = Image.fromarray(arr)
    out = io.BytesIO()
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF", ".png": "PNG", ".bmp": "BMP",
           ".webp": "WEBP", ".gif": "GIF"}[suffix]
    opts: dict = {}
    if pic.icc_profile and fmt in ("JPEG", "PNG", "TIFF", "WEBP"):
        opts["icc_profile"] = pic.icc_profile
    if fmt == "JPEG":
        opts.update(quality=95, subsampling=0)
    elif fmt == "WEBP":
        opts.update(lossless=True)
    elif fmt == "TIFF":
        opts.update(compression="tiff_deflate")
    im.save(out, format=fmt, **opts)
    return out.getvalue()


def drops_alpha(pic: Picture, suffix: str) -> bool:
    """Whether ``encode_image`` leaves ``pic``'s alpha out of a ``suffix`` file: JPEG holds none, and
    Pillow writes no gray+alpha BMP and reads a 32-bit one back without its alpha."""
    return pic.alpha is not None and suffix.lower() in (".jpg", ".jpeg", ".bmp")


def keeps_profile(pic: Picture, suffix: str) -> bool:
    """Whether ``encode_image`` writes ``pic``'s colour profile into a ``suffix`` file (BMP and GIF
    hold none; OpenCV, which writes our 16-bit TIFFs, writes none)."""
    suffix = suffix.lower()
    if not pic.icc_profile or suffix in (".bmp", ".gif"):
        return False
    return not (pic.bit_depth == 16 and suffix in (".tif", ".tiff"))


def _with_png_profile(png: bytes, icc: bytes) -> bytes:
    """``png`` with an iCCP chunk holding ``icc``, right after its IHDR chunk (where the PNG
    specification wants it: before PLTE and IDAT)."""
    body = b"iCCP" + b"icc\0\0" + zlib.compress(icc)  # profile name, NUL, compression method 0
    chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
    ihdr_end = 8 + 4 + 4 + 13 + 4  # signature, IHDR's length, type, data and CRC
    return png[:ihdr_end] + chunk + png[ihdr_end:]


def _umask() -> int:
    """The process's umask (read once: setting it back and forth is not thread-safe)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file here


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` so that ``path`` is either the old file, or the whole new one: never a part.

    The temporary file has a short name of its own (a name near the file system's 255-byte limit
    leaves no room for a suffix) and gets the mode a plain ``open`` would give under the user's
    umask (``mkstemp`` makes it 0600). An object store's URL is written with one PUT, which such a
    store makes visible whole or not at all (``files.storage``)."""
    if storage.is_url(path):
        storage.write_bytes(os.fspath(path), data)
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".zssr-", suffix=".part")
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def remove_parts(folders: Iterable[str | os.PathLike]) -> None:
    """Delete the temporary files ``write_atomic`` left in ``folders`` (not below them): a worker
    killed while it wrote an output (a run that stopped kills its workers) leaves one, never a
    torn output. URLs have none (one PUT)."""
    for folder in folders:
        if storage.is_url(folder):
            continue
        for part in Path(folder).glob(".zssr-*.part"):
            try:
                part.unlink()
            except FileNotFoundError:
                pass


def save_image(path: str | os.PathLike, pic: Picture) -> None:
    write_atomic(path, encode_image(pic, os.path.splitext(os.fspath(path))[1]))
