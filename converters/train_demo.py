"""Train the demo classifier in PyTorch and ship it, with sample images, in ``jaxplain/demo``.

    python -m converters.train_demo

Generates the synthetic training set (:func:`jaxplain.demo.data.make_dataset`, seed
:data:`TRAIN_SEED`), trains :class:`converters.demo.DemoNetTorch` on the CPU with Adam
and a one-cycle learning rate (random flips and quarter turns as augmentation: every
class is closed under them), converts it with :func:`converters.from_torch`, checks
the converted logits against torch's, measures accuracy on a held-out set (seed
:data:`EVAL_SEED`), and writes

* ``jaxplain/demo/demo_model.safetensors``: the Flax variables under
  ``"params/features/0/kernel"``-style keys, with the metadata
  :func:`jaxplain.demo.load_model` reads (architecture, classes, normalisation, image
  size, seeds, accuracy; each value JSON-encoded) in the safetensors header;
* ``jaxplain/demo/images/<i>_<class>.png`` and ``<i>_<class>_mask.png``: the shipped
  samples (seed :data:`SAMPLE_SEED`, every class at least once).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import traverse_util
from PIL import Image
from safetensors.numpy import save_file

import converters
from converters.demo import DemoNetTorch
from jaxplain.demo.data import CLASSES, DemoSet, make_dataset
from jaxplain.model import Model
from jaxplain.nets.resnet import IMAGENET_MEAN, IMAGENET_STD

TRAIN_SEED = 100
EVAL_SEED = 101
SAMPLE_SEED = 102
IMAGE_SIZE = 64
NUM_SAMPLES = 8
DEMO_DIR = Path(__file__).resolve().parent.parent / "jaxplain" / "demo"


def _normalise(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> normalised float NCHW."""
    mean = np.asarray(IMAGENET_MEAN, np.float32)
    std = np.asarray(IMAGENET_STD, np.float32)
    return torch.from_numpy(((images.astype(np.float32) / 255.0 - mean) / std).transpose(0, 3, 1, 2).copy())


def _augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random quarter turn and horizontal flip per batch (labels are invariant)."""
    turns = int(torch.randint(4, (1,), generator=generator))
    batch = torch.rot90(batch, turns, dims=(2, 3))
    return batch.flip(3) if bool(torch.randint(2, (1,), generator=generator)) else batch


def train(data: DemoSet, *, epochs: int, batch_size: int, learning_rate: float, seed: int) -> DemoNetTorch:
    """A :class:`DemoNetTorch` trained on ``data`` (returned in eval mode)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    inputs, labels = _normalise(data.images), torch.from_numpy(data.labels)
    model = DemoNetTorch(num_classes=len(CLASSES))
    optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    steps = epochs * (len(labels) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=learning_rate, total_steps=steps)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(labels), generator=generator)
        start, total, correct = time.perf_counter(), 0.0, 0
        for step in range(len(labels) // batch_size):
            index = order[step * batch_size : (step + 1) * batch_size]
            logits = model(_augment(inputs[index], generator))
            loss = torch.nn.functional.cross_entropy(logits, labels[index])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(index)
            correct += int((logits.argmax(1) == labels[index]).sum())
        seen = (len(labels) // batch_size) * batch_size
        print(
            f"epoch {epoch + 1}/{epochs}: loss {total / seen:.3f}, train accuracy {correct / seen:.3f}"
            f" ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    return model.eval()


def _torch_logits(model: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(_normalise(images)).numpy()


def _flax_logits(model: Model, images: np.ndarray) -> np.ndarray:
    inputs = _normalise(images).numpy().transpose(0, 2, 3, 1)
    return np.asarray(jax.jit(lambda m, x: m(x))(model, jnp.asarray(inputs)))


def _samples(size: int) -> tuple[DemoSet, list[int]]:
    """:data:`NUM_SAMPLES` images of seed :data:`SAMPLE_SEED`, cycling through the classes."""
    pool = make_dataset(16 * NUM_SAMPLES, seed=SAMPLE_SEED, size=size)
    chosen: list[int] = []
    for k in range(NUM_SAMPLES):
        wanted = k % len(CLASSES)
        chosen.append(next(i for i, label in enumerate(pool.labels) if label == wanted and i not in chosen))
    return DemoSet(pool.images[chosen], pool.labels[chosen], pool.masks[chosen]), chosen


def main() -> None:
    """Train, convert, check, evaluate and write the shipped artefacts."""
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--train-size", type=int, default=10000)
    parser.add_argument("--eval-size", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (one is fastest on a shared machine)")
    parser.add_argument("--out", type=Path, default=DEMO_DIR)
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)

    start = time.perf_counter()
    data = make_dataset(arguments.train_size, seed=TRAIN_SEED, size=IMAGE_SIZE)
    held_out = make_dataset(arguments.eval_size, seed=EVAL_SEED, size=IMAGE_SIZE)
    print(f"generated {arguments.train_size} + {arguments.eval_size} images in {time.perf_counter() - start:.0f} s")
    start = time.perf_counter()
    torch_model = train(
        data, epochs=arguments.epochs, batch_size=arguments.batch_size, learning_rate=arguments.learning_rate, seed=0
    )
    training_seconds = time.perf_counter() - start
    print(f"trained in {training_seconds:.0f} s")

    model = converters.from_torch(torch_model, input_shape=(1, IMAGE_SIZE, IMAGE_SIZE, 3))
    theirs = _torch_logits(torch_model, held_out.images)
    ours = _flax_logits(model, held_out.images)
    error = float(np.abs(ours - theirs).max())
    if error > 1e-4 * max(1.0, float(np.abs(theirs).max())):
        raise SystemExit(f"converted logits differ from torch's by {error:.3g}")
    accuracy = float((ours.argmax(1) == held_out.labels).mean())
    print(
        f"held-out accuracy {accuracy:.4f} on {arguments.eval_size} images (seed {EVAL_SEED}); max |jax - torch| {error:.2g}"
    )

    arguments.out.mkdir(parents=True, exist_ok=True)
    tensors = {
        f"{collection}/{path}": np.asarray(leaf, np.float32)
        for collection, tree in model.variables.items()
        for path, leaf in traverse_util.flatten_dict(tree, sep="/").items()
    }
    metadata = {
        "arch": "demo",
        "num_classes": len(CLASSES),
        "classes": CLASSES,
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "image_size": IMAGE_SIZE,
        "train_seed": TRAIN_SEED,
        "train_size": arguments.train_size,
        "epochs": arguments.epochs,
        "eval_seed": EVAL_SEED,
        "eval_size": arguments.eval_size,
        "accuracy": round(accuracy, 4),
        "sample_seed": SAMPLE_SEED,
    }
    save_file(
        tensors, arguments.out / "demo_model.safetensors", metadata={k: json.dumps(v) for k, v in metadata.items()}
    )

    samples, indices = _samples(IMAGE_SIZE)
    images_dir = arguments.out / "images"
    images_dir.mkdir(exist_ok=True)
    for old in images_dir.glob("*.png"):
        old.unlink()
    for position, (image, label, mask) in enumerate(zip(*samples)):
        stem = f"{position}_{CLASSES[label]}"
        Image.fromarray(image).save(images_dir / f"{stem}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(images_dir / f"{stem}_mask.png")
    predicted = _flax_logits(model, samples.images).argmax(1)
    print(
        f"samples (seed {SAMPLE_SEED}, indices {indices}): {int((predicted == samples.labels).sum())}/{NUM_SAMPLES} correct"
    )
    print(f"wrote {arguments.out / 'demo_model.safetensors'} and {2 * NUM_SAMPLES} PNGs in {images_dir}")


if __name__ == "__main__":
    main()
