"""LRP's axioms on every model form: conservation, LRP-0 = gradient x input, fresh weights, errors.

The residual CNN of :mod:`tests.forms`, bias-free (biases, batch-norm shifts and means zero), in
its five forms. On a bias-free network of ReLUs, max pools, sums and means, LRP-0 (Epsilon with
epsilon 1e-12 on every linear layer, a stabiliser only for the dead units where 0 would divide 0 by 0; sums and means split in proportion, ReLUs passing relevance)
equals gradient x input exactly (Ancona et al. 2018), and relevance is conserved: it sums to the
target logit. The expected values are the model's own autodiff gradient and logits, not LRP code.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxplain as jx
from jaxplain.rules import composites as cs
from jaxplain.rules import lrp as rules
from tests import forms

TARGETS = np.array([1, 3])
LRP_0 = cs.Composite(layer_map=cs.base_layer_map(1e-12) + ((cs.LINEAR, rules.Epsilon(1e-12)),))


def _bias_free() -> dict[str, np.ndarray]:
    weights = forms.cnn_weights(seed=2)
    for name in ("conv1.bias", "bn1.bias", "bn1.running_mean", "block.conv.bias", "head.bias"):
        weights[name] = np.zeros_like(weights[name])
    return weights


@pytest.fixture(scope="module")
def bias_free():
    return forms.cnn_forms(_bias_free())


def _inputs(form: str) -> np.ndarray:
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(5), (2, 8, 8, 3)))
    return x.transpose(0, 3, 1, 2) if form == "equinox" else x


@pytest.mark.parametrize("form", ["zoo", "linen", "nnx", "equinox", "function"])
def test_lrp_zero_is_gradient_times_input_and_conserves_on_a_bias_free_net(bias_free, form):
    model, x = bias_free[form], _inputs(form)
    relevance = np.asarray(jx.lrp(model, x, TARGETS, composite=LRP_0))
    expected = np.asarray(jx.input_x_gradient(model, x, TARGETS))
    np.testing.assert_allclose(relevance, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    logits = np.asarray(jx.as_model(model)(x))[np.arange(2), TARGETS]
    np.testing.assert_allclose(relevance.reshape(2, -1).sum(1), logits, rtol=1e-4)


@pytest.mark.parametrize("form", ["linen", "nnx", "equinox", "function"])
def test_zplus_conserves_on_every_form(bias_free, form):
    """z+ without biases conserves the (positive) logit through sums, pools and the folded batch norm."""
    model, x = bias_free[form], _inputs(form)
    zplus = cs.Composite(layer_map=cs.base_layer_map(1e-9) + ((cs.LINEAR, rules.ZPlus(1e-9, True)),))
    outputs = np.asarray(jx.as_model(model)(x))
    target = np.argmax(outputs, axis=1)
    relevance = np.asarray(jx.lrp(model, x, target, composite=zplus)).reshape(2, -1).sum(1)
    np.testing.assert_allclose(relevance, outputs[np.arange(2), target], rtol=1e-4)


def test_new_weights_give_new_relevance_without_retracing():
    model = forms.cnn_forms(forms.cnn_weights())["nnx"]
    x = _inputs("nnx")
    before = np.asarray(jx.lrp(model, x, TARGETS))
    model.head.kernel.value = model.head.kernel.value * -1.0
    after = np.asarray(jx.lrp(model, x, TARGETS))
    np.testing.assert_allclose(after, -before, rtol=1e-4, atol=1e-6 * np.abs(before).max())


def test_an_operation_no_rule_reaches_is_refused_with_its_layer():
    params = {"head": {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros(2)}}

    def spatial_max(p, x):
        with jax.named_scope("pool"):
            x = jnp.max(x, axis=(1, 2))
        return x @ p["head"]["kernel"] + p["head"]["bias"]

    model = jx.Model.from_function(spatial_max, params)
    with pytest.raises(ValueError, match="reduce_max in 'pool'.*plain gradient"):
        jx.lrp(model, jnp.ones((1, 4, 4, 3)), 0)


def test_a_batch_norm_scale_varying_in_space_is_not_folded_silently():
    params = {"conv": {"kernel": jnp.ones((3, 3, 3, 2)), "bias": jnp.zeros(2)},
              "norm": {"scale": jnp.ones((4, 4, 1))}, "head": {"kernel": jnp.ones((32, 2))}}

    def net(p, x):
        y = jax.lax.conv_general_dilated(x, p["conv"]["kernel"], (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC")) + p["conv"]["bias"]
        y = jax.nn.relu(y * p["norm"]["scale"])
        return y.reshape(y.shape[0], -1) @ p["head"]["kernel"]

    model = jx.Model.from_function(net, params)
    with pytest.raises(ValueError, match="scales more than the output features"):
        jx.lrp(model, jnp.ones((1, 4, 4, 3)), 0, composite="epsilon_plus")
    unmerged = jx.lrp(model, jnp.ones((1, 4, 4, 3)), 0, composite=jx.composites.EpsilonPlus(merge_batch_norm=False))
    assert unmerged.shape == (1, 4, 4, 3)


def _bias_free_mlp() -> dict[str, np.ndarray]:
    weights = forms.mlp_weights()
    for name in ("fc1.bias", "norm.bias", "gate.bias", "head.bias"):
        weights[name] = np.zeros_like(weights[name])
    return weights


@pytest.mark.parametrize("composite", ["attn_lrp", "cp_lrp"])
def test_attention_composites_conserve_on_the_gated_mlp_in_every_form(composite):
    """LayerNorm (identity rule), GELU (identity), the gate ``h * sigmoid(g)`` (uniform) and Gamma on
    the dense layers: on a bias-free MLP nothing is lost, and the three forms agree."""
    models = forms.mlp_forms(_bias_free_mlp())
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(6), (3, 6)))
    target = np.array([0, 2, 3])
    results = {}
    for form, model in models.items():
        results[form] = np.asarray(jx.lrp(model, x, target, composite=composite))
        logits = np.asarray(jx.as_model(model)(x))[np.arange(3), target]
        np.testing.assert_allclose(results[form].sum(1), logits, rtol=1e-4, atol=1e-6)
    for form, relevance in results.items():
        np.testing.assert_allclose(relevance, results["linen"], rtol=1e-5, atol=1e-6 * np.abs(relevance).max())
