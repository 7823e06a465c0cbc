"""Lucent (torch-lucent 0.1.8) against ours: parameterisations, objectives, rotation, a whole render.

The same spectrum goes into Lucent's ``param.image`` and ours (Lucent's layout
``[b, c, h, w//2+1(+1), 2]``, ours ``[b, h, w//2+1(+1), c, 2]``); objectives see the same
activations (NCHW there, NHWC here). The whole render starts both from one spectrum,
without random transforms, on the same converted VGG-11 weights, at a ReLU (Lucent
hooks a module's output, which torchvision's in-place ReLUs overwrite: its objective
on a convolution followed by ``ReLU(inplace=True)`` reads the rectified map). Tolerances: 1e-5
absolute on images in [0, 1] (also after five Adam steps; the largest difference seen
was 1.1e-6) and on objective values, 1e-4 for rotation (bilinear weights computed in
two orders).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import converters
from jaxplain.optimization import objectives as O
from jaxplain.optimization import param, render_vis
from jaxplain.optimization import transforms as T
from tests.parity._torch import nchw, nhwc, randomised

lucent_param = pytest.importorskip("lucent.optvis.param")
lucent_objectives = pytest.importorskip("lucent.optvis.objectives")


def _spectrum(batch: int, h: int, w: int, scale: float = 0.3, seed: int = 0) -> np.ndarray:
    """``[b, h, w//2+1(+1), c, 2]`` normal spectrum (ours); Lucent's is its transpose."""
    columns = w // 2 + 1 + w % 2
    return (scale * np.random.default_rng(seed).standard_normal((batch, h, columns, 3, 2))).astype(np.float32)


def _lucent_image(spectrum: np.ndarray, **kwargs) -> np.ndarray:
    params, image_f = lucent_param.image(**kwargs)
    with torch.no_grad():
        params[0].copy_(torch.from_numpy(np.ascontiguousarray(spectrum)))
    return nhwc(image_f())


@pytest.mark.parametrize("h, w", [(8, 8), (7, 9), (12, 5)])
def test_fft_decorrelated_image_equals_lucent(h, w):
    spectrum = _spectrum(2, h, w)
    theirs = _lucent_image(spectrum.transpose(0, 3, 1, 2, 4), w=w, h=h, batch=2)
    ours = param.image(w, h, batch=2)(jnp.asarray(spectrum))
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert np.ptp(theirs) > 0.1


def test_fft_without_decorrelation_equals_lucent():
    spectrum = _spectrum(1, 6, 10, seed=1)
    theirs = _lucent_image(spectrum.transpose(0, 3, 1, 2, 4), w=10, h=6, decorrelate=False)
    np.testing.assert_allclose(param.image(10, 6, decorrelate=False)(jnp.asarray(spectrum)), theirs, atol=1e-5)


def test_pixel_decorrelated_image_equals_lucent():
    pixels = np.random.default_rng(2).standard_normal((2, 5, 6, 3)).astype(np.float32)
    theirs = _lucent_image(pixels.transpose(0, 3, 1, 2), w=6, h=5, batch=2, fft=False)
    np.testing.assert_allclose(param.image(6, 5, batch=2, fft=False)(jnp.asarray(pixels)), theirs, atol=1e-5)


def test_frequencies_equal_lucent():
    from lucent.optvis.param.spatial import rfft2d_freqs

    for h, w in ((8, 8), (7, 9), (12, 5)):
        np.testing.assert_allclose(param.rfft2d_freqs(h, w), rfft2d_freqs(h, w))


def test_objectives_equal_lucent():
    rng = np.random.default_rng(3)
    acts = rng.standard_normal((3, 5, 5, 6)).astype(np.float32)
    direction = rng.standard_normal(6).astype(np.float32)
    ours_acts = {"a": jnp.asarray(acts)}
    theirs_acts = {"a": nchw(acts)}

    def lucent_value(objective):
        return float(objective(lambda name: theirs_acts[name]))

    pairs = [
        (O.channel("a", 2), lucent_objectives.channel("a", 2)),
        (O.channel("a", 4, batch=1), lucent_objectives.channel("a", 4, batch=1)),
        (O.neuron("a", 3), lucent_objectives.neuron("a", 3)),
        (O.neuron("a", 3, x=1, y=4), lucent_objectives.neuron("a", 3, x=1, y=4)),
        (O.direction("a", direction), lucent_objectives.direction("a", torch.from_numpy(direction))),
        (O.diversity("a"), lucent_objectives.diversity("a")),
        (
            2 * O.channel("a", 0) - O.neuron("a", 1) / 4 + 0.5,
            2 * lucent_objectives.channel("a", 0) - lucent_objectives.neuron("a", 1) / 4 + 0.5,
        ),
    ]
    for ours, theirs in pairs:
        np.testing.assert_allclose(float(ours(ours_acts)), lucent_value(theirs), atol=1e-5, err_msg=repr(ours))


def test_rotation_equals_kornia():
    kornia = pytest.importorskip("kornia")
    images = np.random.default_rng(4).uniform(size=(2, 11, 11, 3)).astype(np.float32)
    for degrees in (7.0, -10.0, 90.0):
        tensor = nchw(images)
        center = torch.tensor([[5.0, 5.0]] * 2)
        matrix = kornia.get_rotation_matrix2d(center, torch.full((2,), degrees), torch.ones(2, 2))
        theirs = nhwc(kornia.warp_affine(tensor, matrix, dsize=(11, 11)))
        ours = T.rotate(jnp.asarray(images), jnp.deg2rad(degrees))
        np.testing.assert_allclose(ours, theirs, atol=1e-4, err_msg=f"{degrees} degrees")


SIZE = 32


@dataclass(frozen=True)
class FixedStart(param.ImageParam):
    """Lucent's FFT image, started from :data:`START` instead of a random draw."""

    def init(self, key):
        return jnp.asarray(START)


START = _spectrum(2, SIZE, SIZE, scale=0.01, seed=5)


@pytest.mark.parametrize("route", ["zoo", "export"])
def test_render_without_transforms_equals_lucent(route):
    """On the zoo's VGG-11 and on the same weights through torch.export, whose layers keep torch's
    NCHW layout (objectives must read channels on axis 1 there)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from lucent.optvis import render
    from converters.export import export_model

    torch_model = randomised("vgg11", num_classes=10)
    if route == "zoo":
        model = converters.from_torch(torch_model, input_shape=(1, SIZE, SIZE, 3))
    else:
        model = export_model(torch_model, (1, SIZE, SIZE, 3))
        assert model.layer_channel_axis == 1

    def lucent_param_f():
        params, image_f = lucent_param.image(SIZE, batch=2)
        with torch.no_grad():
            params[0].copy_(torch.from_numpy(np.ascontiguousarray(START.transpose(0, 3, 1, 2, 4))))
        return params, image_f

    objective = lucent_objectives.channel("features_4", 5, batch=0) - lucent_objectives.channel(
        "features_4", 9, batch=1
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = render.render_vis(
            torch_model,
            objective,
            lucent_param_f,
            transforms=[],
            thresholds=(1, 5),
            fixed_image_size=SIZE,
            show_image=False,
            progress=False,
        )
    ours = render_vis(
        model,
        O.channel("features.4", 5, batch=0) - O.channel("features.4", 9, batch=1),
        key=jax.random.PRNGKey(0),
        param_f=FixedStart(w=SIZE, h=SIZE, batch=2),
        transforms=(),
        thresholds=(1, 5),
        fixed_image_size=SIZE,
    )
    for step, (a, b) in enumerate(zip(ours, theirs)):
        np.testing.assert_allclose(a, b, atol=1e-5, err_msg=f"threshold {step}")
    assert np.abs(theirs[1] - theirs[0]).max() > 0.01
