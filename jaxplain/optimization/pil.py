"""Images in [0, 1] as PIL images."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image


def to_pil(images: Any) -> list[Image.Image]:
    """PIL images of ``[..., H, W, C]`` arrays in [0, 1] (``C`` is 1 or 3), one per leading index.

    Values are clipped to [0, 1] and rounded to 8 bits; leading axes (thresholds,
    objectives) are flattened in order.

    Args:
        images: ``[..., H, W, C]`` floats, such as ``render_vis`` returns.

    Returns:
        One PIL image per leading index.

    Raises:
        ValueError: another shape.

    Example:
        >>> [picture.size for picture in to_pil(np.zeros((2, 3, 8, 4, 3)))][:2]
        [(4, 8), (4, 8)]
    """
    array = np.asarray(images, np.float32)
    if array.ndim < 3 or array.shape[-1] not in (1, 3):
        raise ValueError(f"to_pil: expected [..., H, W, 1 or 3] images, got shape {array.shape}")
    pixels = np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8).reshape(-1, *array.shape[-3:])
    return [Image.fromarray(p[..., 0] if p.shape[-1] == 1 else p) for p in pixels]
