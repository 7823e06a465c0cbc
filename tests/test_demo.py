"""The shipped demo: synthetic dataset, torch twin's conversion, shipped weights and samples.

Tolerance for the conversion: ``max |ours - torch| <= 1e-4 * max(1, max |torch logits|)``
in float32, on random weights with randomised BatchNorm state.
"""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxplain import demo
from jaxplain.demo import CLASSES, make_dataset

EVAL_SEED = 2026
"""Held-out seed for the accuracy check; the test asserts training used another."""

forward = jax.jit(lambda model, images: model(images))


@pytest.fixture(scope="module")
def model():
    return demo.load_model()


def test_dataset_is_deterministic_per_seed():
    first, again, other = make_dataset(6, seed=3), make_dataset(6, seed=3), make_dataset(6, seed=4)
    for mine, same in zip(first, again):
        np.testing.assert_array_equal(mine, same)
    assert not np.array_equal(first.images, other.images)
    prefix = make_dataset(3, seed=3)
    np.testing.assert_array_equal(prefix.images, first.images[:3])


def test_dataset_shapes_labels_and_masks():
    data = make_dataset(60, seed=5, size=48)
    assert data.images.shape == (60, 48, 48, 3) and data.images.dtype == np.uint8
    assert data.labels.shape == (60,) and set(data.labels) == set(range(len(CLASSES)))
    assert data.masks.shape == (60, 48, 48) and data.masks.dtype == bool
    coverage = data.masks.mean(axis=(1, 2))
    assert coverage.min() > 0.01 and coverage.max() < 0.4
    # A ring has a hole at its centre of mass; a circle is filled there.
    for mask, label in zip(data.masks, data.labels):
        rows, cols = np.nonzero(mask)
        centre = mask[int(round(rows.mean())), int(round(cols.mean()))]
        if CLASSES[label] == "ring":
            assert not centre
        if CLASSES[label] == "circle":
            assert centre


def test_shipped_model_loads_without_torch():
    code = (
        "import sys; from jaxplain import demo; model = demo.load_model(); "
        "assert model.name == 'demo' and model.mean is not None; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_shipped_model_accuracy_on_held_out_images(model):
    info = demo.metadata()
    assert EVAL_SEED != info["train_seed"]
    assert info["classes"] == list(CLASSES)
    data = make_dataset(200, seed=EVAL_SEED, size=info["image_size"])
    predicted = np.asarray(forward(model, jnp.asarray(demo.normalise(data.images)))).argmax(1)
    assert (predicted == data.labels).mean() >= 0.85


def test_shipped_samples_are_classified(model):
    samples = demo.load_samples()
    assert len(demo.sample_images()) == len(demo.sample_masks()) == len(samples.labels) == 8
    assert all(path.exists() for path in demo.sample_masks())
    assert set(samples.labels) == set(range(len(CLASSES)))
    assert samples.masks.any(axis=(1, 2)).all()
    predicted = np.asarray(forward(model, jnp.asarray(demo.normalise(samples.images)))).argmax(1)
    assert (predicted == samples.labels).sum() >= 6


def test_torch_demo_net_converts_exactly():
    torch = pytest.importorskip("torch")
    import converters
    from converters.demo import DemoNetTorch

    with torch.random.fork_rng():
        torch.manual_seed(0)
        torch_model = DemoNetTorch()
        with torch.no_grad():
            for norm in torch_model.modules():
                if isinstance(norm, torch.nn.BatchNorm2d):
                    norm.running_mean.normal_(0.0, 0.5)
                    norm.running_var.uniform_(0.5, 2.0)
                    norm.weight.uniform_(0.5, 1.5)
                    norm.bias.uniform_(-0.2, 0.2)
    torch_model.eval()
    model = converters.from_torch(torch_model)
    assert model.name == "demo"
    images = np.random.default_rng(0).standard_normal((2, 48, 80, 3), dtype=np.float32)
    ours = np.asarray(model(jnp.asarray(images)))
    with torch.no_grad():
        theirs = torch_model(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()
    assert ours.shape == theirs.shape == (2, len(CLASSES))
    assert np.abs(ours - theirs).max() <= 1e-4 * max(1.0, float(np.abs(theirs).max()))
