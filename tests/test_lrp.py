"""LRP axioms and behaviour on small networks: conservation, LRP-0 = gradient x input, options, errors."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jx
from jaxplain.nets import build
from jaxplain.nets.layers import Conv2d, Flatten, Linear, ReLU, Tanh
from jaxplain.rules import composites as cs
from jaxplain.rules import lrp as rules
from jaxplain.rules.engine import forward_with_rules, module_calls
from tests.tiny import tiny_inputs, tiny_model

TARGET = jnp.array([0, 3, 4])


def epsilon_everywhere(epsilon: float, set_bias_to_zero: bool, **options) -> cs.Composite:
    """LRP-epsilon on every linear layer, Zennit's base map elsewhere."""
    return cs.Composite(layer_map=cs.base_layer_map(1e-12) + ((cs.LINEAR, rules.Epsilon(epsilon, set_bias_to_zero)),),
                        **options)


def logits(model, inputs):
    return np.asarray(model(inputs))[np.arange(len(TARGET)), np.asarray(TARGET)]


def test_relevance_is_conserved_through_residual_sums_without_bias():
    """Bias-free rules conserve relevance exactly: the residual sum splits it (Norm), it does not copy it."""
    model, inputs = tiny_model(), tiny_inputs()
    relevance = jx.lrp(model, inputs, TARGET, composite=epsilon_everywhere(1e-12, True))
    np.testing.assert_allclose(relevance.sum((1, 2, 3)), logits(model, inputs), rtol=1e-4)
    copied = epsilon_everywhere(1e-12, True, name_map=((("add",), rules.Gradient()),))
    leaked = jx.lrp(model, inputs, TARGET, composite=copied).sum((1, 2, 3))
    assert np.abs(leaked - logits(model, inputs)).max() > 1e-2 * np.abs(logits(model, inputs)).max()


def _without_biases(model: jx.Model) -> jx.Model:
    params = jax.tree_util.tree_map_with_path(
        lambda path, leaf: jnp.zeros_like(leaf) if path[-1].key == "bias" else leaf, model.variables["params"]
    )
    stats = jax.tree_util.tree_map(jnp.zeros_like, model.variables["batch_stats"])
    stats = {"bn1": {"mean": stats["bn1"]["mean"], "var": model.variables["batch_stats"]["bn1"]["var"]}}
    return model.replace_variables({"params": params, "batch_stats": stats})


def test_lrp_zero_equals_gradient_times_input_on_a_bias_free_relu_network():
    """Bach et al. 2015 / Ancona et al. 2018: LRP-0 with ReLUs passing relevance is gradient x input."""
    model, inputs = _without_biases(tiny_model()), tiny_inputs()
    relevance = jx.lrp(model, inputs, TARGET, composite=epsilon_everywhere(0.0, False))
    gradient_x_input = jx.input_x_gradient(model, inputs, TARGET)
    np.testing.assert_allclose(relevance, gradient_x_input, rtol=1e-4, atol=1e-5 * float(jnp.abs(gradient_x_input).max()))


def test_one_hot_start_scales_by_the_target_output():
    model, inputs = tiny_model(), tiny_inputs()
    from_output = jx.lrp(model, inputs, TARGET, composite="epsilon_plus_flat")
    from_one_hot = jx.lrp(model, inputs, TARGET, composite="epsilon_plus_flat", initial_relevance="one_hot")
    scale = logits(model, inputs)[:, None, None, None]
    np.testing.assert_allclose(from_one_hot * scale, from_output, rtol=1e-4, atol=1e-6)


def test_composite_by_name_equals_composite_object_and_options_reach_it():
    model, inputs = tiny_model(), tiny_inputs()
    by_name = jx.lrp(model, inputs, TARGET, composite="epsilon_gamma_box", low=-2.0, high=2.5, gamma=0.5)
    by_object = jx.lrp(model, inputs, TARGET, composite=jx.composites.EpsilonGammaBox(low=-2.0, high=2.5, gamma=0.5))
    np.testing.assert_array_equal(by_name, by_object)
    other_gamma = jx.lrp(model, inputs, TARGET, composite="epsilon_gamma_box", low=-2.0, high=2.5, gamma=0.1)
    assert not np.allclose(by_name, other_gamma)


def test_first_layer_rule_applies_to_the_first_linear_layer_only():
    """EpsilonPlusFlat: relevance of the first conv is Flat, which ignores the input values."""
    model = tiny_model()
    composite = jx.composites.EpsilonPlusFlat()
    calls = [(".".join(path), module) for path, module in module_calls(model, tiny_inputs()) if path]
    assert composite.first_layer(calls) == "conv1"
    assert isinstance(composite.rule_for(calls[0][1], "conv1", "conv1"), rules.Flat)
    conv2 = dict(calls)["conv2"]
    assert isinstance(composite.rule_for(conv2, "conv2", "conv1"), rules.ZPlus)


def test_batch_norm_pairs_follow_data_flow_in_densenet():
    """Each dense layer's conv1 feeds norm2; its conv2 does not feed the next norm1 (that reads a concatenation)."""
    model = jx.init_model(build("densenet121", num_classes=4), (1, 32, 32, 3))
    pairs = {(linear, norm) for linear, norm, _ in cs.batch_norm_pairs(model, jnp.zeros((1, 32, 32, 3)))}
    assert ("features.conv0", "features.norm0") in pairs
    assert ("features.denseblock1.denselayer1.conv1", "features.denseblock1.denselayer1.norm2") in pairs
    assert not any(linear.endswith("conv2") for linear, _ in pairs)
    assert len(pairs) == 1 + (6 + 12 + 24 + 16)


class SignNet(nn.Module):
    """conv1 reads the image, conv2 a tanh (negative values), conv3 a ReLU, fc an array operation (unknown sign)."""

    @nn.compact
    def __call__(self, x):
        x = Tanh(name="tanh")(Conv2d(4, 3, padding=1, name="conv1")(x))
        x = ReLU(name="relu")(Conv2d(4, 3, padding=1, name="conv2")(x))
        x = Conv2d(4, 3, padding=1, name="conv3")(x)
        return Linear(3, name="fc")(Flatten(name="flatten")(ReLU(name="relu3")(x)) * 1.0)


def test_nonnegative_inputs_follow_data_flow():
    """Only layers that read a ReLU (or a pool, sum, concatenation or flatten of ReLUs) are promised x >= 0."""
    signnet = jx.init_model(SignNet(), (1, 6, 6, 3))
    assert cs.nonnegative_inputs(signnet, jnp.zeros((1, 6, 6, 3))) == ("conv3",)
    for arch, stem in (("resnet18", "conv1"), ("densenet121", "features.conv0")):
        model = jx.init_model(build(arch, num_classes=4), (1, 32, 32, 3))
        linear = {".".join(path) for path, module in module_calls(model, jnp.zeros((1, 32, 32, 3)))
                  if isinstance(module, cs.LINEAR)}
        assert set(cs.nonnegative_inputs(model, jnp.zeros((1, 32, 32, 3)))) == linear - {stem}


def test_batch_norm_merge_leaves_the_forward_unchanged():
    """The canonized network (merged parameters, identity batch norms) computes the same logits."""
    model, inputs = tiny_model(), tiny_inputs()
    pairs = cs.batch_norm_pairs(model, inputs)
    assert [(linear, norm) for linear, norm, _ in pairs] == [("conv1", "bn1")]
    forward = forward_with_rules(model, cs.rule_map(cs.Composite(), model, None, pairs))
    np.testing.assert_allclose(forward(inputs), model(inputs), rtol=1e-5, atol=1e-6)


def test_jit_and_plain_calls_agree():
    model, inputs = tiny_model(), tiny_inputs()
    plain = jx.lrp(model, inputs, TARGET, composite="epsilon_alpha2_beta1")
    jitted = jax.jit(lambda m, x: jx.lrp(m, x, TARGET, composite="epsilon_alpha2_beta1"))(model, inputs)
    np.testing.assert_allclose(plain, jitted, rtol=1e-5, atol=1e-7)


class WithFlaxDense(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = ReLU(name="relu")(Conv2d(4, 3, name="conv")(x))
        return nn.Dense(3, name="head")(Flatten(name="flatten")(x))


def test_errors_name_the_problem():
    model, inputs = tiny_model(), tiny_inputs()
    with pytest.raises(ValueError, match="unknown composite 'epsilon_plush'.*epsilon_plus_flat"):
        jx.lrp(model, inputs, TARGET, composite="epsilon_plush")
    with pytest.raises(TypeError, match="only apply when the composite is given by name"):
        jx.lrp(model, inputs, TARGET, composite=jx.composites.EpsilonPlus(), epsilon=0.1)
    with pytest.raises(TypeError, match="epsilon_gamma_box"):
        jx.lrp(model, inputs, TARGET, composite="epsilon_gamma_box")
    with pytest.raises(ValueError, match="initial_relevance"):
        jx.lrp(model, inputs, TARGET, initial_relevance="ones")
    with pytest.raises(TypeError, match="lrp"):
        jx.lrp(lambda x: x.reshape(x.shape[0], -1)[:, :5], inputs, TARGET)
    foreign = jx.init_model(WithFlaxDense(), (1, 6, 6, 3))
    with pytest.raises(ValueError, match="no relevance rule for layer 'head' \\(Dense\\)"):
        jx.lrp(foreign, jnp.ones((1, 6, 6, 3)), 0)
    covered = jx.lrp(foreign, jnp.ones((1, 6, 6, 3)), 0, composite="epsilon_plus",
                     name_map=((("head",), rules.Gradient()),))
    assert covered.shape == (1, 6, 6, 3)


@pytest.mark.parametrize("name,options", [("epsilon_plus_flat", {}), ("epsilon_alpha2_beta1_flat", {}),
                                          ("epsilon_gamma_box", {"low": -3.0, "high": 3.0})])
def test_zero_inputs_and_zero_weights_give_finite_relevance(name, options):
    """All-zero activations and all-zero denominators meet the stabiliser, never a NaN or inf."""
    model = tiny_model()
    zero_input = jx.lrp(model, jnp.zeros((3, 12, 10, 3)), TARGET, composite=name, **options)
    assert np.isfinite(np.asarray(zero_input)).all()
    dead = model.replace_variables(jax.tree_util.tree_map(jnp.zeros_like, model.variables))
    zero_weights = jx.lrp(dead, tiny_inputs(), TARGET, composite=name, **options)
    assert np.isfinite(np.asarray(zero_weights)).all()


def test_vmap_over_examples_equals_the_batched_call():
    model, inputs = tiny_model(), tiny_inputs()
    batched = jx.lrp(model, inputs, TARGET, composite="epsilon_plus_flat")
    mapped = jax.vmap(lambda x, t: jx.lrp(model, x[None], t[None], composite="epsilon_plus_flat")[0])(inputs, TARGET)
    np.testing.assert_allclose(mapped, batched, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("arch", ["alexnet", "squeezenet1_1", "mobilenet_v2"])
def test_lrp_conserves_relevance_on_other_zoo_families(arch):
    """Bias-free z+ conserves the logit through each family's pooling, concatenations and sums.

    z+ rather than LRP-0: on deep random networks LRP-0's denominators are sums of large
    terms of both signs, and float32 cancellation breaks conservation numerically.
    MobileNetV2's depthwise 3x3 convolutions have nine inputs per output, so some units
    have no positive contribution (z+ = 0) and z+ absorbs their relevance there: it may
    lose relevance, never create it.
    """
    model = jx.init_model(build(arch, num_classes=5), (1, 64, 64, 3), key=jax.random.PRNGKey(1))
    inputs = jax.random.normal(jax.random.PRNGKey(2), (2, 64, 64, 3))
    outputs = np.asarray(model(inputs))
    target = jnp.asarray(np.argmax(outputs, axis=1))
    zplus = cs.Composite(layer_map=cs.base_layer_map(1e-9) + ((cs.LINEAR, rules.ZPlus(1e-9, True)),))
    relevance = np.asarray(jx.lrp(model, inputs, target, composite=zplus)).sum((1, 2, 3))
    expected = outputs[np.arange(2), np.asarray(target)]
    if arch == "mobilenet_v2":
        assert np.all(expected > 0) and np.all(relevance > 0.5 * expected) and np.all(relevance <= expected * 1.001)
    else:
        np.testing.assert_allclose(relevance, expected, rtol=1e-3, atol=1e-6)


def test_cabrnet_extractor_composite_by_name_conserves_relevance():
    """CaBRNet's extractor composite (ZBeta first, Alpha1Beta0, StackedSum, merged BN) on a bias-free net."""
    model, inputs = _without_biases(tiny_model()), tiny_inputs()
    outputs = np.asarray(model(inputs))
    target = jnp.asarray(np.argmax(outputs, axis=1))
    relevance = np.asarray(jx.lrp(model, inputs, target, composite="cabrnet_extractor", zbeta_lower_bound=-3.0,
                                  zbeta_upper_bound=3.0))
    np.testing.assert_allclose(relevance.sum((1, 2, 3)), outputs[np.arange(len(target)), np.asarray(target)], rtol=1e-3)
    assert isinstance(cs.get("cabrnet_extractor"), cs.CaBRNetExtractor)
