"""Axioms, invariances and input checks of the gradient family (parity lives in tests/parity)."""

from __future__ import annotations

import os
import subprocess
import sys

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxplain as jx
from jaxplain.nets.layers import Linear
from jaxplain.attribution import gradient as gradient_module
from tests.tiny import tiny_inputs, tiny_model

TARGETS = jnp.array([0, 3, 4])
KEY = jax.random.PRNGKey(0)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def inputs():
    return tiny_inputs()


@settings(max_examples=10, deadline=None)
@given(
    n_steps=st.integers(2, 12),
    method=st.sampled_from(["gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"]),
    seed=st.integers(0, 2**16),
)
def test_integrated_gradients_exact_on_linear_functions(n_steps, method, seed):
    rng = np.random.default_rng(seed)
    weights = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
    x, baseline = (jnp.asarray(rng.normal(size=(2, 6)), jnp.float32) for _ in range(2))
    linear = lambda v: v @ weights + 1.0
    attributions, delta = jx.integrated_gradients(
        linear, x, 2, baselines=baseline, n_steps=n_steps, method=method, return_convergence_delta=True
    )
    np.testing.assert_allclose(attributions, (x - baseline) * weights[:, 2], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(delta, 0.0, atol=1e-4)


def test_captum_trapezoid_reproduces_its_completeness_gap():
    alphas, steps = jx.attribution.path.path_points("riemann_trapezoid_captum", 10)
    np.testing.assert_allclose(steps.sum(), 0.9)
    np.testing.assert_allclose(alphas, np.linspace(0, 1, 10))
    np.testing.assert_allclose(jx.attribution.path.path_points("riemann_trapezoid", 10)[1].sum(), 1.0)


def test_integrated_gradients_delta_matches_definition_and_shrinks(model, inputs):
    baseline = 0.1 * tiny_inputs(seed=7)
    deltas = []
    for n_steps in (4, 64):
        attributions, delta = jx.integrated_gradients(
            model, inputs, TARGETS, baselines=baseline, n_steps=n_steps, return_convergence_delta=True
        )
        gap = jnp.take_along_axis(model(inputs) - model(baseline), TARGETS[:, None], 1)[:, 0]
        np.testing.assert_allclose(delta, attributions.sum(axis=(1, 2, 3)) - gap, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(jx.convergence_delta(model, attributions, inputs, TARGETS, baselines=baseline), delta, atol=1e-5)
        deltas.append(float(jnp.abs(delta).max()))
    assert deltas[1] < 0.05 * float(jnp.abs(gap).max())


@pytest.mark.parametrize("method,options", [(jx.saliency, {}), (jx.integrated_gradients, {"n_steps": 5})])
def test_noise_tunnel_without_noise_is_the_method(model, inputs, method, options):
    plain = method(model, inputs, TARGETS, **options)
    tunnelled = jx.noise_tunnel(method)(model, inputs, TARGETS, key=KEY, stdevs=0.0, nt_samples=3, **options)
    np.testing.assert_allclose(tunnelled, plain, rtol=1e-5, atol=1e-7)


def test_vargrad_is_smoothgrad_sq_minus_smoothgrad_squared(model, inputs):
    tunnel = jx.noise_tunnel(jx.saliency)
    results = {t: tunnel(model, inputs, TARGETS, key=KEY, nt_type=t, stdevs=0.5, abs=False) for t in jx.attribution.noise.NT_TYPES}
    np.testing.assert_allclose(results["vargrad"], results["smoothgrad_sq"] - results["smoothgrad"] ** 2, atol=1e-6)
    assert float(jnp.abs(results["vargrad"]).max()) > 0


STOCHASTIC = [
    (jx.smoothgrad, {"stdevs": 0.5}),
    (jx.gradient_shap, {"baselines": tiny_inputs(batch=4, seed=3), "stdevs": 0.1}),
    (jx.noise_tunnel(jx.input_x_gradient), {"stdevs": 0.3}),
]


@pytest.mark.parametrize("method,options", STOCHASTIC)
def test_same_key_same_answer_other_key_differs(model, inputs, method, options):
    first = method(model, inputs, TARGETS, key=KEY, **options)
    again = method(model, inputs, TARGETS, key=KEY, **options)
    other = method(model, inputs, TARGETS, key=jax.random.PRNGKey(1), **options)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


CHUNKED = [
    (jx.integrated_gradients, {"n_steps": 7}, "batch_size"),
    (jx.smoothgrad, {"key": KEY, "nt_samples": 5, "stdevs": 0.4}, "batch_size"),
    (jx.gradient_shap, {"key": KEY, "baselines": tiny_inputs(batch=4, seed=3), "n_samples": 5}, "batch_size"),
    (jx.noise_tunnel(jx.integrated_gradients), {"key": KEY, "nt_samples": 4, "n_steps": 3, "nt_type": "vargrad"}, "nt_samples_batch_size"),
]


@pytest.mark.parametrize("method,options,chunk_option", CHUNKED)
def test_chunked_equals_unchunked(model, inputs, method, options, chunk_option):
    whole = method(model, inputs, TARGETS, **options)
    for size in (1, 3):
        np.testing.assert_allclose(method(model, inputs, TARGETS, **options, **{chunk_option: size}), whole, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "method,options",
    [(jx.saliency, {}), (jx.integrated_gradients, {"n_steps": 4}), (jx.guided_backprop, {}), (jx.deconvolution, {})],
)
def test_batch_of_one_equals_row_of_batch(model, inputs, method, options):
    whole = method(model, inputs, TARGETS, **options)
    for row in range(inputs.shape[0]):
        np.testing.assert_allclose(method(model, inputs[row : row + 1], TARGETS[row], **options)[0], whole[row], rtol=1e-5, atol=1e-7)


def test_methods_compose_with_jit_and_vmap(model, inputs):
    direct = jx.integrated_gradients(model, inputs, TARGETS, n_steps=6)
    jitted = jax.jit(lambda m, x: jx.integrated_gradients(m, x, TARGETS, n_steps=6))(model, inputs)
    np.testing.assert_allclose(jitted, direct, rtol=1e-6, atol=1e-7)
    stacked = jnp.stack([inputs, inputs[::-1]])
    mapped = jax.vmap(lambda x: jx.saliency(model, x, TARGETS))(stacked)
    np.testing.assert_allclose(mapped[1], jx.saliency(model, inputs[::-1], TARGETS), rtol=1e-6)


def test_no_retracing_for_a_second_call_of_the_same_shape(model, inputs, monkeypatch):
    counted = chex.assert_max_traces(gradient_module._saliency_core, n=1)
    monkeypatch.setattr(gradient_module, "_saliency_core", counted)
    jx.saliency(model, inputs, TARGETS)
    jx.saliency(model, inputs + 1.0, jnp.array([1, 1, 1]))
    jx.saliency(model.replace_variables(tiny_model(seed=4).variables), inputs, TARGETS)


def test_target_none_means_the_predicted_class():
    weights = jax.random.normal(jax.random.PRNGKey(4), (12, 6))
    linear = lambda x: jnp.tanh(x.reshape(x.shape[0], -1)) @ weights
    x = jax.random.normal(jax.random.PRNGKey(5), (8, 12))
    predicted = jnp.argmax(linear(x), axis=-1)
    assert len(set(predicted.tolist())) > 1, "the check needs examples predicting different classes"
    np.testing.assert_array_equal(jx.saliency(linear, x, None), jx.saliency(linear, x, predicted))


def test_smoothgrad_noise_conventions(model, inputs):
    ranges = inputs.reshape(3, -1).max(1) - inputs.reshape(3, -1).min(1)
    tunnel = jx.noise_tunnel(jx.saliency)
    np.testing.assert_allclose(
        jx.smoothgrad(model, inputs, TARGETS, key=KEY, noise_ratio=0.2),
        tunnel(model, inputs, TARGETS, key=KEY, stdevs=0.2 * ranges),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        jx.smoothgrad(model, inputs, TARGETS, key=KEY, sigma_multiplier=4.0, abs=False),
        tunnel(model, inputs, TARGETS, key=KEY, stdevs=(4.0 / ranges) ** 2, abs=False),
        rtol=1e-6,
    )


def test_guided_backprop_and_deconvolution_refuse_a_model_without_relus():
    linear = jx.init_model(_Dense(), (1, 1, 1, 4))
    x = jnp.ones((2, 1, 1, 4))
    for method in (jx.guided_backprop, jx.deconvolution):
        with pytest.raises(ValueError, match="act on ReLUs.*has none"):
            method(linear, x, 1)


def _tanh_relu(params, x):
    return jax.nn.relu(jnp.tanh(x) @ params["w1"]) @ params["w2"]


def test_guided_backprop_and_deconvolution_modify_only_relus():
    key1, key2, key3 = jax.random.split(jax.random.PRNGKey(3), 3)
    params = {"w1": jax.random.normal(key1, (5, 7)), "w2": jax.random.normal(key2, (7, 3))}
    x = jax.random.normal(key3, (4, 5))
    model = jx.Model.from_function(_tanh_relu, params)
    g = params["w2"][:, 1]
    z = jnp.tanh(x) @ params["w1"]
    tanh_slope = 1 - jnp.tanh(x) ** 2
    guided = (jnp.where(z > 0, jnp.maximum(g, 0), 0.0) @ params["w1"].T) * tanh_slope
    deconv = (jnp.broadcast_to(jnp.maximum(g, 0), z.shape) @ params["w1"].T) * tanh_slope
    np.testing.assert_allclose(jx.guided_backprop(model, x, 1), guided, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jx.deconvolution(model, x, 1), deconv, rtol=1e-5, atol=1e-6)


def test_guided_backprop_zeroes_negative_gradients(model, inputs):
    torchray = jx.guided_backprop(model, inputs, TARGETS, flavour="torchray", gradient_to_saliency=True)
    assert torchray.shape == inputs.shape[:3] + (1,)
    assert float(torchray.min()) >= 0


def test_import_restricts_miscompiling_ynnpack_fusions_on_affected_jaxlib():
    code = (
        "import os, jaxplain, jaxplain._xla as x; v = x._jaxlib_version(); "
        "assert not v.startswith(x.AFFECTED_JAXLIB) or x.SAFE_YNN_FUSIONS in os.environ['XLA_FLAGS']"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={k: v for k, v in os.environ.items() if k != "XLA_FLAGS"})


def test_import_leaves_torch_out():
    code = "import sys, jaxplain; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


class _Dense(nn.Module):
    @nn.compact
    def __call__(self, x):
        return Linear(3, name="fc")(x.reshape(x.shape[0], -1))


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda m, x: jx.saliency(m, x[0], 1), ValueError, "NHWC"),
        (lambda m, x: jx.saliency(m, x.transpose(0, 3, 1, 2), 1), ValueError, "looks like NCHW"),
        (lambda m, x: jx.saliency(m, x, 5), ValueError, "out of range"),
        (lambda m, x: jx.saliency(m, x, jnp.array([0, 1])), ValueError, r"shape \[3\]"),
        (lambda m, x: jx.saliency(m, x, 1.5), TypeError, "int"),
        (lambda m, x: jx.saliency(m, x.at[0, 0, 0, 0].set(jnp.nan), 1), ValueError, "NaN"),
        (lambda m, x: jx.saliency(m, x, 1, smooth=True), TypeError, "smooth"),
        (lambda m, x: jx.integrated_gradients(m, x, 1, method="simpson"), ValueError, "simpson"),
        (lambda m, x: jx.integrated_gradients(m, x, 1, baselines=jnp.zeros((2, 2))), ValueError, "broadcast"),
        (lambda m, x: jx.integrated_gradients(m, x, 1, batch_size=0), ValueError, "batch_size"),
        (lambda m, x: jx.smoothgrad(m, x, 1, key=None), ValueError, "key"),
        (lambda m, x: jx.smoothgrad(m, x, 1, key=KEY, stdevs=0.1, noise_ratio=0.1), ValueError, "only one"),
        (lambda m, x: jx.noise_tunnel(jx.saliency)(m, x, 1, key=KEY, n_steps=3), TypeError, "n_steps"),
        (lambda m, x: jx.noise_tunnel(jx.saliency)(m, x, 1, key=KEY, nt_type="mean"), ValueError, "nt_type"),
        (lambda m, x: jx.guided_backprop(lambda v: m(v), x, 1), TypeError, "Model.from_function"),
        (lambda m, x: jx.gradient_shap(m, x, 1, key=KEY, baselines=x[0]), ValueError, "distribution"),
    ],
)
def test_bad_input_raises_a_clear_error(model, inputs, call, error, match):
    with pytest.raises(error, match=match):
        call(model, inputs)
