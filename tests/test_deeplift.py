"""DeepLift's axioms, invariances and input checks (parity with Captum lives in tests/parity)."""

from __future__ import annotations

from functools import partial

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxplain as jx
from jaxplain.attribution import deeplift as deeplift_module
from jaxplain.nets import layers
from tests.tiny import tiny_inputs, tiny_model

TARGETS = jnp.array([0, 3, 4])


class EveryRule(nn.Module):
    """Every DeepLift rule but softmax's: an overlapping max pool and each activation."""

    @nn.compact
    def __call__(self, x):
        x = layers.LeakyReLU(0.1, name="leaky")(layers.Conv2d(6, 3, padding=1, name="conv1")(x))
        x = layers.MaxPool2d(3, 2, 1, name="pool")(x)
        for index, activation in enumerate(
            [layers.ELU(0.7), layers.ReLU6(), layers.Tanh(), layers.Softplus(2.0, 1.0), layers.Sigmoid(), layers.ReLU()]
        ):
            x = activation(layers.Conv2d(6, 3, padding=1, name=f"conv{index + 2}")(x))
        return layers.Linear(5, name="fc")(layers.Flatten(name="flatten")(x))


def every_rule_model(seed: int = 0) -> jx.Model:
    model = jx.init_model(EveryRule(), (1, 12, 10, 3), key=jax.random.PRNGKey(seed))
    return model.replace_variables(jax.tree_util.tree_map(lambda p: 3.0 * p, model.variables))


class Dense(nn.Module):
    softmax: bool = False

    @nn.compact
    def __call__(self, x):
        x = layers.Linear(5, name="fc")(layers.Flatten(name="flatten")(x))
        return layers.Softmax(name="softmax")(x) if self.softmax else x


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def inputs():
    return tiny_inputs()


def gap(model, inputs, baselines, target):
    difference = model(inputs) - model(jnp.broadcast_to(baselines, inputs.shape))
    return jnp.take_along_axis(difference, jnp.asarray(target)[:, None], axis=1)[:, 0]


def baselines_of(kind: str, inputs):
    return {
        "zero": None,
        "scalar": 0.3,
        "channel": jnp.array([0.2, -0.4, 1.0]),
        "full": 0.7 * tiny_inputs(inputs.shape[0], seed=9),
    }[kind]


@pytest.mark.parametrize("kind", ["zero", "scalar", "channel", "full"])
def test_summation_to_delta_on_the_tiny_net(model, inputs, kind):
    baselines = baselines_of(kind, inputs)
    attributions, delta = jx.deeplift(model, inputs, TARGETS, baselines=baselines, return_convergence_delta=True)
    reference = gap(model, inputs, 0.0 if baselines is None else baselines, TARGETS)
    np.testing.assert_allclose(attributions.sum(axis=(1, 2, 3)), reference, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(delta, attributions.sum(axis=(1, 2, 3)) - reference, atol=1e-5)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**16), scale=st.sampled_from([0.1, 1.0, 3.0]))
def test_summation_to_delta_through_every_rule(seed, scale):
    model = every_rule_model()
    rng = np.random.default_rng(seed)
    x, baselines = (jnp.asarray(scale * rng.normal(size=(3, 12, 10, 3)), jnp.float32) for _ in range(2))
    attributions, delta = jx.deeplift(model, x, TARGETS, baselines=baselines, return_convergence_delta=True)
    scale_of_sum = float(jnp.abs(attributions).sum(axis=(1, 2, 3)).max())
    np.testing.assert_allclose(delta, 0.0, atol=1e-5 * scale_of_sum + 1e-6)


def test_captum_flavour_misses_the_delta_where_captum_does():
    model = every_rule_model()
    x, baselines = tiny_inputs(seed=2), tiny_inputs(seed=3)
    _, delta = jx.deeplift(model, x, TARGETS, baselines=baselines, return_convergence_delta=True, flavour="captum")
    assert float(jnp.abs(delta).max()) > 1e-3


@pytest.fixture(scope="module")
def resnet():
    from tests.parity._torch import converted

    return converted("resnet18", seed=3)[1]


@pytest.mark.parametrize("layer,to_input", [(None, False), ("layer4", True)])
def test_summation_to_delta_on_a_converted_resnet18(resnet, layer, to_input):
    images = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 48, 3))
    targets = jnp.array([1, 8])
    for baselines in (None, jnp.array([0.5, -0.2, 0.1]), 0.5 * jax.random.normal(jax.random.PRNGKey(1), images.shape)):
        if layer is None:
            attributions = jx.deeplift(resnet, images, targets, baselines=baselines)
        else:
            attributions = jx.layer_deeplift(
                resnet, images, targets, layer=layer, baselines=baselines, attribute_to_layer_input=to_input
            )
        reference = gap(resnet, images, 0.0 if baselines is None else baselines, targets)
        total = attributions.reshape(2, -1).sum(axis=1)
        scale = float(jnp.abs(attributions).reshape(2, -1).sum(axis=1).max())
        np.testing.assert_allclose(total, reference, atol=1e-4 * scale)


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_linear_model_gives_difference_times_weight(seed):
    model = jx.init_model(Dense(), (1, 4, 3, 2), key=jax.random.PRNGKey(seed))
    rng = np.random.default_rng(seed)
    x, baselines = (jnp.asarray(rng.normal(size=(2, 4, 3, 2)), jnp.float32) for _ in range(2))
    kernel = model.variables["params"]["fc"]["kernel"]  # [C*H*W in torch's NCHW order, 5]
    weight = kernel[:, 2].reshape(2, 4, 3).transpose(1, 2, 0)
    attributions = jx.deeplift(model, x, 2, baselines=baselines)
    np.testing.assert_allclose(attributions, (x - baselines) * weight, rtol=1e-5, atol=1e-6)


def test_deeplift_shap_is_the_mean_over_baselines_chunked_or_not(model, inputs):
    distribution = jnp.stack([0.5 * tiny_inputs(3, seed=s)[0] for s in range(4)])
    whole, deltas = jx.deeplift_shap(model, inputs, TARGETS, baselines=distribution, return_convergence_delta=True)
    chunked, chunked_deltas = jx.deeplift_shap(
        model, inputs, TARGETS, baselines=distribution, batch_size=3, return_convergence_delta=True
    )
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(chunked_deltas, deltas, atol=1e-6)
    per_baseline, per_delta = jax.vmap(
        lambda b: jx.deeplift(model, inputs, TARGETS, baselines=b, return_convergence_delta=True)
    )(distribution)
    np.testing.assert_allclose(whole, per_baseline.mean(axis=0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(deltas, per_delta.T, atol=1e-6)
    assert deltas.shape == (3, 4)


@pytest.mark.parametrize("method,options", [(jx.deeplift, {}), (jx.layer_deeplift, {"layer": "conv2"})])
def test_batch_of_one_equals_row_of_batch(model, inputs, method, options):
    baselines = baselines_of("full", inputs)
    whole = method(model, inputs, TARGETS, baselines=baselines, **options)
    for row in range(inputs.shape[0]):
        one = method(model, inputs[row : row + 1], TARGETS[row], baselines=baselines[row : row + 1], **options)
        np.testing.assert_allclose(one[0], whole[row], rtol=1e-5, atol=1e-7)


def test_jit_and_vmap(model, inputs):
    baselines = baselines_of("full", inputs)
    direct = jx.deeplift(model, inputs, TARGETS, baselines=baselines)
    jitted = jax.jit(lambda m, x, b: jx.deeplift(m, x, TARGETS, baselines=b))(model, inputs, baselines)
    np.testing.assert_allclose(jitted, direct, rtol=1e-6, atol=1e-7)
    layer = partial(jx.layer_deeplift, model, target=TARGETS, layer="add", baselines=baselines)
    mapped = jax.vmap(layer)(jnp.stack([inputs, inputs[::-1]]))
    np.testing.assert_allclose(mapped[1], layer(inputs[::-1]), rtol=1e-5, atol=1e-7)


def test_no_retracing_for_new_values_of_the_same_shapes(model, inputs, monkeypatch):
    counted = chex.assert_max_traces(deeplift_module._deeplift_core, n=1)
    monkeypatch.setattr(deeplift_module, "_deeplift_core", counted)
    jx.deeplift(model, inputs, TARGETS)
    jx.deeplift(model, inputs + 1.0, jnp.array([1, 1, 1]), baselines=0.5)
    jx.deeplift(model.replace_variables(tiny_model(seed=4).variables), inputs, TARGETS, baselines=inputs[::-1])


def test_softmax_mean_per_example_unless_captums_whole_batch_mean():
    model = jx.init_model(Dense(softmax=True), (1, 4, 3, 2), key=jax.random.PRNGKey(1))
    x, baselines = (jax.random.normal(jax.random.PRNGKey(k), (3, 4, 3, 2)) for k in (2, 3))
    ours = jx.deeplift(model, x, TARGETS, baselines=baselines)
    captum = jx.deeplift(model, x, TARGETS, baselines=baselines, flavour="captum")
    for row in range(3):
        pick = slice(row, row + 1)
        one = {
            flavour: jx.deeplift(model, x[pick], TARGETS[row], baselines=baselines[pick], flavour=flavour)[0]
            for flavour in ("rescale", "captum")
        }
        np.testing.assert_allclose(one["rescale"], ours[row], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(one["captum"], one["rescale"], rtol=1e-5, atol=1e-7)
    assert not np.allclose(captum, ours, rtol=1e-3, atol=1e-5), "Captum's mean spans the batch"


def test_layer_attributions_to_the_inputs_of_a_sum_are_a_pair_that_sums_to_delta(model, inputs):
    attributions, delta = jx.layer_deeplift(
        model, inputs, TARGETS, layer="add", attribute_to_layer_input=True, return_convergence_delta=True
    )
    assert isinstance(attributions, tuple) and len(attributions) == 2
    np.testing.assert_allclose(delta, 0.0, atol=1e-5)


def test_layer_attributions_are_activation_difference_times_multiplier(model, inputs):
    baselines = baselines_of("full", inputs)
    layer = partial(jx.layer_deeplift, model, inputs, TARGETS, layer="conv2", baselines=baselines)
    multipliers, attributions = layer(multiply_by_inputs=False), layer()
    activation = partial(jx.layer_activation, model, layer="conv2")
    difference = activation(inputs) - activation(baselines)
    assert attributions.shape == (3, 6, 5, 6)
    np.testing.assert_allclose(attributions, difference * multipliers, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda m, x: jx.deeplift(lambda v: m(v), x, 1), TypeError, "Model.from_function"),
        (lambda m, x: jx.deeplift_shap(lambda v: m(v), x, 1, baselines=x[:2]), TypeError, "Model.from_function"),
        (lambda m, x: jx.layer_deeplift(lambda v: m(v), x, 1, layer="conv2"), TypeError, "Model.from_function"),
        (lambda m, x: jx.layer_deeplift(m, x, 1, layer="conv3"), ValueError, "conv2"),
        (lambda m, x: jx.layer_deeplift(m, x, 1, layer="relu"), ValueError, "relu1, relu2|relu2, relu1"),
        (lambda m, x: jx.deeplift_shap(m, x, 1, baselines=x[:1]), ValueError, "B > 1"),
        (lambda m, x: jx.deeplift_shap(m, x, 1, baselines=x[0]), ValueError, "distribution"),
        (lambda m, x: jx.deeplift_shap(m, x, 1, baselines=0.0), ValueError, "B > 1"),
        (lambda m, x: jx.deeplift_shap(m, x, 1, baselines=x, batch_size=0), ValueError, "batch_size"),
        (lambda m, x: jx.deeplift(m, x, 1, baselines=jnp.zeros((2, 2))), ValueError, "broadcast"),
        (lambda m, x: jx.deeplift(m, x, 1, flavour="revealcancel"), ValueError, "flavour"),
        (lambda m, x: jx.deeplift(m, x.transpose(0, 3, 1, 2), 1), ValueError, "NCHW"),
    ],
)
def test_bad_input_raises_a_clear_error(model, inputs, call, error, match):
    with pytest.raises(error, match=match):
        call(model, inputs)
