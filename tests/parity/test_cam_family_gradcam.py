"""pytorch-grad-cam's CAM family and ROAD against grad-cam 1.5.7 on the same converted weights.

ResNet-18 and VGG11-BN (seeded random weights, randomised BatchNorm state), 48x64 inputs
(non-square), one ``ClassifierOutputTarget`` per image, layers with a 3x4 map (``layer3``,
``features.27``). Tolerance: max abs error <= 1e-3 x the reference's max abs value. Every
method's raw map is compared on ResNet-18 with the library's own ``get_cam_image`` on the
activations and gradients its hooks recorded, and its final map on VGG11-BN with its
``__call__`` (Ablation-CAM's, which has no raw map there, on ResNet-18); FullGrad's final
map on both; the options on ResNet-18. ROAD's noise is drawn here and fed
to both sides. The axioms at the end are worked out by hand on a linear head.
"""

from __future__ import annotations

import cv2
import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from pytorch_grad_cam import (
    AblationCAM,
    EigenCAM,
    EigenGradCAM,
    FullGrad,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from pytorch_grad_cam.metrics import road as peer_road
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

import jaxplain as jx
from jaxplain.attribution.cam_family import cv2_resize
from jaxplain.nets.layers import AdaptiveAvgPool2d, Flatten, Linear, ReLU
from tests.parity._torch import assert_close, converted, nchw
from tests.tiny import tiny_inputs, tiny_model

TARGETS = np.array([3, 7])
LAYER = {"resnet18": "layer3", "vgg11_bn": "features.27"}
METHODS = {
    "grad_cam_plus_plus": GradCAMPlusPlus,
    "xgrad_cam": XGradCAM,
    "hires_cam": HiResCAM,
    "grad_cam_element_wise": GradCAMElementWise,
    "layer_cam": LayerCAM,
    "eigen_cam": EigenCAM,
    "eigen_grad_cam": EigenGradCAM,
    "ablation_cam": AblationCAM,
}


@pytest.fixture(scope="module")
def models():
    torch.set_num_threads(1)
    return {arch: converted(arch, seed=0) for arch in LAYER}


@pytest.fixture(scope="module")
def tiny():
    return tiny_model(), tiny_inputs()


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).standard_normal((2, 48, 64, 3)).astype(np.float32)


def peer_targets():
    return [ClassifierOutputTarget(int(t)) for t in TARGETS]


def peer_cam(cls, torch_model, layers, images, **options):
    """The peer's final map and the explainer (its hooks keep the last pass's tensors)."""
    explainer = cls(torch_model, [torch_model.get_submodule(name) for name in layers])
    return explainer(nchw(images), peer_targets(), **options), explainer


def test_cv2_resize_matches_opencv():
    rng = np.random.default_rng(5)
    for (h, w), (height, width) in [((2, 2), (48, 64)), ((3, 4), (48, 64)), ((7, 5), (13, 29)), ((48, 64), (6, 8))]:
        maps = rng.random((h, w)).astype(np.float32)
        theirs = cv2.resize(maps, (width, height))
        ours = np.asarray(cv2_resize(jnp.asarray(maps)[None, ..., None], (height, width)))[0, ..., 0]
        np.testing.assert_allclose(ours, theirs, atol=1e-6)


@pytest.mark.parametrize("method", [m for m in METHODS if m != "ablation_cam"])
def test_raw_maps_resnet18(models, images, method):
    torch_model, model = models["resnet18"]
    _, explainer = peer_cam(METHODS[method], torch_model, ["layer3"], images)
    activation = explainer.activations_and_grads.activations[0].numpy()
    gradient = None if method == "eigen_cam" else explainer.activations_and_grads.gradients[0].numpy()
    theirs = explainer.get_cam_image(nchw(images), torch_model.layer3, peer_targets(), activation, gradient, False)
    assert_close(np.asarray(getattr(jx, method)(model, images, TARGETS, layer="layer3"))[..., 0], theirs)


FINAL_CASES = [("resnet18", "ablation_cam")] + [("vgg11_bn", m) for m in METHODS if m != "ablation_cam"]


@pytest.mark.parametrize("arch, method", FINAL_CASES)
def test_final_maps(models, images, arch, method):
    torch_model, model = models[arch]
    theirs, _ = peer_cam(METHODS[method], torch_model, [LAYER[arch]], images)
    ours = getattr(jx, method)(model, images, TARGETS, layer=LAYER[arch], postprocess="pytorch_grad_cam")
    assert_close(np.asarray(ours)[..., 0], theirs)


def test_ablation_cam_ratio_channels_to_ablate(models, images, monkeypatch):
    """Only the ranked top and bottom 30% of the channels ablated, the rest weighted 0.

    Many channels tie (every ReLU channel that is 0 on the pixels outside the mask scores
    exactly 1), and NumPy's default argsort orders ties in an implementation-defined way; the
    peer's sort is made stable here, the order jaxplain documents (ties by channel index)."""
    torch_model, model = models["resnet18"]
    ours = jx.ablation_cam(model, images, TARGETS, layer="layer3", ratio_channels_to_ablate=0.3,
                           postprocess="pytorch_grad_cam")
    argsort = np.argsort
    monkeypatch.setattr(np, "argsort", lambda a, **options: argsort(a, kind="stable"))
    explainer = AblationCAM(torch_model, [torch_model.layer3], ratio_channels_to_ablate=0.3)
    theirs = explainer(nchw(images), peer_targets())
    monkeypatch.undo()
    assert_close(np.asarray(ours)[..., 0], theirs)
    with pytest.raises(ValueError, match="ablated twice"):
        jx.ablation_cam(model, images, TARGETS, layer="layer3", ratio_channels_to_ablate=0.75)


def test_score_cam_pytorch_grad_cam(models, images):
    """ScoreCAM's final map; 256 channels in chunks of 96 (the last one padded)."""
    torch_model, model = models["resnet18"]
    theirs, _ = peer_cam(ScoreCAM, torch_model, ["layer3"], images)
    ours = jx.score_cam(model, images, TARGETS, layer="layer3", flavour="pytorch_grad_cam", batch_size=96,
                        postprocess="pytorch_grad_cam")
    assert_close(np.asarray(ours)[..., 0], theirs)
    with pytest.raises(ValueError, match="flavour='pytorch_grad_cam'"):
        jx.score_cam(model, images, TARGETS, layer="layer3", postprocess="pytorch_grad_cam")


@pytest.mark.parametrize("arch", list(LAYER))
def test_full_grad(models, images, arch):
    torch_model, model = models[arch]
    theirs = FullGrad(torch_model, [])(nchw(images), peer_targets())
    assert_close(np.asarray(jx.full_grad(model, images, TARGETS, postprocess="pytorch_grad_cam"))[..., 0], theirs)


def test_two_layers_aug_smooth_eigen_smooth(models, images):
    torch_model, model = models["resnet18"]
    theirs, _ = peer_cam(XGradCAM, torch_model, ["layer3", "layer4"], images, eigen_smooth=True)
    ours = jx.xgrad_cam(model, images, TARGETS, layer=("layer3", "layer4"), postprocess="pytorch_grad_cam",
                        eigen_smooth=True)
    assert_close(np.asarray(ours)[..., 0], theirs)
    theirs, _ = peer_cam(LayerCAM, torch_model, ["layer3"], images, aug_smooth=True)
    ours = jx.layer_cam(model, images, TARGETS, layer="layer3", postprocess="pytorch_grad_cam", aug_smooth=True)
    assert_close(np.asarray(ours)[..., 0], theirs)


def test_raw_maps_of_two_layers_are_a_tuple(tiny):
    maps = jx.hires_cam(*tiny, 1, layer=("relu1", "relu2"), upsample="bilinear")
    assert isinstance(maps, tuple) and [m.shape for m in maps] == [(3, 12, 10, 1)] * 2


def _replay_noise(monkeypatch, draws):
    """Make the peer's ``NoisyLinearImputer`` add ``draws`` (``[H, W, C]`` each, in call order) where it imputes."""
    call = peer_road.NoisyLinearImputer.__call__
    randn_like = torch.randn_like

    def replayed(self, image, mask):
        noise = draws.pop(0).transpose(2, 0, 1).reshape(image.shape[0], -1)
        imputed = np.flatnonzero(mask.reshape(-1).numpy() == 0)
        monkeypatch.setattr(torch, "randn_like", lambda like: torch.from_numpy(np.ascontiguousarray(noise[:, imputed])))
        try:
            return call(self, image, mask)
        finally:
            monkeypatch.setattr(torch, "randn_like", randn_like)

    monkeypatch.setattr(peer_road.NoisyLinearImputer, "__call__", replayed)


def test_road(models, images, monkeypatch):
    torch_model, model = models["resnet18"]
    rng = np.random.default_rng(4)
    cams = np.stack([cv2.resize(rng.random((3, 4)).astype(np.float32), (64, 48)) for _ in images])
    percentiles = (10, 50, 90)
    noise = np.random.default_rng(1).standard_normal((2, len(percentiles)) + images.shape).astype(np.float32)
    # ROADCombined runs LeRF (our index 1) first, then MoRF (index 0); images in order within a percentile.
    draws = [noise[order, p, n] for order in (1, 0) for p in range(len(percentiles)) for n in range(len(images))]
    _replay_noise(monkeypatch, draws)
    theirs = peer_road.ROADCombined(percentiles=list(percentiles))(nchw(images), cams, peer_targets(), torch_model)
    assert not draws
    ours = jx.metrics.road(model, images, cams, TARGETS, order="combined", percentiles=percentiles, noise=noise)
    assert_close(ours, theirs)


def test_noisy_linear_imputation_matches_spsolve(images):
    keep = np.random.default_rng(2).random(images.shape[:3]) < 0.3
    ours = np.asarray(jx.metrics.noisy_linear_imputation(jnp.asarray(images), jnp.asarray(keep)))
    imputer = peer_road.NoisyLinearImputer(noise=0.0)
    for n in range(len(images)):
        image, mask = torch.from_numpy(images[n].transpose(2, 0, 1).copy()), torch.from_numpy(keep[n].astype(np.float32))
        theirs = imputer(image, mask)
        assert_close(ours[n], theirs.numpy().transpose(1, 2, 0))


# --------------------------------------------------------------------------------------------
# axioms, by hand


class ReLUHead(nn.Module):
    """``relu(x)`` (the layer "act"), global average pool, linear head: ``y = W^T mean_hw relu(x) + b``."""

    @nn.compact
    def __call__(self, x):
        x = ReLU(name="act")(x)
        return Linear(3, name="fc")(Flatten(name="flatten")(AdaptiveAvgPool2d(1, name="pool")(x)))


def test_grad_cam_plus_plus_on_a_linear_head():
    """With ``y_t = sum_k W_kt mean_hw A_k + b``, ``G_k = W_kt / hw`` everywhere, so
    ``a_k = 1 / (2 + S_k G_k)`` (``S_k = sum_hw A_k``) and Grad-CAM++'s weight is
    ``hw relu(G_k) / (2 + S_k G_k)``. When ``S_k G_k -> 0`` (second-order terms vanish) it is
    ``hw / 2`` times Grad-CAM's ``mean_hw G_k = G_k`` for ``W_kt > 0``: the same map up to scale."""
    rng = np.random.default_rng(3)
    model = jx.init_model(ReLUHead(), (1, 4, 6, 5))
    weights = rng.uniform(0.5, 1.5, (5, 3)).astype(np.float32)
    params = {**model.variables["params"], "fc": {"kernel": jnp.asarray(weights), "bias": jnp.zeros(3)}}
    model = model.replace_variables({**model.variables, "params": params})
    x = rng.standard_normal((2, 4, 6, 5)).astype(np.float32)
    target = np.array([0, 2])
    activation = np.maximum(x, 0)
    g = weights[:, target].T[:, None, None, :] / 24
    total = activation.sum(axis=(1, 2), keepdims=True)
    by_hand = (24 * g**3 / (2 * g**2 + total * g**3 + 1e-6) * activation).sum(-1, keepdims=True)
    np.testing.assert_allclose(np.asarray(jx.grad_cam_plus_plus(model, x, target, layer="act")), by_hand, rtol=1e-5)
    small = 1e-5 * x
    plus_plus = np.asarray(jx.grad_cam_plus_plus(model, small, target, layer="act"))
    grad_cam = (g * np.maximum(small, 0)).sum(-1, keepdims=True)
    np.testing.assert_allclose(plus_plus, 12 * grad_cam, rtol=1e-3)  # eps 1e-6 against G^2 ~ 2e-3
    np.testing.assert_allclose(
        np.asarray(jx.layer_gradcam(model, small, target, layer="act")), grad_cam, rtol=1e-4
    )


def test_ablation_cam_chunked_equals_unchunked(tiny):
    model, x = tiny
    whole = jx.ablation_cam(model, x, 1, layer="relu2", batch_size=None)
    chunked = jx.ablation_cam(model, x, 1, layer="relu2", batch_size=4)
    np.testing.assert_allclose(np.asarray(chunked), np.asarray(whole), rtol=1e-5, atol=1e-6)


def test_bad_options(tiny):
    model, x = tiny
    with pytest.raises(ValueError, match="postprocess"):
        jx.layer_cam(model, x, 1, layer="relu2", postprocess="opencv")
    with pytest.raises(ValueError, match="upsample"):
        jx.layer_cam(model, x, 1, layer="relu2", postprocess="pytorch_grad_cam", upsample="bilinear")
    with pytest.raises(ValueError, match="batch_size"):
        jx.ablation_cam(model, x, 1, layer="relu2", batch_size=0)
    with pytest.raises(ValueError, match="order"):
        jx.metrics.road(model, x, jnp.zeros(x.shape[:3]), 1, order="both")
    with pytest.raises(ValueError, match="key"):
        jx.metrics.road(model, x, jnp.zeros(x.shape[:3]), 1)
