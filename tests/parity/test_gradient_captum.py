"""Gradient family against Captum on the same converted weights.

ResNet-18 and VGG11-BN with seeded random weights and randomised BatchNorm state,
non-square 32x48 inputs, a different target per example. Tolerance: max abs error
<= 1e-3 x the reference's max abs value. Stochastic methods get the same random
draws on both sides: jaxplain's documented draws are replayed into Captum by
patching ``torch.normal`` and ``numpy.random``.

Path methods on random paths (Riemann IG with non-zero baselines, noise-tunnelled IG,
GradientSHAP) run on VGG11-BN in float64 on both sides (:func:`in_float64`): at 32x48
some of its max-pool windows hold near-ties, and float32 rounding differences between
oneDNN and XLA route a gradient to another element at a few path points (up to 1.8% of
the map's scale at single elements). In float64 both sides resolve the ties alike.
"""

from __future__ import annotations

import contextlib

import captum.attr as ca
import jax
import numpy as np
import pytest
import torch

import jaxplain as jx
from jaxplain.nets.vgg import VGG
from tests.parity._torch import assert_close, converted, nchw, nhwc
from tests.parity._torch import in_float64 as float64

ARCHS = ["resnet18", "vgg11_bn"]
TARGETS = np.array([3, 7])


@pytest.fixture(scope="module", params=ARCHS)
def pair(request):
    return converted(request.param, seed=0)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).normal(size=(2, 32, 48, 3)).astype(np.float32)


@contextlib.contextmanager
def in_float64(pair, images, every_model=False):
    """The pair's weights and the images in float64 (:func:`tests.parity._torch.in_float64`), for VGG11-BN only
    unless ``every_model``."""
    torch_model, model = pair
    if not every_model and not isinstance(model.module, VGG):
        yield torch_model, model, images
        return
    with float64(torch_model, model, images) as doubled:
        yield doubled


def captum_attr(explainer, images, **kwargs):
    inputs = nchw(images).requires_grad_()
    out = explainer.attribute(inputs, target=torch.from_numpy(TARGETS), **kwargs)
    if isinstance(out, tuple):
        return nhwc(out[0]), out[1].detach().numpy()
    return nhwc(out)


@pytest.mark.parametrize("abs_value", [True, False])
def test_saliency(pair, images, abs_value):
    torch_model, model = pair
    ours = jx.saliency(model, images, TARGETS, abs=abs_value)
    assert_close(ours, captum_attr(ca.Saliency(torch_model), images, abs=abs_value))


def test_input_x_gradient(pair, images):
    torch_model, model = pair
    assert_close(jx.input_x_gradient(model, images, TARGETS), captum_attr(ca.InputXGradient(torch_model), images))


@pytest.mark.parametrize(
    "method,baseline_kind",
    [("gausslegendre", "none"), ("riemann_trapezoid_captum", "channel"), ("riemann_left", "full"), ("riemann_middle", "scalar")],
)
def test_integrated_gradients(pair, images, method, baseline_kind):
    """In float64 on both sides: in float32, 16 steps through ResNet-18 differ from Captum by 1.4e-3 of the
    map's scale on an AMD EPYC (1e-3 on the Xeon this was written on), rounding alone."""
    with in_float64(pair, images, every_model=True) as (torch_model, model, images):
        integrated_gradients_case(torch_model, model, images, method, baseline_kind)


def integrated_gradients_case(torch_model, model, images, method, baseline_kind):
    rng = np.random.default_rng(1)
    ours_baseline, theirs_baseline = {
        "none": (None, None),
        "scalar": (0.3, 0.3),
        "channel": ((b := rng.normal(size=3).astype(images.dtype)), nchw(np.broadcast_to(b, images.shape))),
        "full": ((f := rng.normal(size=images.shape).astype(images.dtype)), nchw(f)),
    }[baseline_kind]
    ours, our_delta = jx.integrated_gradients(
        model, images, TARGETS, baselines=ours_baseline, n_steps=16, method=method, return_convergence_delta=True
    )
    theirs, their_delta = captum_attr(
        ca.IntegratedGradients(torch_model),
        images,
        baselines=theirs_baseline,
        n_steps=16,
        method=method.removesuffix("_captum"),
        return_convergence_delta=True,
    )
    assert_close(ours, theirs)
    np.testing.assert_allclose(our_delta, their_delta, atol=1e-3 * np.abs(theirs).sum(axis=(1, 2, 3)).max())


def test_guided_backprop(pair, images):
    torch_model, model = pair
    assert_close(jx.guided_backprop(model, images, TARGETS), captum_attr(ca.GuidedBackprop(torch_model), images))


def test_deconvolution(pair, images):
    torch_model, model = pair
    assert_close(jx.deconvolution(model, images, TARGETS), captum_attr(ca.Deconvolution(torch_model), images))


def replay_normal(monkeypatch, noise_per_sample: np.ndarray) -> None:
    """Make Captum's ``torch.normal`` return jaxplain's noise, laid out as Captum repeats inputs."""
    samples, batch = noise_per_sample.shape[:2]
    rows = np.stack([nchw(noise_per_sample[s]).numpy() for s in range(samples)], axis=1)
    rows = torch.from_numpy(rows.reshape((batch * samples,) + rows.shape[2:]))

    def fake_normal(mean, std, *args, **kwargs):
        assert tuple(std.shape) == tuple(rows.shape)
        return rows.clone()

    monkeypatch.setattr(torch, "normal", fake_normal)


def noise_tunnel_draws(key, samples: int, shape, stdev: float) -> np.ndarray:
    """jaxplain's documented noise: sample i uses split(split(key, n)[i])[0]."""
    keys = jax.random.split(key, samples)
    return np.stack([stdev * np.asarray(jax.random.normal(jax.random.split(k)[0], shape)) for k in keys])


@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
def test_noise_tunnel_saliency(pair, images, nt_type, monkeypatch):
    torch_model, model = pair
    key, samples, stdev = jax.random.PRNGKey(5), 4, 0.3
    ours = jx.noise_tunnel(jx.saliency)(
        model, images, TARGETS, key=key, nt_type=nt_type, nt_samples=samples, stdevs=stdev, nt_samples_batch_size=3
    )
    replay_normal(monkeypatch, noise_tunnel_draws(key, samples, images.shape, stdev))
    theirs = captum_attr(ca.NoiseTunnel(ca.Saliency(torch_model)), images, nt_type=nt_type, nt_samples=samples, stdevs=stdev)
    assert_close(ours, theirs)


def test_noise_tunnel_integrated_gradients(pair, images, monkeypatch):
    with in_float64(pair, images) as (torch_model, model, images):
        noise_tunnel_integrated_gradients_case(torch_model, model, images, monkeypatch)


def noise_tunnel_integrated_gradients_case(torch_model, model, images, monkeypatch):
    key, samples, stdev = jax.random.PRNGKey(6), 3, 0.2
    ours = jx.noise_tunnel(jx.integrated_gradients)(
        model, images, TARGETS, key=key, nt_samples=samples, stdevs=stdev, n_steps=8, nt_type="smoothgrad"
    )
    replay_normal(monkeypatch, noise_tunnel_draws(key, samples, images.shape, stdev))
    theirs = captum_attr(
        ca.NoiseTunnel(ca.IntegratedGradients(torch_model)), images, nt_type="smoothgrad", nt_samples=samples, stdevs=stdev, n_steps=8
    )
    assert_close(ours, theirs)


def test_gradient_shap(pair, images, monkeypatch):
    with in_float64(pair, images) as (torch_model, model, images):
        gradient_shap_case(torch_model, model, images, monkeypatch)


def gradient_shap_case(torch_model, model, images, monkeypatch):
    key, samples, stdev = jax.random.PRNGKey(7), 3, 0.1
    distribution = np.random.default_rng(2).normal(size=(4,) + images.shape[1:]).astype(images.dtype)
    ours = jx.gradient_shap(model, images, TARGETS, baselines=distribution, key=key, n_samples=samples, stdevs=stdev)

    batch = images.shape[0]
    picks, noises, alphas = [], [], []
    for sample_key in jax.random.split(key, samples):
        pick_key, noise_key, alpha_key = jax.random.split(sample_key, 3)
        picks.append(np.asarray(jax.random.randint(pick_key, (batch,), 0, distribution.shape[0])))
        noises.append(stdev * np.asarray(jax.random.normal(noise_key, images.shape)))
        alphas.append(np.asarray(jax.random.uniform(alpha_key, (batch, 1, 1, 1))).reshape(batch))
    row_order = lambda per_sample: np.stack(per_sample, axis=1).reshape(-1)  # row = example * samples + sample
    replay_normal(monkeypatch, np.stack(noises))
    monkeypatch.setattr(np.random, "choice", lambda n, size: row_order(picks))
    monkeypatch.setattr(np.random, "uniform", lambda low, high, size: row_order(alphas).astype(np.float64))
    theirs = captum_attr(
        ca.GradientShap(torch_model), images, baselines=nchw(distribution), n_samples=samples, stdevs=stdev
    )
    assert_close(ours, theirs)
