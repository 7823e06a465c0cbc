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
from jaxplain import program
from jaxplain.program.interpret import evaluate
from jaxplain.rules.relevance import folded
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


def _blocks(model, inputs, merge=True):
    return program.blocks_of(program.structured(model, "test"), inputs, merge=merge)


def test_first_layer_rule_applies_to_the_first_linear_layer_only():
    """EpsilonPlusFlat: relevance of the first conv is Flat, which ignores the input values."""
    model = tiny_model()
    composite = jx.composites.EpsilonPlusFlat()
    layers = [(block.name, block.kind) for block in _blocks(model, tiny_inputs()).blocks]
    assert composite.first_layer(layers) == "conv1"
    assert isinstance(composite.rule_for("convolution", "conv1", "conv1"), rules.Flat)
    assert isinstance(composite.rule_for("convolution", "conv2", "conv1"), rules.ZPlus)


def test_composites_take_layer_kinds_not_classes():
    with pytest.raises(TypeError, match="layer kinds"):
        cs.Composite(layer_map=(((Conv2d,), rules.Epsilon()),))
    with pytest.raises(ValueError, match="unknown layer kind 'convolutions'"):
        cs.Composite(layer_map=((("convolutions",), rules.Epsilon()),))


def test_batch_norm_pairs_follow_data_flow_in_densenet():
    """Each dense layer's conv1 feeds norm2; its conv2 does not feed the next norm1 (that reads a concatenation)."""
    model = jx.init_model(build("densenet121", num_classes=4), (1, 32, 32, 3))
    pairs = {(linear, norm) for norm, linear in _blocks(model, jnp.zeros((1, 32, 32, 3))).merged}
    assert ("features.conv0", "features.norm0") in pairs
    assert ("features.denseblock1.denselayer1.conv1", "features.denseblock1.denselayer1.norm2") in pairs
    assert not any(linear.endswith("conv2") for linear, _ in pairs)
    assert len(pairs) == 1 + (6 + 12 + 24 + 16)


class SignNet(nn.Module):
    """conv1 reads the image, conv2 a tanh (negative values), conv3 a ReLU, fc a ReLU times -1 (non-positive)."""

    @nn.compact
    def __call__(self, x):
        x = Tanh(name="tanh")(Conv2d(4, 3, padding=1, name="conv1")(x))
        x = ReLU(name="relu")(Conv2d(4, 3, padding=1, name="conv2")(x))
        x = Conv2d(4, 3, padding=1, name="conv3")(x)
        return Linear(3, name="fc")(Flatten(name="flatten")(ReLU(name="relu3")(x)) * -1.0)


def test_nonnegative_inputs_follow_data_flow():
    """Only layers that read a ReLU (or a pool, sum, concatenation or flatten of ReLUs) are promised x >= 0."""
    signnet = jx.init_model(SignNet(), (1, 6, 6, 3))
    assert _blocks(signnet, jnp.zeros((1, 6, 6, 3))).nonnegative == ("conv3",)
    for arch, stem in (("resnet18", "conv1"), ("densenet121", "features.conv0")):
        model = jx.init_model(build(arch, num_classes=4), (1, 32, 32, 3))
        view = _blocks(model, jnp.zeros((1, 32, 32, 3)))
        linear = {block.name for block in view.blocks if block.kind in cs.LINEAR}
        assert set(view.nonnegative) == linear - {stem}


def test_batch_norm_merge_leaves_the_forward_unchanged():
    """The canonized network (folded parameters, the batch norm inside the conv's block) computes the same logits."""
    model, inputs = tiny_model(), tiny_inputs()
    structured = program.structured(model, "test")
    view = _blocks(model, inputs)
    assert view.merged == (("bn1", "conv1"),)

    def folded_forward(block, call, x):
        forward, params = folded(block, call)
        return forward(params, x)

    rules_map = lambda block: folded_forward if block.kind in cs.LINEAR else None  # noqa: E731
    outputs = evaluate(program.graph_of(structured, inputs), program.params_of(structured), inputs,
                       rules=rules_map, units=view.blocks)[0]
    np.testing.assert_allclose(outputs, model(inputs), rtol=1e-5, atol=1e-6)


def test_jit_and_plain_calls_agree():
    model, inputs = tiny_model(), tiny_inputs()
    plain = jx.lrp(model, inputs, TARGET, composite="epsilon_alpha2_beta1")
    jitted = jax.jit(lambda m, x: jx.lrp(m, x, TARGET, composite="epsilon_alpha2_beta1"))(model, inputs)
    np.testing.assert_allclose(plain, jitted, rtol=1e-5, atol=1e-7)


class WithMaxHead(nn.Module):
    """A flax Dense head (a dense block like any other) after a spatial max: no rule can reach the max."""

    @nn.compact
    def __call__(self, x):
        x = ReLU(name="relu")(Conv2d(4, 3, name="conv")(x))
        return nn.Dense(3, name="head")(jnp.max(x, axis=(1, 2)))


class WithGate(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = Flatten(name="flatten")(x)
        return nn.Dense(3, name="head")(nn.Dense(4, name="a")(x) * nn.sigmoid(nn.Dense(4, name="b")(x)))


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
    foreign = jx.init_model(WithMaxHead(), (1, 6, 6, 3))
    with pytest.raises(ValueError, match="reduce_max.*plain gradient"):
        jx.lrp(foreign, jnp.ones((1, 6, 6, 3)), 0)
    gated = jx.init_model(WithGate(), (1, 6, 6, 3))
    with pytest.raises(ValueError, match="no rule for the product layer at the top level.*attn_lrp"):
        jx.lrp(gated, jnp.ones((1, 6, 6, 3)), 0)
    with pytest.raises(TypeError, match="ZPlus applies to convolution and dense layers, not to the sum layer"):
        jx.lrp(model, inputs, TARGET, composite="epsilon_plus", layer_map=((("sum",), rules.ZPlus()),))
    covered = jx.lrp(gated, jnp.ones((1, 6, 6, 3)), 0, composite="epsilon_plus",
                     layer_map=((("product",), rules.Gradient()),))
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
