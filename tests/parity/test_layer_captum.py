"""Layer and CAM methods against Captum on the same converted weights.

ResNet-18 and VGG11 (seeded random weights, randomised BatchNorm state), 32x48 inputs,
one target per example, an inner block (``layer3.1.conv2``) and a stage (``layer4``).
Tolerance: max abs error <= 1e-3 x the reference's max abs value. Score-CAM and the
layer-activation guided backprop have no Captum counterpart: they are checked against
independent torch references written here from the papers / the peer's algorithm.
"""

from __future__ import annotations

import captum.attr as ca
import jax
import numpy as np
import pytest
import torch

import jaxplain as jx
from tests.parity._torch import assert_close, converted, nchw, nhwc
from tests.parity.test_gradient_captum import replay_normal

TARGETS = np.array([3, 7])
LAYERS = {"resnet18": ["layer4", "layer3.1.conv2"], "vgg11": ["features.8", "features.18"]}
CASES = [(arch, layer) for arch, layers in LAYERS.items() for layer in layers]


@pytest.fixture(scope="module")
def models():
    return {arch: converted(arch, seed=1) for arch in LAYERS}


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(3).normal(size=(2, 32, 48, 3)).astype(np.float32)


def captum_layer(explainer_class, torch_model, layer, images, **kwargs):
    explainer = explainer_class(torch_model, torch_model.get_submodule(layer))
    target = kwargs.pop("target", torch.from_numpy(TARGETS))
    out = explainer.attribute(nchw(images), target=target, **kwargs) if target is not None else explainer.attribute(nchw(images), **kwargs)
    return out


def to_nhwc(tensor):
    return nhwc(tensor) if tensor.dim() == 4 else tensor.detach().numpy()


@pytest.mark.parametrize("arch,layer", CASES)
@pytest.mark.parametrize("relu", [False, True])
def test_layer_gradcam(models, images, arch, layer, relu):
    torch_model, model = models[arch]
    ours = jx.layer_gradcam(model, images, TARGETS, layer=layer, relu_attributions=relu)
    assert_close(ours, to_nhwc(captum_layer(ca.LayerGradCam, torch_model, layer, images, relu_attributions=relu)))


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_layer_gradcam_upsampled_like_captum_interpolate(models, images, mode):
    torch_model, model = models["resnet18"]
    theirs = captum_layer(ca.LayerGradCam, torch_model, "layer3.1.conv2", images)
    theirs = ca.LayerAttribution.interpolate(theirs, (32, 48), interpolate_mode=mode)
    ours = jx.layer_gradcam(model, images, TARGETS, layer="layer3.1.conv2", upsample=mode)
    assert_close(ours, to_nhwc(theirs))


def test_layer_gradcam_to_layer_input(models, images):
    torch_model, model = models["resnet18"]
    ours = jx.layer_gradcam(model, images, TARGETS, layer="layer3.1.conv2", attribute_to_layer_input=True)
    theirs = captum_layer(ca.LayerGradCam, torch_model, "layer3.1.conv2", images, attribute_to_layer_input=True)
    assert_close(ours, to_nhwc(theirs))


@pytest.mark.parametrize("arch,layer", CASES)
def test_guided_gradcam(models, images, arch, layer):
    torch_model, model = models[arch]
    explainer = ca.GuidedGradCam(torch_model, torch_model.get_submodule(layer))
    theirs = explainer.attribute(nchw(images).requires_grad_(), target=torch.from_numpy(TARGETS))
    assert_close(jx.guided_gradcam(model, images, TARGETS, layer=layer), nhwc(theirs))


@pytest.mark.parametrize("arch,layer", CASES)
def test_layer_activation_and_gradient_x_activation(models, images, arch, layer):
    torch_model, model = models[arch]
    assert_close(
        jx.layer_activation(model, images, layer=layer),
        to_nhwc(captum_layer(ca.LayerActivation, torch_model, layer, images, target=None)),
    )
    assert_close(
        jx.layer_gradient_x_activation(model, images, TARGETS, layer=layer),
        to_nhwc(captum_layer(ca.LayerGradientXActivation, torch_model, layer, images)),
    )


@pytest.mark.parametrize("arch,layer", CASES)
def test_internal_influence_and_conductance(models, images, arch, layer):
    torch_model, model = models[arch]
    baseline = 0.2 * np.random.default_rng(4).normal(size=images.shape).astype(np.float32)
    for ours_fn, theirs_class in ((jx.internal_influence, ca.InternalInfluence), (jx.layer_conductance, ca.LayerConductance)):
        theirs = to_nhwc(captum_layer(theirs_class, torch_model, layer, images, baselines=nchw(baseline), n_steps=8))
        for batch_size in (None, 3):  # unchunked at layer4 caught a jaxlib CPU miscompile (see jaxplain/_xla.py)
            assert_close(ours_fn(model, images, TARGETS, layer=layer, baselines=baseline, n_steps=8, batch_size=batch_size), theirs)


def test_layer_gradient_shap(models, images, monkeypatch):
    torch_model, model = models["resnet18"]
    key, samples, stdev, layer = jax.random.PRNGKey(8), 3, 0.1, "layer3.1.conv2"
    distribution = np.random.default_rng(5).normal(size=(3,) + images.shape[1:]).astype(np.float32)
    ours = jx.layer_gradient_shap(model, images, TARGETS, layer=layer, baselines=distribution, key=key, n_samples=samples, stdevs=stdev)
    batch = images.shape[0]
    picks, noises, alphas = [], [], []
    for sample_key in jax.random.split(key, samples):
        pick_key, noise_key, alpha_key = jax.random.split(sample_key, 3)
        picks.append(np.asarray(jax.random.randint(pick_key, (batch,), 0, distribution.shape[0])))
        noises.append(stdev * np.asarray(jax.random.normal(noise_key, images.shape)))
        alphas.append(np.asarray(jax.random.uniform(alpha_key, (batch, 1, 1, 1))).reshape(batch))
    row_order = lambda per_sample: np.stack(per_sample, axis=1).reshape(-1)
    replay_normal(monkeypatch, np.stack(noises))
    monkeypatch.setattr(np.random, "choice", lambda n, size: row_order(picks))
    monkeypatch.setattr(np.random, "uniform", lambda low, high, size: row_order(alphas).astype(np.float64))
    theirs = captum_layer(ca.LayerGradientShap, torch_model, layer, images, baselines=nchw(distribution), n_samples=samples, stdevs=stdev)
    assert_close(ours, to_nhwc(theirs))


def score_cam_reference(torch_model, layer, images, targets):
    """Score-CAM as its authors' code computes it, one image and one channel at a time."""
    captured = {}
    handle = torch_model.get_submodule(layer).register_forward_hook(lambda m, i, o: captured.update(a=o.detach()))
    maps = []
    with torch.no_grad():
        for image, target in zip(nchw(images), targets):
            image = image[None]
            torch_model(image)
            activations = captured["a"]
            total = torch.zeros(1, 1, *image.shape[2:])
            for k in range(activations.shape[1]):
                upsampled = torch.nn.functional.interpolate(activations[:, k : k + 1], size=image.shape[2:], mode="bilinear", align_corners=False)
                if upsampled.max() == upsampled.min():
                    continue
                mask = (upsampled - upsampled.min()) / (upsampled.max() - upsampled.min())
                score = torch.softmax(torch_model(image * mask), dim=1)[0, target]
                total += score * upsampled
            total = torch.relu(total)
            maps.append((total - total.min()) / (total.max() - total.min()))
    handle.remove()
    return nhwc(torch.cat(maps))


@pytest.mark.parametrize("arch,layer", [("resnet18", "layer2")])
def test_score_cam_against_the_authors_algorithm(models, images, arch, layer):
    torch_model, model = models[arch]
    ours = jx.score_cam(model, images, TARGETS, layer=layer, batch_size=64)
    assert_close(ours, score_cam_reference(torch_model, layer, images, TARGETS))


def test_layer_activation_guided_backprop_against_guided_hooks(models, images):
    torch_model, model = models["vgg11"]
    layer, channel = "features.13", 5

    class ChannelObjective(torch.nn.Module):
        """sum |A[:, channel]| of one layer, as an [N, 1] output Captum can explain."""

        def __init__(self):
            super().__init__()
            self.net = torch_model

        def forward(self, x):
            captured = {}
            handle = self.net.get_submodule(layer).register_forward_hook(lambda m, i, o: captured.update(a=o))
            self.net(x)
            handle.remove()
            return captured["a"][:, channel].abs().sum(dim=(1, 2))[:, None]

    theirs = ca.GuidedBackprop(ChannelObjective()).attribute(nchw(images).requires_grad_(), target=0)
    assert_close(jx.layer_activation_guided_backprop(model, images, channel, layer=layer), nhwc(theirs))
