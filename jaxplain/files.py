"""Image files in, explanation files out: discovery, decoding, stable output names, atomic writes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def find_images(paths: Sequence[str | os.PathLike]) -> list[tuple[Path, str]]:
    """``(file, output stem)`` for every image named or found (recursively) in a folder.

    A file given by name is taken whatever its suffix (so a bad one is reported, not
    ignored); in folders only files with an image suffix count, hidden ones and masks
    (``*_mask.png``) excluded. The stem of a file found in a folder is its path below
    that folder with ``/`` written ``__``; clashing stems get ``-2``, ``-3``, ...
    in the order given, so reruns name every output the same way.

    Raises:
        FileNotFoundError: naming a path that does not exist.
    """
    found: list[tuple[Path, str]] = []
    for path in map(Path, paths):
        if path.is_dir():
            files = sorted(
                p for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
                and not p.stem.endswith("_mask")
            )
            found += [(p, "__".join(p.relative_to(path).with_suffix("").parts)) for p in files]
        elif path.is_file():
            found.append((path, path.stem))
        else:
            raise FileNotFoundError(f"no such image or folder: {path}")
    seen: dict[str, int] = {}
    named = []
    for file, stem in found:
        seen[stem] = seen.get(stem, 0) + 1
        named.append((file, stem if seen[stem] == 1 else f"{stem}-{seen[stem]}"))
    return named


class UnreadableImage(ValueError):
    """An input file that is not a decodable image."""


def decode_image(path: Path) -> np.ndarray:
    """``uint8 [H, W, 3]``: the image decoded and converted to RGB, at its own size.

    Raises:
        UnreadableImage: naming the file and what went wrong.
    """
    try:
        with Image.open(path) as image:
            image.load()
            rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise UnreadableImage(f"{path}: not a readable image ({error})") from error
    return np.asarray(rgb, np.uint8)


def resize_image(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``uint8 [H, W, 3]`` pixels resized (bilinear) to ``size`` ``(H, W)``; unchanged at that size."""
    if pixels.shape[:2] == tuple(size):
        return pixels
    return np.asarray(Image.fromarray(pixels).resize((size[1], size[0]), Image.Resampling.BILINEAR), np.uint8)


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(handle)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_png(path: Path, image: Image.Image) -> None:
    """Write ``image`` to ``path`` so that ``path`` is either absent or complete."""
    _atomic(path, lambda temporary: image.save(temporary, format="PNG"))


def write_npy(path: Path, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` (``.npy``) so that ``path`` is either absent or complete."""

    def save(temporary: Path) -> None:
        with open(temporary, "wb") as handle:
            np.save(handle, array)

    _atomic(path, save)


def batches(items: Sequence, size: int) -> Iterable[Sequence]:
    """Consecutive slices of ``items`` of at most ``size``."""
    return (items[start:start + size] for start in range(0, len(items), size))
