"""Flat on a convolution computed from window sums on one channel (``relevance._flat_by_window_sums``).

Flat's all-ones weights make the relevance depend on the output relevance and the window geometry
alone, so jaxplain computes it from the fan-in counts and a transposed window sum instead of an
all-ones convolution and its input gradient. Checked here:

- against Zennit's ``EpsilonPlusFlat`` (Flat on the first convolution) on torch twins of the
  geometries torch can express (7x7 stride 2 with a batch norm after it, stride and kernel dilation,
  1-D), with the JAX side written channels-last and channels-first; float64, tolerance 2e-5 of the
  reference's scale (the two sides differ by 6.3e-6 of it on the 7x7 case whether Flat is computed
  from window sums or as the all-ones convolution: the stabilisers of the mean and the head, not
  Flat);
- for geometries torch's ``Conv`` cannot express (input dilation, asymmetric padding, an output laid
  out unlike the input), against Flat's definition evaluated with ``lax.conv_general_dilated`` itself:
  ``R_in = x_1 * J^T (R / stab(conv(1, 1)))`` with an all-ones kernel and input (float64, 1e-10), and
  conservation: each example's input relevance sums to the relevance at the convolution's output,
  up to the stabiliser's share (relative 1e-6);
- that the program then holds the forward convolution only (no all-ones convolution, no input gradient).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax import lax
from zennit import composites as zc
from zennit.attribution import Gradient
from zennit.canonizers import SequentialMergeBatchNorm

import jaxplain as jx
from jaxplain.rules import composites as cs
from jaxplain.rules import lrp as rules

TARGETS = np.array([1, 3])
STAB = 1e-6


@pytest.fixture
def x64():
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", False)


def _params(torch_model: torch.nn.Module, channels_last: bool) -> dict:
    conv = torch_model.conv.weight.detach().numpy()
    spatial = conv.ndim - 2
    kernel = np.transpose(conv, tuple(range(2, 2 + spatial)) + (1, 0)) if channels_last else conv
    bn = torch_model.bn
    return {
        "conv": {"kernel": kernel, "bias": torch_model.conv.bias.detach().numpy()},
        "bn": {"scale": bn.weight.detach().numpy(), "bias": bn.bias.detach().numpy(),
               "mean": bn.running_mean.detach().numpy(), "var": bn.running_var.detach().numpy()},
        "head": {"kernel": torch_model.head.weight.detach().numpy().T, "bias": torch_model.head.bias.detach().numpy()},
    }


class Twin(torch.nn.Module):
    """Conv -> BatchNorm -> ReLU -> spatial mean -> Linear, in torch's layout."""

    def __init__(self, spatial: int, kernel: int, stride: int, padding: int, dilation: int):
        super().__init__()
        conv, bn = (torch.nn.Conv1d, torch.nn.BatchNorm1d) if spatial == 1 else (torch.nn.Conv2d, torch.nn.BatchNorm2d)
        self.conv = conv(3, 6, kernel, stride=stride, padding=padding, dilation=dilation)
        self.bn = bn(6)
        self.relu = torch.nn.ReLU()
        self.pool = torch.nn.AdaptiveAvgPool1d(1) if spatial == 1 else torch.nn.AdaptiveAvgPool2d(1)
        self.head = torch.nn.Linear(6, 5)
        generator = torch.Generator().manual_seed(spatial * 100 + kernel * 10 + stride)
        with torch.no_grad():
            for tensor in (self.bn.weight, self.bn.bias, self.bn.running_mean):
                tensor.copy_(torch.rand(6, generator=generator) - 0.3)
            self.bn.running_var.copy_(torch.rand(6, generator=generator) + 0.5)

    def forward(self, x):
        return self.head(self.pool(self.relu(self.bn(self.conv(x)))).flatten(1))


def _function(spatial: int, stride: int, padding: int, dilation: int, channels_last: bool):
    dims = "HW"[-spatial:] if spatial < 3 else "DHW"
    numbers = ("N" + dims + "C", dims + "IO", "N" + dims + "C") if channels_last else \
        ("NC" + dims, "OI" + dims, "NC" + dims)
    channel = -1 if channels_last else 1
    axes = tuple(range(1, 1 + spatial)) if channels_last else tuple(range(2, 2 + spatial))

    def per_channel(v, rank):
        shape = [1] * rank
        shape[channel] = -1
        return v.reshape(shape)

    def forward(p, x):
        y = lax.conv_general_dilated(x, p["conv"]["kernel"], (stride,) * spatial, ((padding, padding),) * spatial,
                                     rhs_dilation=(dilation,) * spatial, dimension_numbers=numbers)
        y = y + per_channel(p["conv"]["bias"], y.ndim)
        bn = p["bn"]
        y = (y - per_channel(bn["mean"], y.ndim)) / jnp.sqrt(per_channel(bn["var"], y.ndim) + 1e-5)
        y = y * per_channel(bn["scale"], y.ndim) + per_channel(bn["bias"], y.ndim)
        return jnp.maximum(y, 0).mean(axis=axes) @ p["head"]["kernel"] + p["head"]["bias"]

    return forward


ZENNIT_CASES = {
    "stem_7x7_stride2": (2, 7, 2, 3, 1, (2, 20, 18)),
    "stride3_dilated": (2, 3, 3, 2, 2, (2, 13, 11)),
    "conv1d": (1, 5, 2, 1, 1, (2, 17)),
}


@pytest.mark.parametrize("channels_last", [True, False], ids=["channels_last", "channels_first"])
@pytest.mark.parametrize("case", list(ZENNIT_CASES))
def test_flat_first_layer_matches_zennit(case, channels_last, x64):
    spatial, kernel, stride, padding, dilation, shape = ZENNIT_CASES[case]
    torch.manual_seed(0)
    twin = Twin(spatial, kernel, stride, padding, dilation).double().eval()
    images = np.random.default_rng(1).standard_normal(shape[:1] + (3,) + shape[1:])
    with torch.no_grad():
        outputs = twin(torch.from_numpy(images))
    seed = torch.nn.functional.one_hot(torch.from_numpy(TARGETS), 5) * outputs
    composite = zc.EpsilonPlusFlat(canonizers=[SequentialMergeBatchNorm()])
    with Gradient(model=twin, composite=composite) as attributor:
        expected = attributor(torch.from_numpy(images).requires_grad_(), seed)[1].numpy()
    params = jax.tree_util.tree_map(jnp.asarray, _params(twin, channels_last))
    inputs = np.moveaxis(images, 1, -1) if channels_last else images
    model = jx.Model.from_function(_function(spatial, stride, padding, dilation, channels_last), params,
                                   channel_axis=-1 if channels_last else 1)
    got = np.asarray(jx.lrp(model, jnp.asarray(inputs), jnp.asarray(TARGETS), composite="epsilon_plus_flat"))
    got = np.moveaxis(got, -1, 1) if channels_last else got
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5 * np.abs(expected).max())


def _general_function(numbers, strides, padding, lhs_dilation, rhs_dilation):
    out_spec = numbers[2]
    axes = tuple(i for i, c in enumerate(out_spec) if c not in "NC")

    def forward(p, x):
        y = lax.conv_general_dilated(x, p["kernel"], strides, padding, lhs_dilation, rhs_dilation,
                                     dimension_numbers=numbers)
        return jnp.maximum(y, 0).sum(axis=axes)

    return forward


GENERAL_CASES = {
    "input_dilation_nchw_out": (("NHWC", "HWIO", "NCHW"), (1, 2), ((2, 1), (0, 2)), (2, 2), (1, 1), (3, 2), (7, 9)),
    "asymmetric_channels_first": (("NCHW", "OIHW", "NCHW"), (2, 1), ((3, 0), (1, 2)), (1, 1), (2, 1), (3, 3), (12, 8)),
    "input_dilation_1d": (("NWC", "WIO", "NWC"), (3,), ((2, 1),), (3,), (2,), (4,), (11,)),
}


@pytest.mark.parametrize("case", list(GENERAL_CASES))
def test_flat_matches_its_definition_on_lax(case, x64):
    numbers, strides, padding, lhs_dilation, rhs_dilation, kernel_size, spatial = GENERAL_CASES[case]
    sizes = {"N": 2, "C": 3}
    sizes.update(zip("HW"[-len(spatial):], spatial))
    kernel_sizes = {"I": 3, "O": 4}
    kernel_sizes.update(zip("HW"[-len(kernel_size):], kernel_size))
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal(tuple(sizes[c] for c in numbers[0])))
    kernel = jnp.asarray(rng.standard_normal(tuple(kernel_sizes[c] for c in numbers[1])))
    forward = _general_function(numbers, strides, padding, lhs_dilation, rhs_dilation)
    composite = cs.Composite(layer_map=cs.base_layer_map(STAB) + ((cs.LINEAR, rules.Flat(STAB)),))
    model = jx.Model.from_function(forward, {"kernel": kernel}, channel_axis=numbers[0].index("C"))
    got = jx.lrp(model, x, jnp.asarray(TARGETS), composite=composite)

    def conv(v, k):
        return lax.conv_general_dilated(v, k, strides, padding, lhs_dilation, rhs_dilation, dimension_numbers=numbers)

    def stab(z):
        return z + STAB * jnp.where(z >= 0, 1.0, -1.0)

    y = conv(x, kernel)
    out = forward({"kernel": kernel}, x)
    channel = numbers[2].index("C")
    one_hot = jnp.moveaxis(jax.nn.one_hot(TARGETS, 4), -1, 1)
    one_hot = one_hot.reshape(one_hot.shape[:2] + (1,) * (y.ndim - 2))
    one_hot = jnp.moveaxis(one_hot, 1, channel)
    picked = jnp.sum(out * jax.nn.one_hot(TARGETS, 4), axis=1)
    picked = picked.reshape((-1,) + (1,) * (y.ndim - 1))
    relevance = one_hot * jnp.maximum(y, 0) * picked / stab(picked)
    ones, ones_kernel = jnp.ones_like(x), jnp.ones_like(kernel)
    z, pullback = jax.vjp(lambda v: conv(v, ones_kernel), ones)
    expected = pullback(relevance / stab(z))[0]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10 * float(jnp.abs(expected).max()))
    # Flat conserves up to the stabiliser: each position keeps the share eps / (I n + eps) <= STAB.
    axes = tuple(range(1, x.ndim))
    np.testing.assert_allclose(jnp.sum(got, axis=axes), jnp.sum(relevance, axis=axes), rtol=STAB)


def test_flat_program_holds_the_forward_convolution_only():
    forward = _general_function(("NHWC", "HWIO", "NHWC"), (2, 2), ((3, 3), (3, 3)), (1, 1), (1, 1))
    kernel = jnp.asarray(np.random.default_rng(3).standard_normal((7, 7, 3, 4)), jnp.float32)
    model = jx.Model.from_function(forward, {"kernel": kernel})
    composite = cs.Composite(layer_map=cs.base_layer_map(STAB) + ((cs.LINEAR, rules.Flat(STAB)),))
    x = jnp.ones((2, 16, 16, 3))
    text = jax.jit(lambda v: jx.lrp(model, v, jnp.asarray(TARGETS), composite=composite)).lower(x).as_text()
    assert text.count("stablehlo.convolution") == 1
    relevance = jx.lrp(model, x, jnp.asarray(TARGETS), composite=composite)
    assert relevance.shape == x.shape and bool(jnp.all(jnp.isfinite(relevance)))
