"""Axioms, invariances and input checks of the layer and CAM methods."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jx
from jaxplain.image import interpolate
from jaxplain.nets.resnet import resnet18
from tests.tiny import tiny_inputs, tiny_model

TARGETS = jnp.array([0, 3, 4])
KEY = jax.random.PRNGKey(0)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def inputs():
    return tiny_inputs()


def test_gradcam_of_a_global_pool_linear_head_is_the_class_weighted_activation_map():
    model = jx.init_model(resnet18(num_classes=6), (1, 64, 64, 3), key=jax.random.PRNGKey(2))
    x = jax.random.normal(jax.random.PRNGKey(3), (2, 64, 80, 3))
    target = jnp.array([1, 4])
    activation = jx.layer_activation(model, x, layer="layer4")
    weights = model.variables["params"]["fc"]["kernel"][:, target].T  # [N, C]
    area = activation.shape[1] * activation.shape[2]
    expected = jnp.einsum("nhwc,nc->nhw", activation, weights)[..., None] / area
    np.testing.assert_allclose(jx.layer_gradcam(model, x, target, layer="layer4"), expected, rtol=1e-4, atol=1e-6)


def test_conductance_at_a_full_cut_is_complete(model, inputs):
    baseline = 0.2 * tiny_inputs(seed=9)
    conductance = jx.layer_conductance(model, inputs, TARGETS, layer="relu1", baselines=baseline, n_steps=200)
    gap = jnp.take_along_axis(model(inputs) - model(baseline), TARGETS[:, None], 1)[:, 0]
    np.testing.assert_allclose(conductance.sum(axis=(1, 2, 3)), gap, rtol=2e-2, atol=2e-3)


@pytest.mark.parametrize(
    "method,options",
    [
        (jx.internal_influence, {"n_steps": 7}),
        (jx.layer_conductance, {"n_steps": 7}),
        (jx.layer_gradient_shap, {"key": KEY, "baselines": tiny_inputs(batch=2, seed=5), "n_samples": 5}),
        (jx.score_cam, {}),
    ],
)
def test_chunked_equals_unchunked(model, inputs, method, options):
    whole = method(model, inputs, TARGETS, layer="conv2", batch_size=None, **options)
    for size in (1, 4):
        np.testing.assert_allclose(method(model, inputs, TARGETS, layer="conv2", batch_size=size, **options), whole, rtol=1e-5, atol=1e-6)


def test_several_layers_in_one_call_equal_one_call_each(model, inputs):
    layers = ("conv1", "add", "fc")
    for method, options in ((jx.layer_gradient_x_activation, {}), (jx.layer_conductance, {"n_steps": 4})):
        together = method(model, inputs, TARGETS, layer=layers, **options)
        assert isinstance(together, tuple) and len(together) == 3
        for layer, result in zip(layers, together):
            np.testing.assert_allclose(result, method(model, inputs, TARGETS, layer=layer, **options), rtol=1e-5, atol=1e-7)
    activations = jx.layer_activation(model, inputs, layer=["conv1", "fc"])
    np.testing.assert_allclose(activations[1], model(inputs), rtol=1e-6)


def test_layer_input_of_a_sum_is_a_pair(model, inputs):
    first, second = jx.layer_gradient_x_activation(model, inputs, TARGETS, layer="add", attribute_to_layer_input=True)
    gradient_times_sum = jx.layer_gradient_x_activation(model, inputs, TARGETS, layer="add")
    np.testing.assert_allclose(first + second, gradient_times_sum, rtol=1e-5, atol=1e-6)


def test_score_cam_is_a_normalised_map(model, inputs):
    cam = jx.score_cam(model, inputs, TARGETS, layer="relu2")
    assert cam.shape == inputs.shape[:3] + (1,)
    np.testing.assert_allclose(cam.reshape(3, -1).min(1), 0.0, atol=1e-6)
    np.testing.assert_allclose(cam.reshape(3, -1).max(1), 1.0, atol=1e-6)


def score_cam_channel_loop(model, inputs, targets, layer):
    """Score-CAM one image and one channel at a time, every channel evaluated (constant maps weigh 0)."""
    activation = np.asarray(jx.layer_activation(model, inputs, layer=layer))
    cams = []
    for image, target in zip(range(inputs.shape[0]), np.asarray(targets)):
        cam = np.zeros(inputs.shape[1:3] + (1,))
        for channel in range(activation.shape[-1]):
            upsampled = np.asarray(interpolate(jnp.asarray(activation[image : image + 1, ..., channel : channel + 1]),
                                               inputs.shape[1:3], "bilinear"))[0]
            low, high = upsampled.min(), upsampled.max()
            if high == low:
                continue
            masked = inputs[image : image + 1] * jnp.asarray((upsampled - low) / (high - low))
            cam += float(jax.nn.softmax(model(masked), axis=-1)[0, target]) * upsampled
        cam = np.maximum(cam, 0)
        cams.append((cam - cam.min()) / (cam.max() - cam.min()))
    return np.stack(cams)


def test_score_cam_skips_constant_channels_and_equals_the_channel_loop(model, inputs):
    """Channel 2 of relu2 is dead (bias -1e3) and skipped; the packed passes equal the loop.

    With 15 live pairs, ``batch_size=4`` packs 12 pairs a pass, so the second pass runs
    past the live pairs into the padding (which must not count).
    """
    params = model.variables["params"]
    conv2 = {**params["conv2"], "bias": params["conv2"]["bias"].at[2].set(-1e3)}
    dead = model.replace_variables({**model.variables, "params": {**params, "conv2": conv2}})
    activation = jx.layer_activation(dead, inputs, layer="relu2")
    assert float(jnp.abs(activation[..., 2]).max()) == 0.0
    expected = score_cam_channel_loop(dead, inputs, TARGETS, "relu2")
    for batch_size in (1, 4, None):
        np.testing.assert_allclose(jx.score_cam(dead, inputs, TARGETS, layer="relu2", batch_size=batch_size), expected,
                                   rtol=1e-5, atol=1e-5)


def test_layer_methods_compose_with_jit(model, inputs):
    direct = jx.layer_gradcam(model, inputs, TARGETS, layer="relu2", upsample="bilinear")
    jitted = jax.jit(lambda m, x: jx.layer_gradcam(m, x, TARGETS, layer="relu2", upsample="bilinear"))(model, inputs)
    np.testing.assert_allclose(jitted, direct, rtol=1e-6, atol=1e-7)


def test_torchray_gradcam_is_relu_and_bilinear(model, inputs):
    torchray = jx.layer_gradcam(model, inputs, TARGETS, layer="relu2", flavour="torchray", upsample="nearest")
    expected = jx.layer_gradcam(model, inputs, TARGETS, layer="relu2", relu_attributions=True, upsample="bilinear")
    np.testing.assert_allclose(torchray, expected)


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda m, x: jx.layer_gradcam(m, x, 1, layer="conv3"), ValueError, "unknown layer 'conv3'.*conv2"),
        (lambda m, x: jx.layer_gradcam(m, x, 1, layer=("conv1", "conv2")), TypeError, "one dotted path"),
        (lambda m, x: jx.layer_gradcam(lambda v: m(v), x, 1, layer="conv1"), TypeError, "Model.from_function"),
        (lambda m, x: jx.layer_gradcam(m, x, 1, layer="conv1", upsample="cubic"), ValueError, "upsample"),
        (lambda m, x: jx.layer_activation(m, x, layer=3), TypeError, "dotted path"),
        (lambda m, x: jx.layer_activation_guided_backprop(m, x, 6, layer="conv2"), ValueError, "out of range"),
        (lambda m, x: jx.layer_conductance(m, x, 1, layer="conv1", batch_size=0), ValueError, "batch_size"),
        (lambda m, x: jx.score_cam(m, x, 9, layer="conv1"), ValueError, "out of range"),
    ],
)
def test_bad_input_raises_a_clear_error(model, inputs, call, error, match):
    with pytest.raises(error, match=match):
        call(model, inputs)
