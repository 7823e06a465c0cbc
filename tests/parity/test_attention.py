"""Attention rollout, gradient-weighted rollout and token-map CAMs on converted torchvision ViT and Swin.

A torchvision ``VisionTransformer`` (32 px, 8 px patches, two layers of two heads) and a
one-stage ``SwinTransformer``, seeded random weights (the zero-initialised head and class
token drawn at random), three different images. The references:

- the attention probabilities torch computes, ``softmax(Q K^T / sqrt(d))`` from each
  ``nn.MultiheadAttention``'s own weights in a torch copy of the model whose logits must equal
  the original's; attention rollout on them written out in numpy (Abnar & Zuidema; the
  jacobgil/vit-explain discard and normalisation for ``flavour="vit_explain"``);
- Chefer et al.'s generic rollout from torch autograd's gradients of those probabilities;
- Chefer et al.'s CVPR 2021 transformer attribution: their relevance propagation written out in
  torch for torchvision's encoder block (LRP-alpha1beta0 without bias on every linear layer,
  LayerNorm, GELU and softmax passing relevance, the normalised residual rule, products split in
  half), one image at a time as the authors' code runs, in float64;
- pytorch-grad-cam 1.5.7's ``GradCAM`` and ``GradCAMPlusPlus`` with the documented ViT
  ``reshape_transform`` (and a permute for Swin's ``[N, H, W, C]`` stages).

Tolerance: max abs error <= 1e-4 (rollout) or 1e-3 (CAMs) x the reference's max abs value.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

import converters
import jaxplain as jx
from jaxplain import recipes
from tests.parity._torch import assert_close, nchw

TARGETS = np.array([1, 4, 7])
VIT_LAYER = "encoder.layers.encoder_layer_1.ln_1"
GRID = 4


def _seeded(module: torch.nn.Module) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in module.parameters():
            if not parameter.abs().sum():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return module.eval()


@pytest.fixture(scope="module")
def vit():
    torch.set_num_threads(1)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        torch_model = _seeded(torchvision.models.VisionTransformer(
            image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=10))
    images = np.random.default_rng(1).normal(size=(3, 32, 32, 3)).astype(np.float32)
    return torch_model, converters.from_torch(torch_model, input_shape=(1, 32, 32, 3)), images


@pytest.fixture(scope="module")
def swin():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        torch_model = _seeded(torchvision.models.SwinTransformer(
            patch_size=[4, 4], embed_dim=16, depths=[2], num_heads=[2], window_size=[4, 4], num_classes=10))
    images = np.random.default_rng(2).normal(size=(2, 32, 32, 3)).astype(np.float32)
    return torch_model, converters.from_torch(torch_model, input_shape=(1, 32, 32, 3)), images


class _ExplicitAttention(torch.nn.Module):
    """``nn.MultiheadAttention``'s self-attention written out, keeping ``softmax(Q K^T / sqrt(d))``."""

    def __init__(self, attention: torch.nn.MultiheadAttention, store: list) -> None:
        super().__init__()
        self.attention, self.store = attention, store

    def forward(self, query, key, value, need_weights=False):
        mha = self.attention
        count, tokens, dim = query.shape
        heads = mha.num_heads
        q, k, v = F.linear(query, mha.in_proj_weight, mha.in_proj_bias).reshape(
            count, tokens, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        probabilities = torch.softmax(q @ k.transpose(-1, -2) / (dim // heads) ** 0.5, dim=-1)
        probabilities.retain_grad()
        self.store.append(probabilities)
        mixed = (probabilities @ v).transpose(1, 2).reshape(count, tokens, dim)
        return F.linear(mixed, mha.out_proj.weight, mha.out_proj.bias), None


def _torch_attention(torch_model, images, targets=None):
    """torch's attention probabilities ``[N, heads, T, T]`` per layer (and their gradients for ``targets``)."""
    explicit, store = copy.deepcopy(torch_model), []
    for block in explicit.encoder.layers:
        block.self_attention = _ExplicitAttention(block.self_attention, store)
    x = nchw(images)
    logits = explicit(x)
    with torch.no_grad():
        np.testing.assert_allclose(logits.detach().numpy(), torch_model(x).numpy(), rtol=1e-5, atol=1e-5)
    if targets is None:
        return [a.detach().numpy().astype(np.float64) for a in store], None
    logits[torch.arange(len(targets)), torch.from_numpy(targets)].sum().backward()
    return [a.detach().numpy() for a in store], [a.grad.numpy() for a in store]


def _numpy_rollout(maps, fusion, ratio, flavour):
    """Attention rollout per image, written out: fuse heads, discard, add I and renormalise, multiply."""
    count, _, tokens, _ = maps[0].shape
    fuse = {"mean": np.mean, "max": np.max, "min": np.min}[fusion]
    rows = []
    for n in range(count):
        result = np.eye(tokens)
        for attention in maps:
            fused = fuse(attention[n], axis=0).copy()
            flat = fused.reshape(-1)
            lowest = np.argsort(flat, kind="stable")[: int(flat.size * ratio)]
            flat[lowest[lowest != 0]] = 0.0
            mixed = (fused + np.eye(tokens)) / 2
            if flavour == "paper":
                mixed = mixed / mixed.sum(axis=1, keepdims=True)
            else:  # vit-explain's a / a.sum(dim=-1): entry (i, j) over the sum of row j
                mixed = mixed / mixed.sum(axis=1)[None, :]
            result = mixed @ result
        row = result[0, 1:].reshape(GRID, GRID)
        rows.append(row / row.max() if flavour == "vit_explain" else row)
    return np.stack(rows)[..., None]


ROLLOUT_CASES = [("mean", 0.0, "paper"), ("max", 0.6, "vit_explain"), ("min", 0.6, "paper"), ("min", 0.0, "vit_explain")]
"""Each head fusion, each with or without discard, each flavour twice."""

REVERSED_LAYERS = ("encoder.layers.encoder_layer_1", "encoder.layers.encoder_layer_0.self_attention")
"""Both attention layers, named out of order (and one by its block): rolled out in execution order."""


@pytest.mark.parametrize("fusion, ratio, flavour", ROLLOUT_CASES)
def test_rollout_equals_numpy(vit, fusion, ratio, flavour):
    torch_model, model, images = vit
    maps, _ = _torch_attention(torch_model, images)
    expected = _numpy_rollout(maps, fusion, ratio, flavour)
    layers = REVERSED_LAYERS if fusion == "min" and ratio else None
    ours = np.asarray(jx.attention_rollout(model, images, head_fusion=fusion, discard_ratio=ratio, flavour=flavour,
                                           layers=layers))
    assert_close(ours, expected, rtol=1e-4)
    assert not np.allclose(expected[0], expected[1])


def test_rollout_recipe_of_the_command_line(vit):
    torch_model, model, images = vit
    maps, _ = _torch_attention(torch_model, images)
    ours = recipes.RECIPES[recipes.resolve(["attention_rollout"])[0]].run(model, images, TARGETS, None, None)
    grid = torch.from_numpy(_numpy_rollout(maps, "mean", 0.0, "paper").transpose(0, 3, 1, 2))
    expected = F.interpolate(grid, size=(32, 32), mode="bilinear", align_corners=False).numpy().transpose(0, 2, 3, 1)
    assert_close(ours, expected, rtol=1e-4)


def test_gradient_rollout_equals_torch_autograd(vit):
    torch_model, model, images = vit
    maps, gradients = _torch_attention(torch_model, images, TARGETS)
    tokens = maps[0].shape[-1]
    expected = []
    for n in range(len(images)):
        relevance = np.eye(tokens)
        for attention, gradient in zip(maps, gradients):
            relevance = relevance + np.maximum(gradient[n] * attention[n], 0).mean(axis=0) @ relevance
        expected.append(relevance[0, 1:].reshape(GRID, GRID))
    ours = jx.gradient_rollout(model, images, TARGETS)
    assert_close(ours, np.stack(expected)[..., None], rtol=1e-4)


def _ratio(relevance, z, eps=1e-9):
    return relevance / torch.where(z >= 0, z + eps, z - eps)


def _alpha1_beta0(weight, x, relevance):
    """LRP-alpha1beta0 of ``x @ weight.T`` with no bias: positive contributions only."""
    positive, negative = weight.clamp(min=0), weight.clamp(max=0)
    x_pos, x_neg = x.clamp(min=0), x.clamp(max=0)
    s = _ratio(relevance, x_pos @ positive.T + x_neg @ negative.T)
    return x_pos * (s @ positive) + x_neg * (s @ negative)


def _normalised_sum(a, b, relevance):
    """The proportional split of ``a + b``, each share rescaled to ``|sum|`` over both ``|sum|``s of ``sum R``."""
    s = _ratio(relevance, a + b)
    shares = [a * s, b * s]
    sums = [share.sum() for share in shares]
    total = sum(t.abs() for t in sums)
    return [share * (t.abs() / total * relevance.sum()) / t for share, t in zip(shares, sums)]


def _chefer_attention_relevance(torch_model, image, target):
    """``R^(A_l)`` per layer for one image: torchvision's ViT run by hand, then relevance from 1 at ``target``."""
    model = copy.deepcopy(torch_model).double()
    with torch.no_grad():
        x = model._process_input(nchw(image[None]).double())
        x = torch.cat([model.class_token.expand(1, -1, -1), x], dim=1) + model.encoder.pos_embedding
        records = []
        for block in model.encoder.layers:
            mha = block.self_attention
            tokens, dim, heads = x.shape[1], x.shape[2], mha.num_heads
            h = block.ln_1(x)
            q, k, v = F.linear(h, mha.in_proj_weight, mha.in_proj_bias).reshape(
                1, tokens, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
            attention = torch.softmax(q @ k.transpose(-1, -2) / (dim // heads) ** 0.5, dim=-1)
            mixed = (attention @ v).transpose(1, 2).reshape(1, tokens, dim)
            attended = F.linear(mixed, mha.out_proj.weight, mha.out_proj.bias)
            x1 = attended + x
            h2 = block.ln_2(x1)
            hidden = block.mlp[1](block.mlp[0](h2))
            y = block.mlp[3](hidden)
            records.append((block, x, h, q, k, v, attention, mixed, attended, x1, h2, hidden, y))
            x = x1 + y
        cls = model.encoder.ln(x)[:, 0]
        logits = model.heads.head(cls)
        np.testing.assert_allclose(logits.numpy(), torch_model(nchw(image[None])).numpy(), rtol=1e-4, atol=1e-5)
        relevance = torch.zeros_like(x)
        relevance[:, 0] = _alpha1_beta0(model.heads.head.weight, cls, F.one_hot(torch.tensor([target]), 10).double())
        found = []
        for block, x, h, q, k, v, attention, mixed, attended, x1, h2, hidden, y in reversed(records):
            skip, branch = _normalised_sum(x1, y, relevance)
            branch = _alpha1_beta0(block.mlp[0].weight, h2, _alpha1_beta0(block.mlp[3].weight, hidden, branch))
            skip, branch = _normalised_sum(x, attended, skip + branch)
            mha = block.self_attention
            tokens, dim, heads = x.shape[1], x.shape[2], mha.num_heads
            branch = _alpha1_beta0(mha.out_proj.weight, mixed, branch)
            s = _ratio(branch.reshape(1, tokens, heads, dim // heads).transpose(1, 2), attention @ v)
            relevance_a, relevance_v = attention * (s @ v.transpose(-1, -2)) / 2, v * (attention.transpose(-1, -2) @ s) / 2
            found.append(relevance_a)
            s = _ratio(relevance_a, q @ k.transpose(-1, -2))
            relevance_q, relevance_k = q * (s @ k) / 2, k * (s.transpose(-1, -2) @ q) / 2
            packed = torch.stack([relevance_q, relevance_k, relevance_v]).permute(1, 3, 0, 2, 4).reshape(1, tokens, 3 * dim)
            relevance = skip + _alpha1_beta0(mha.in_proj_weight, h, packed)
    return [r[0].numpy() for r in reversed(found)]


def test_transformer_attribution_equals_the_authors_rules(vit):
    torch_model, model, images = vit
    maps, gradients = _torch_attention(torch_model, images, TARGETS)
    tokens = maps[0].shape[-1]
    expected = []
    for n, target in enumerate(TARGETS):
        rollout = np.eye(tokens)
        for relevance, gradient in zip(_chefer_attention_relevance(torch_model, images[n], int(target)), gradients):
            rollout = (np.eye(tokens) + np.maximum(gradient[n] * relevance, 0).mean(axis=0)) @ rollout
        expected.append(rollout[0, 1:].reshape(GRID, GRID))
    expected = np.stack(expected)[..., None]
    ours = np.asarray(jx.transformer_attribution(model, images, TARGETS))
    assert_close(ours, expected, rtol=1e-4)
    assert expected.max() > 0 and not np.allclose(expected[0], expected[1])
    single = np.asarray(jx.transformer_attribution(model, images[1:2], TARGETS[1:2]))
    assert_close(single, expected[1:2], rtol=1e-4)
    upsampled = recipes.RECIPES[recipes.resolve(["transformer_attribution"])[0]].run(model, images, TARGETS, None, None)
    assert upsampled.shape == (3, 32, 32, 1)


def _vit_reshape(tensor, height=GRID, width=GRID):
    """pytorch-grad-cam's documented ViT ``reshape_transform`` (docs/vision_transformers)."""
    result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
    return result.transpose(2, 3).transpose(1, 2)


def _peer_targets():
    return [ClassifierOutputTarget(int(t)) for t in TARGETS]


def test_gradcam_tokens_equal_pytorch_grad_cam(vit):
    torch_model, model, images = vit
    explainer = GradCAM(torch_model, [torch_model.get_submodule(VIT_LAYER)], reshape_transform=_vit_reshape)
    final = explainer(nchw(images), _peer_targets())
    recorded = explainer.activations_and_grads
    raw = explainer.get_cam_image(nchw(images), None, _peer_targets(), recorded.activations[0].numpy(),
                                  recorded.gradients[0].numpy(), False)
    ours = np.asarray(jx.layer_gradcam(model, images, TARGETS, layer=VIT_LAYER, reshape="tokens"))[..., 0]
    assert_close(ours, raw)
    assert_close(scale_cam_image(scale_cam_image(np.maximum(ours, 0), (32, 32))), final)


def test_cam_family_tokens_equal_pytorch_grad_cam(vit):
    torch_model, model, images = vit
    explainer = GradCAMPlusPlus(torch_model, [torch_model.get_submodule(VIT_LAYER)], reshape_transform=_vit_reshape)
    theirs = explainer(nchw(images), _peer_targets())
    ours = jx.grad_cam_plus_plus(model, images, TARGETS, layer=VIT_LAYER, reshape="tokens",
                                 postprocess="pytorch_grad_cam")
    assert_close(np.asarray(ours)[..., 0], theirs)


def test_gradcam_on_swin_stage_equals_pytorch_grad_cam(swin):
    torch_model, model, images = swin
    targets = TARGETS[:2]
    explainer = GradCAM(torch_model, [torch_model.features[1]], reshape_transform=lambda t: t.permute(0, 3, 1, 2))
    explainer(nchw(images), [ClassifierOutputTarget(int(t)) for t in targets])
    recorded = explainer.activations_and_grads
    raw = explainer.get_cam_image(nchw(images), None, None, recorded.activations[0].numpy(),
                                  recorded.gradients[0].numpy(), False)
    ours = jx.layer_gradcam(model, images, targets, layer="features.1", reshape="channels_last")
    assert_close(np.asarray(ours)[..., 0], raw)


def test_maps_that_cannot_be_read_raise(vit, swin):
    _, model, images = vit
    _, swin_model, swin_images = swin
    with pytest.raises(ValueError, match="not a \\[N, T, D\\] token"):
        jx.layer_gradcam(swin_model, swin_images, 0, layer="features.1", reshape="tokens")
    with pytest.raises(ValueError, match="reshape='tokens'"):
        jx.layer_cam(model, images, 0, layer=VIT_LAYER, reshape="channels_last")
    with pytest.raises(ValueError, match="not a \\[N, T, D\\] token"):
        jx.layer_gradcam(model, images, 0, layer="heads.head", reshape="tokens")
    with pytest.raises(ValueError, match="reshape="):
        jx.layer_gradcam(model, images, 0, layer=VIT_LAYER, reshape="grid")
    with pytest.raises(ValueError, match="windowed"):
        jx.attention_rollout(swin_model, swin_images)
    with pytest.raises(ValueError, match="windowed"):
        jx.transformer_attribution(swin_model, swin_images, 0)


def test_unknown_and_attention_free_layers_raise(vit):
    _, model, images = vit
    with pytest.raises(ValueError, match="unknown layer 'encoder.layers.encoder_layer_7'"):
        jx.attention_rollout(model, images, layers="encoder.layers.encoder_layer_7")
    with pytest.raises(ValueError, match="holds no attention softmaxes"):
        jx.gradient_rollout(model, images, 0, layers=("encoder.layers.encoder_layer_0.mlp",))
    with pytest.raises(ValueError, match="holds 2 attention softmaxes"):
        jx.attention_maps(model, images, layers="encoder")
    with pytest.raises(ValueError, match="no attention softmax"):
        jx.attention_rollout(jx.demo.load_model(), jx.demo.normalise(jx.demo.load_samples().images[:1, ::4, ::4]))
    with pytest.raises(ValueError, match="discard_ratio"):
        jx.attention_rollout(model, images, discard_ratio=1.0)
    with pytest.raises(ValueError, match="head_fusion"):
        jx.attention_rollout(model, images, head_fusion="median")
