"""Each LRP rule against an independent matrix-form reference, on a dense and a conv layer.

The reference is written here from the rules' definitions (Bach et al. 2015,
Montavon et al. 2017/2019; Zennit's stabiliser ``z + eps * sign(z)``, sign 1 at 0): a
layer is a matrix ``W [I, J]`` and a bias ``b [J]`` (a convolution is unfolded into its
matrix with explicit loops; zero padding simply has no entry), relevance is
redistributed through explicit contribution tables ``c_ij``. Tolerance: 1e-5 relative
to the largest relevance, float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from jaxplain.nets.layers import Conv2d, Linear
from jaxplain.rules import lrp

EPS = 1e-6


def stab(z):
    return z + EPS * np.where(z >= 0, 1.0, -1.0)


def reference(name, x, w, b, relevance, low=None, high=None, gamma=0.25):
    """Input relevance ``[I]`` of a layer ``z = x @ w + b`` for output relevance ``[J]``."""
    c = x[:, None] * w
    pos, neg = np.maximum(c, 0), np.minimum(c, 0)
    if name == "epsilon":
        return (c / stab(c.sum(0) + b)) @ relevance
    if name in ("zplus", "alpha1beta0"):
        return (pos / stab(pos.sum(0) + np.maximum(b, 0))) @ relevance
    if name == "alpha2beta1":
        return (2 * pos / stab(pos.sum(0) + np.maximum(b, 0)) - neg / stab(neg.sum(0) + np.minimum(b, 0))) @ relevance
    if name == "gamma":
        z = c.sum(0) + b
        up, down = c + gamma * pos, c + gamma * neg
        share_up = up / stab(up.sum(0) + b + gamma * np.maximum(b, 0))
        share_down = down / stab(down.sum(0) + b + gamma * np.minimum(b, 0))
        return np.where(z > 0, share_up, np.where(z < 0, share_down, 0.0)) @ relevance
    if name == "gamma_captum":
        up = x[:, None] * (w + gamma * np.maximum(w, 0))
        return (up / stab(up.sum(0) + b)) @ relevance
    if name == "zbox":
        box = c - low[:, None] * np.maximum(w, 0) - high[:, None] * np.minimum(w, 0)
        return (box / stab(box.sum(0))) @ relevance
    if name == "wsquare":
        return (w**2 / stab((w**2).sum(0) + b**2)) @ relevance
    if name == "flat":
        connected = np.ones_like(w)
        return (connected / stab(connected.sum(0))) @ relevance
    raise ValueError(name)


RULES = {
    "epsilon": lrp.Epsilon(EPS),
    "zplus": lrp.ZPlus(EPS),
    "alpha2beta1": lrp.Alpha2Beta1(EPS),
    "alpha1beta0": lrp.Alpha1Beta0(EPS),
    "gamma": lrp.Gamma(0.25, EPS),
    "gamma_captum": lrp.Gamma(0.25, EPS, sign_aware=False),
    "zbox": lrp.ZBox(-1.5, 2.0, EPS),
    "wsquare": lrp.WSquare(EPS),
    "flat": lrp.Flat(EPS),
}


def ours(rule, module, params, x, relevance, nonnegative_input=False):
    _, pullback = jax.vjp(lambda v: lrp.relevance_layer(rule, module.forward, params, v, nonnegative_input), x)
    return np.asarray(pullback(relevance)[0])


def conv_matrix(kernel, height, width, padding):
    """The ``[H*W*C, H'*W'*O]`` matrix of a stride-1 NHWC convolution, built with loops."""
    kh, kw, channels, out = kernel.shape
    out_h, out_w = height + 2 * padding - kh + 1, width + 2 * padding - kw + 1
    matrix = np.zeros((height, width, channels, out_h, out_w, out))
    for i in range(out_h):
        for j in range(out_w):
            for a in range(kh):
                for bb in range(kw):
                    row, col = i + a - padding, j + bb - padding
                    if 0 <= row < height and 0 <= col < width:
                        matrix[row, col, :, i, j, :] = kernel[a, bb]
    return matrix.reshape(height * width * channels, out_h * out_w * out), (out_h, out_w, out)


SIGNS = {"mixed": lambda x: x, "nonnegative": np.abs}
"""Inputs of both signs, and non-negative inputs (as after a ReLU), promised as such to the rules (which then skip
their x- terms)."""


@pytest.mark.parametrize("sign", list(SIGNS))
@pytest.mark.parametrize("name", list(RULES))
def test_dense_rule_matches_matrix_reference(name, sign):
    rng = np.random.default_rng(3)
    x = SIGNS[sign](rng.standard_normal(6).astype(np.float32))
    w = rng.standard_normal((6, 4)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32) * 0.3
    relevance = rng.standard_normal(4).astype(np.float32)
    module = Linear(4)
    got = ours(RULES[name], module, {"kernel": jnp.asarray(w), "bias": jnp.asarray(b)}, jnp.asarray(x[None]),
               jnp.asarray(relevance[None]), nonnegative_input=sign == "nonnegative")[0]
    expected = reference(name, x.astype(float), w.astype(float), b.astype(float), relevance.astype(float),
                         low=np.full(6, -1.5), high=np.full(6, 2.0))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("sign", list(SIGNS))
@pytest.mark.parametrize("name", list(RULES))
def test_conv_rule_matches_matrix_reference(name, sign):
    rng = np.random.default_rng(4)
    height, width, channels, out = 4, 5, 2, 3
    x = SIGNS[sign](rng.standard_normal((height, width, channels)).astype(np.float32))
    kernel = rng.standard_normal((3, 3, channels, out)).astype(np.float32)
    bias = rng.standard_normal(out).astype(np.float32) * 0.3
    matrix, out_shape = conv_matrix(kernel.astype(float), height, width, padding=1)
    relevance = rng.standard_normal(out_shape).astype(np.float32)
    module = Conv2d(out, 3, padding=1)
    got = ours(RULES[name], module, {"kernel": jnp.asarray(kernel), "bias": jnp.asarray(bias)}, jnp.asarray(x[None]),
               jnp.asarray(relevance[None]), nonnegative_input=sign == "nonnegative")[0]
    dense_bias = np.tile(bias.astype(float), out_shape[0] * out_shape[1])
    flat_x = x.astype(float).reshape(-1)
    if name == "flat":
        connected, _ = conv_matrix(np.ones_like(kernel, dtype=float), height, width, padding=1)
        expected = (connected / stab(connected.sum(0))) @ relevance.astype(float).reshape(-1)
    else:
        expected = reference(name, flat_x, matrix, dense_bias, relevance.astype(float).reshape(-1),
                             low=np.full(flat_x.shape, -1.5), high=np.full(flat_x.shape, 2.0))
    np.testing.assert_allclose(got.reshape(-1), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_set_bias_to_zero_conserves_relevance_exactly():
    """Without a bias no relevance is absorbed: input relevance sums to output relevance."""
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.standard_normal((1, 6)), jnp.float32)
    params = {"kernel": jnp.asarray(rng.standard_normal((6, 4)), jnp.float32), "bias": jnp.ones(4)}
    relevance = jnp.asarray(rng.standard_normal((1, 4)), jnp.float32)
    for rule in (lrp.Epsilon(0.0, set_bias_to_zero=True), lrp.ZPlus(1e-9, set_bias_to_zero=True)):
        got = ours(rule, Linear(4), params, x, relevance)
        np.testing.assert_allclose(got.sum(), float(relevance.sum()), rtol=1e-4)


def test_norm_splits_a_sum_in_proportion_and_pass_hands_through():
    a, b = jnp.array([[1.0, -2.0, 3.0]]), jnp.array([[3.0, 1.0, 0.0]])
    relevance = jnp.array([[4.0, 2.0, 6.0]])
    _, pullback = jax.vjp(lambda u, v: lrp.Norm(EPS)(None, lambda p, q: p + q, u, v), a, b)
    got_a, got_b = pullback(relevance)
    total = np.asarray(a + b)
    np.testing.assert_allclose(got_a, a * relevance / stab(total), rtol=1e-6)
    np.testing.assert_allclose(got_b, b * relevance / stab(total), rtol=1e-6)
    _, pullback = jax.vjp(lambda u: lrp.Pass()(None, jax.nn.relu, u), a)
    np.testing.assert_allclose(pullback(relevance)[0], relevance)


def test_normalised_sum_gives_each_operand_its_share_per_example():
    """Chefer et al.'s residual rule: operand k keeps |sum_k| / sum_j |sum_j| of each example's relevance;
    an operand broadcast over the batch (an embedding) collects its per-example shares."""
    from types import SimpleNamespace

    from jaxplain.rules.relevance import NormalisedSum

    rng = np.random.default_rng(7)
    a = rng.standard_normal((3, 4, 5)).astype(np.float32)
    b = rng.standard_normal((1, 4, 5)).astype(np.float32)
    relevance = rng.standard_normal((3, 4, 5)).astype(np.float32)
    rule = NormalisedSum(1e-9)
    _, pullback = jax.vjp(lambda u, v: rule(SimpleNamespace(name="block"), lambda p, q: p + q, u, v), a, b)
    got_a, got_b = pullback(jnp.asarray(relevance))
    expected_a, expected_b = np.zeros_like(a), np.zeros_like(b)
    for n in range(3):
        total = a[n] + b[0]
        shares = [a[n] * relevance[n] / (total + 1e-9 * np.where(total >= 0, 1, -1)),
                  b[0] * relevance[n] / (total + 1e-9 * np.where(total >= 0, 1, -1))]
        sums = [share.sum() for share in shares]
        scale = [abs(t) / (abs(sums[0]) + abs(sums[1])) * relevance[n].sum() / t for t in sums]
        expected_a[n] = shares[0] * scale[0]
        expected_b[0] += shares[1] * scale[1]
        np.testing.assert_allclose(got_a[n].sum() / relevance[n].sum(), abs(sums[0]) / (abs(sums[0]) + abs(sums[1])),
                                   rtol=1e-4)
    np.testing.assert_allclose(got_a, expected_a, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_b, expected_b, rtol=1e-4, atol=1e-5)


def test_alpha_beta_must_differ_by_one():
    with pytest.raises(ValueError, match="alpha - beta = 1"):
        lrp.AlphaBeta(2.0, 2.0)


class _SmallMapNet(nn.Module):
    """A zoo convolution over a 2x2 map with a 3x3 kernel (computed on CPU as a product over padded patches)."""

    @nn.compact
    def __call__(self, x):
        h = nn.relu(Conv2d(5, 3, padding=1, use_bias=False, name="conv")(x))
        return Linear(3, use_bias=False, name="fc")(h.reshape(h.shape[0], -1))


@pytest.mark.parametrize("name", ["flat", "wsquare", "zbox", "zplus", "epsilon"])
def test_rules_on_a_zoo_convolution_computed_by_patches_match_the_matrix_reference(name):
    """The zoo computes a convolution over a map smaller than its kernel as a product over zero-padded patches on the
    CPU; the program engine still sees the convolution, so the rules that replace its input (Flat's ones, WSquare,
    ZBox's bounds) leave the padding out as the convolution does. Before, the padded taps counted as inputs (a
    relevance of 18.4 came out at 8.2). Reference: the network as matrices, each rule from its definition."""
    import jaxplain as jx
    from jaxplain import program
    from jaxplain.cpu import small_conv
    from jaxplain.rules import composites

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 2, 2, 4)), jnp.float32)
    module = _SmallMapNet()
    variables = module.init(jax.random.PRNGKey(0), x)
    model = jx.as_model(module.bind(variables))
    assert small_conv.is_smaller_than_kernel(x.shape, (3, 3))
    primitives = [node.primitive for node in program.graph_of(model, x).nodes]
    assert "conv_general_dilated" in primitives and "dot_general" in primitives
    rule = RULES[name] if name != "zbox" else lrp.ZBox(-3.0, 3.0, EPS)
    composite = composites.Composite(layer_map=((("convolution",), rule), (("dense",), lrp.Epsilon(EPS)),
                                                (("activation",), lrp.Pass())))
    target = np.array([0, 2])
    got = np.asarray(jx.lrp(model, x, jnp.asarray(target), composite=composite)).reshape(2, -1)

    kernel = np.asarray(variables["params"]["conv"]["kernel"], float)
    dense = np.asarray(variables["params"]["fc"]["kernel"], float)
    matrix, _ = conv_matrix(kernel, 2, 2, padding=1)
    for example in range(2):
        flat_x = np.asarray(x[example], float).reshape(-1)
        hidden = np.maximum(flat_x @ matrix, 0)
        logits = hidden @ dense
        relevance = np.where(np.arange(3) == target[example], logits, 0.0)
        hidden_relevance = reference("epsilon", hidden, dense, np.zeros(3), relevance)
        if name == "flat":
            connected, _ = conv_matrix(np.ones_like(kernel), 2, 2, padding=1)
            expected = (connected / stab(connected.sum(0))) @ hidden_relevance
        else:
            expected = reference(name, flat_x, matrix, np.zeros(matrix.shape[1]), hidden_relevance,
                                 low=np.full(flat_x.shape, -3.0), high=np.full(flat_x.shape, 3.0))
        np.testing.assert_allclose(got[example], expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("rule", [lrp.Flat(), lrp.WSquare(), lrp.ZBox(-3.0, 3.0)], ids=lambda r: type(r).__name__)
def test_input_independent_rules_refuse_a_product_over_padded_patches(rule):
    """A user's own product over gathered, zero-padded patches is a product in the program, with the padded taps
    among its inputs: Flat, WSquare and ZBox would count them, so lrp raises naming the rule and the layer. Epsilon,
    proportional to the input, runs and conserves (no biases)."""
    import jaxplain as jx
    from jaxplain.cpu import small_conv
    from jaxplain.rules import composites

    rng = np.random.default_rng(2)
    params = {"conv": jnp.asarray(rng.standard_normal((3, 3, 4, 5)), jnp.float32),
              "fc": jnp.asarray(rng.standard_normal((20, 3)), jnp.float32)}

    def net(p, x):
        with jax.named_scope("conv"):
            h = small_conv.patches_conv2d(x, p["conv"], (1, 1), ((1, 1), (1, 1)))
        return jax.nn.relu(h).reshape(h.shape[0], -1) @ p["fc"]

    model = jx.Model.from_function(net, params)
    x = jnp.asarray(rng.standard_normal((2, 2, 2, 4)), jnp.float32)
    target = jnp.array([0, 1])

    def composite(linear_rule):
        return composites.Composite(layer_map=((("convolution",), linear_rule), (("dense",), lrp.Epsilon(1e-9)),
                                               (("activation",), lrp.Pass())))

    with pytest.raises(ValueError, match=f"{type(rule).__name__} at 'conv'.*padded patches"):
        jx.lrp(model, x, target, composite=composite(rule))
    relevance = jx.lrp(model, x, target, composite=composite(lrp.Epsilon(1e-9)))
    logits = np.asarray(model(x))[np.arange(2), np.asarray(target)]
    np.testing.assert_allclose(np.asarray(relevance).sum((1, 2, 3)), logits, rtol=1e-4)


def test_input_independent_rules_still_apply_to_an_unpadded_product_over_patches():
    """A patch embedding written as a reshape and a product with a 4-d kernel (no padding) keeps Flat: only a product
    over padded patches is refused. Flat there is the dense rule's definition: every input of an example's patch row
    gets ``sum_o R_o / (patch length)``."""
    import jaxplain as jx
    from jaxplain.rules import composites

    rng = np.random.default_rng(1)
    params = {"k": jnp.asarray(rng.standard_normal((2, 2, 3, 4)), jnp.float32),
              "w": jnp.asarray(rng.standard_normal((4 * 4, 2)), jnp.float32)}

    def net(p, x):
        n = x.shape[0]
        patches = x.reshape(n, 2, 2, 2, 2, 3).transpose(0, 1, 3, 2, 4, 5).reshape(n, 4, 12)
        h = jnp.einsum("npk,ko->npo", patches, p["k"].reshape(12, 4))
        return h.reshape(n, -1) @ p["w"]

    model = jx.Model.from_function(net, params)
    x = jnp.asarray(rng.standard_normal((2, 4, 4, 3)), jnp.float32)
    comp = composites.Composite(layer_map=((("convolution",), lrp.Flat()), (("dense",), lrp.Epsilon(1e-9))))
    relevance = np.asarray(jx.lrp(model, x, jnp.array([0, 1]), composite=comp))
    assert np.isfinite(relevance).all() and np.abs(relevance).max() > 0
    logits = np.asarray(model(x))[np.arange(2), [0, 1]]
    np.testing.assert_allclose(relevance.sum((1, 2, 3)), logits, rtol=1e-4)
