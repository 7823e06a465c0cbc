"""The activation layers DeepLift hooks, against torch: values and gradients, kinks included."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxplain.nets import layers

KINKS = np.array([-30.0, -2.0, -1e-3, 0.0, 1e-3, 0.5, 2.0, 9.5, 10.0, 10.5, 30.0], np.float32)

PAIRS = [
    (layers.LeakyReLU(), torch.nn.LeakyReLU()),
    (layers.LeakyReLU(0.2), torch.nn.LeakyReLU(0.2)),
    (layers.ELU(), torch.nn.ELU()),
    (layers.ELU(0.7), torch.nn.ELU(0.7)),
    (layers.Sigmoid(), torch.nn.Sigmoid()),
    (layers.Tanh(), torch.nn.Tanh()),
    (layers.Softplus(), torch.nn.Softplus()),
    (layers.Softplus(2.0, 20.0), torch.nn.Softplus(2.0, 20.0)),  # threshold crossed at x = 10
]


def value_and_gradient(function, x):
    y, pullback = jax.vjp(function, jnp.asarray(x))
    return np.asarray(y), np.asarray(pullback(jnp.ones_like(y))[0])


def torch_value_and_gradient(module, x):
    tensor = torch.from_numpy(x.copy()).requires_grad_()
    y = module(tensor)
    y.backward(torch.ones_like(y))
    return y.detach().numpy(), tensor.grad.numpy()


@pytest.mark.parametrize("ours,theirs", PAIRS, ids=[repr(theirs) for _, theirs in PAIRS])
def test_elementwise_activation_matches_torch_at_and_around_its_kinks(ours, theirs):
    x = np.concatenate([KINKS, np.random.default_rng(0).normal(scale=3.0, size=64).astype(np.float32)])
    y, gradient = value_and_gradient(lambda v: ours.apply({}, v), x)
    expected_y, expected_gradient = torch_value_and_gradient(theirs, x)
    np.testing.assert_allclose(y, expected_y, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-6, atol=1e-6)
    assert np.all(np.isfinite(gradient))


def test_softmax_matches_torch_over_its_axis():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    cotangent = rng.normal(size=x.shape).astype(np.float32)
    y, pullback = jax.vjp(lambda v: layers.Softmax(axis=1).apply({}, v), jnp.asarray(x))
    tensor = torch.from_numpy(x).requires_grad_()
    expected = torch.nn.Softmax(dim=1)(tensor)
    expected.backward(torch.from_numpy(cotangent))
    np.testing.assert_allclose(y, expected.detach().numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(pullback(jnp.asarray(cotangent))[0], tensor.grad.numpy(), rtol=1e-5, atol=1e-7)
