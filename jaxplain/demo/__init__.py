"""The shipped demo: a small shape classifier and sample images with ground-truth masks.

``jaxplain explain`` uses this model when no other is given. The classifier
(:class:`jaxplain.nets.demo.DemoNet`) was trained in PyTorch on
:func:`make_dataset` images by ``python -m converters.train_demo``, which also wrote
the sample images; loading it needs neither torch nor the network.

>>> from jaxplain import demo
>>> model = demo.load_model()
>>> samples = demo.load_samples()
>>> logits = model(demo.normalise(samples.images))
>>> logits.shape
(8, 6)
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import traverse_util
from PIL import Image
from safetensors import safe_open
from safetensors.numpy import load_file

from jaxplain.demo.data import CLASSES, DemoSet, make_dataset
from jaxplain.model import Model
from jaxplain.nets import build

DIRECTORY = Path(__file__).resolve().parent
MODEL_PATH = DIRECTORY / "demo_model.safetensors"
IMAGES_DIRECTORY = DIRECTORY / "images"
_SAMPLE_NAME = re.compile(r"(\d+)_([a-z]+)\.png")


def metadata() -> dict[str, Any]:
    """The shipped model's metadata: arch, classes, mean, std, image size, seeds, accuracy."""
    with safe_open(MODEL_PATH, framework="numpy") as weights:
        raw = weights.metadata()
    return {key: json.loads(value) for key, value in raw.items()}


def load_model() -> Model:
    """The shipped classifier as a ``jaxplain.Model`` (``name="demo"``, ``mean``/``std`` set).

    Inputs are NHWC float images in [0, 1] normalised with ``model.mean`` and
    ``model.std`` (see :func:`normalise`), ``metadata()["image_size"]`` pixels square,
    though the network accepts any size of at least 8 pixels.
    """
    info = metadata()
    flat: dict[str, dict[str, jax.Array]] = {}
    for key, value in load_file(MODEL_PATH).items():
        collection, _, path = key.partition("/")
        flat.setdefault(collection, {})[path] = jax.device_put(value)
    variables = {collection: traverse_util.unflatten_dict(tree, sep="/") for collection, tree in flat.items()}
    module = build(info["arch"], num_classes=info["num_classes"])
    return Model(module, variables, input_channels=3, mean=tuple(info["mean"]), std=tuple(info["std"]), name="demo")


def normalise(images: np.ndarray) -> np.ndarray:
    """uint8 (or [0, 1] float) NHWC images normalised as the demo model expects, float32."""
    info = metadata()
    images = np.asarray(images)
    scaled = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
    return (scaled - np.asarray(info["mean"], np.float32)) / np.asarray(info["std"], np.float32)


def sample_images() -> list[Path]:
    """Paths of the shipped sample images (``<i>_<class>.png``), in order of ``i``."""
    found = [path for path in IMAGES_DIRECTORY.glob("*.png") if _SAMPLE_NAME.fullmatch(path.name)]
    return sorted(found, key=lambda path: int(path.name.partition("_")[0]))


def sample_masks() -> list[Path]:
    """Paths of the ground-truth masks of :func:`sample_images`, in the same order."""
    return [path.with_name(f"{path.stem}_mask.png") for path in sample_images()]


def load_samples() -> DemoSet:
    """The shipped samples as arrays: uint8 images, labels (from the file names) and bool masks."""
    images, masks = sample_images(), sample_masks()
    return DemoSet(
        images=np.stack([np.asarray(Image.open(path).convert("RGB")) for path in images]),
        labels=np.array([CLASSES.index(_SAMPLE_NAME.fullmatch(path.name).group(2)) for path in images], np.int64),
        masks=np.stack([np.asarray(Image.open(path).convert("L")) > 127 for path in masks]),
    )


__all__ = [
    "CLASSES",
    "DemoSet",
    "load_model",
    "load_samples",
    "make_dataset",
    "metadata",
    "normalise",
    "sample_images",
    "sample_masks",
]
