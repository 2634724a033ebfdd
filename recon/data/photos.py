"""Finding, checking and preparing a folder of photos for structure from motion."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import ExifTags, Image, ImageOps

from .errors import ReconError

log = logging.getLogger("recon")

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
_EXIF_IFD = 0x8769
_TAG = {name: code for code, name in ExifTags.TAGS.items()}


@dataclass
class Photo:
    """One readable photo: where it is, its size after EXIF rotation, and a focal-length prior if EXIF has one."""

    path: Path
    width: int
    height: int
    focal_px: float | None  # focal length in pixels at this size, from EXIF 35 mm equivalent; None if unknown


def list_photos(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name; one clear error if the folder is missing."""
    folder = Path(folder)
    if not folder.exists():
        raise ReconError(f"photo folder {folder} does not exist; pass the folder that holds your photos")
    if not folder.is_dir():
        raise ReconError(f"{folder} is not a folder; pass the folder that holds your photos")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)


def exif_focal_px(img: Image.Image, width: int, height: int) -> float | None:
    """Focal length in pixels from EXIF ``FocalLengthIn35mmFilm`` (36 mm film width maps to the long side)."""
    try:
        exif = img.getexif()
        sub = exif.get_ifd(_EXIF_IFD)
    except Exception:  # corrupt EXIF must not make a good photo unreadable
        return None
    f35 = sub.get(_TAG["FocalLengthIn35mmFilm"]) or exif.get(_TAG["FocalLengthIn35mmFilm"])
    try:
        f35 = float(f35) if f35 else 0.0
    except (TypeError, ValueError):
        return None
    if f35 <= 0:
        return None
    return f35 / 36.0 * max(width, height)


def read_photo_info(path: Path) -> Photo | None:
    """Open a photo far enough to know its size and EXIF focal; None if it is not a readable image."""
    try:
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            orientation = img.getexif().get(_TAG["Orientation"], 1)
            w, h = img.size
            if orientation in (5, 6, 7, 8):  # rotated by 90 degrees: width and height swap after transpose
                w, h = h, w
            return Photo(path=path, width=w, height=h, focal_px=exif_focal_px(img, w, h))
    except Exception:
        return None


def scan_photos(folder: Path, min_count: int = 3) -> list[Photo]:
    """Readable photos of ``folder``; unreadable files are skipped with one warning that counts them."""
    candidates = list_photos(folder)
    photos = [p for p in (read_photo_info(c) for c in candidates) if p is not None]
    skipped = len(candidates) - len(photos)
    if skipped:
        log.warning(
            "skipped %d of %d files in %s that are not readable images", skipped, len(candidates), folder
        )
    if not photos:
        raise ReconError(
            f"no readable images in {folder}; put JPEG or PNG photos ({', '.join(PHOTO_SUFFIXES)}) directly in it"
        )
    if len(photos) < min_count:
        raise ReconError(
            f"only {len(photos)} readable image(s) in {folder}; structure from motion needs at least {min_count} "
            "overlapping photos of the scene"
        )
    return photos


def decode_photo(path: Path) -> Image.Image | None:
    """The photo's pixels, upright and fully decoded; None when they cannot be decoded (a truncated or damaged
    file whose header still reads, which ``read_photo_info`` lets through: it does not decode the pixels)."""
    try:
        with Image.open(path) as img:
            img.load()
            return ImageOps.exif_transpose(img)
    except Exception:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
        return None


def prepare_photo(photo: Photo, dst: Path, max_long_side: int) -> Photo | None:
    """Write ``photo`` to ``dst`` upright and no larger than ``max_long_side`` pixels; scale the focal prior to match.
    None when its pixels cannot be decoded.

    Resizing before SIFT keeps extraction and matching fast on a laptop and bounds memory in training later.
    """
    img = decode_photo(photo.path)
    if img is None:
        return None
    img = img.convert("RGB") if img.mode not in ("RGB", "L") else img
    w, h = img.size
    scale = 1.0
    if max_long_side > 0 and max(w, h) > max_long_side:
        scale = max_long_side / max(w, h)
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.suffix.lower() in (".jpg", ".jpeg"):
        img.save(dst, quality=95)
    else:
        img.save(dst)
    nw, nh = img.size
    focal = None if photo.focal_px is None else photo.focal_px * nw / w
    return Photo(path=dst, width=nw, height=nh, focal_px=focal)


def prepare_photos(
    photos: list[Photo],
    folder: Path,
    max_long_side: int,
    advance: Callable[[], object] | None = None,
    min_count: int = 3,
) -> list[Photo]:
    """``prepare_photo`` for each photo into ``folder``. Photos whose pixels cannot be decoded are skipped with
    one warning naming them, as unreadable files are by ``scan_photos``; ``advance()`` is called per photo."""
    prepared, broken = [], []
    for p in photos:
        done = prepare_photo(p, folder / p.path.name, max_long_side)
        (prepared if done is not None else broken).append(done or p)
        if advance is not None:
            advance()
    if broken:
        names = ", ".join(b.path.name for b in broken[:5]) + (", ..." if len(broken) > 5 else "")
        log.warning(
            "skipped %d of %d photos whose pixels cannot be decoded (truncated or damaged files): %s",
            len(broken), len(photos), names,
        )  # fmt: skip
    if len(prepared) < min_count:
        raise ReconError(
            f"only {len(prepared)} decodable image(s) of {len(photos)}; structure from motion needs at least "
            f"{min_count} overlapping photos of the scene (replace the damaged files)"
        )
    return prepared
