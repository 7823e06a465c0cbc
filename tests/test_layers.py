"""Primitive layers against torch: values and gradients, edge cases included."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxplain.nets import layers


def apply(module, x):
    variables = module.init(jax.random.PRNGKey(0), x)
    return module.apply(variables, x)


def torch_value_and_grad(torch_fn, x_nhwc, cotangent_nhwc):
    x = torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))).requires_grad_()
    y = torch_fn(x)
    y.backward(torch.from_numpy(np.ascontiguousarray(cotangent_nhwc.transpose(0, 3, 1, 2))))
    return y.detach().numpy().transpose(0, 2, 3, 1), x.grad.numpy().transpose(0, 2, 3, 1)


def jax_value_and_grad(module, x, cotangent):
    y, pullback = jax.vjp(lambda v: apply(module, v), jnp.asarray(x))
    return np.asarray(y), np.asarray(pullback(jnp.asarray(cotangent))[0])


POOLS = [
    (3, 2, 1, False),  # ResNet stem
    (3, 2, 0, True),  # SqueezeNet, ceil_mode with overhang
    (2, 2, 0, True),
    (2, 2, 0, False),
    ((3, 2), (2, 1), (1, 0), False),
]


@pytest.mark.parametrize("kernel,stride,padding,ceil_mode", POOLS)
@pytest.mark.parametrize("ties", [False, True])
def test_max_pool_matches_torch_including_first_maximum_gradient(kernel, stride, padding, ceil_mode, ties):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 9, 11, 3)).astype(np.float32)
    if ties:
        x = np.round(x).astype(np.float32)  # many equal values per window
    module = layers.MaxPool2d(kernel, stride, padding, ceil_mode)
    reference = torch.nn.MaxPool2d(kernel, stride, padding, ceil_mode=ceil_mode)
    out_shape = jax.eval_shape(lambda v: apply(module, v), jnp.asarray(x)).shape
    cotangent = rng.normal(size=out_shape).astype(np.float32)
    expected_y, expected_grad = torch_value_and_grad(reference, x, cotangent)
    y, grad = jax_value_and_grad(module, x, cotangent)
    np.testing.assert_array_equal(y, expected_y)
    np.testing.assert_allclose(grad, expected_grad, atol=1e-6)


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("kernel,stride,padding,ceil_mode", [(3, 2, 1, True), (2, 2, 0, False), (3, 1, 1, False)])
def test_avg_pool_matches_torch(kernel, stride, padding, ceil_mode, count_include_pad):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 8, 11, 2)).astype(np.float32)
    module = layers.AvgPool2d(kernel, stride, padding, ceil_mode, count_include_pad)
    reference = torch.nn.AvgPool2d(kernel, stride, padding, ceil_mode=ceil_mode, count_include_pad=count_include_pad)
    out_shape = jax.eval_shape(lambda v: apply(module, v), jnp.asarray(x)).shape
    cotangent = rng.normal(size=out_shape).astype(np.float32)
    expected_y, expected_grad = torch_value_and_grad(reference, x, cotangent)
    y, grad = jax_value_and_grad(module, x, cotangent)
    np.testing.assert_allclose(y, expected_y, atol=1e-6)
    np.testing.assert_allclose(grad, expected_grad, atol=1e-6)


@pytest.mark.parametrize("output_size", [1, 7, (3, 5), (6, 6)])
def test_adaptive_avg_pool_matches_torch_on_uneven_bins(output_size):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 5, 9, 3)).astype(np.float32)
    cotangent_shape = jax.eval_shape(lambda v: apply(layers.AdaptiveAvgPool2d(output_size), v), jnp.asarray(x)).shape
    cotangent = rng.normal(size=cotangent_shape).astype(np.float32)
    expected = torch_value_and_grad(torch.nn.AdaptiveAvgPool2d(output_size), x, cotangent)
    for ours, theirs in zip(jax_value_and_grad(layers.AdaptiveAvgPool2d(output_size), x, cotangent), expected):
        np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_relu6_gradient_is_zero_at_both_ends_like_torch():
    x = np.array([-1.0, 0.0, 3.0, 6.0, 7.0], np.float32).reshape(1, 1, 5, 1)
    expected = torch_value_and_grad(torch.nn.ReLU6(), x, np.ones_like(x))
    for ours, theirs in zip(jax_value_and_grad(layers.ReLU6(), x, np.ones_like(x)), expected):
        np.testing.assert_array_equal(ours, theirs)


def test_pooling_that_does_not_fit_raises():
    with pytest.raises(ValueError, match="does not fit"):
        apply(layers.MaxPool2d(3, 2), jnp.zeros((1, 2, 2, 1)))
