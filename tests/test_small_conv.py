"""Convolutions over maps smaller than the kernel: the patches path equals lax's convolution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxplain.nets import small_conv

CASES = [
    # (H, W, C, kh, kw, O, strides, padding)
    (2, 2, 5, 3, 3, 4, (1, 1), ((1, 1), (1, 1))),
    (1, 1, 3, 3, 3, 2, (1, 1), ((1, 1), (1, 1))),
    (2, 2, 4, 3, 3, 3, (2, 2), ((1, 1), (1, 1))),
    (2, 3, 2, 3, 3, 2, (1, 2), ((1, 0), (0, 1))),
    (3, 3, 3, 7, 7, 4, (2, 2), ((3, 3), (3, 3))),
    (2, 2, 2, 3, 3, 2, (1, 1), ((0, 2), (2, 0))),
]


def reference(inputs, kernel, strides, padding):
    return lax.conv_general_dilated(inputs, kernel, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("case", CASES)
def test_patches_path_equals_lax_forward_and_gradients(case):
    height, width, channels, kh, kw, out, strides, padding = case
    assert small_conv.is_smaller_than_kernel((2, height, width, channels), (kh, kw, channels, out))
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    inputs = jax.random.normal(keys[0], (2, height, width, channels))
    kernel = jax.random.normal(keys[1], (kh, kw, channels, out))
    expected = reference(inputs, kernel, strides, padding)
    got = small_conv.conv2d(inputs, kernel, strides, padding)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    cotangent = jax.random.normal(keys[2], expected.shape)

    def loss(conv):
        return lambda x, w: jnp.sum(conv(x, w, strides, padding) * cotangent)

    grads = jax.grad(loss(small_conv.conv2d), argnums=(0, 1))(inputs, kernel)
    expected_grads = jax.grad(loss(reference), argnums=(0, 1))(inputs, kernel)
    for ours, theirs in zip(grads, expected_grads):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def test_large_maps_and_grouped_convolutions_take_lax_path():
    inputs = jnp.ones((1, 8, 8, 4))
    kernel = jnp.ones((3, 3, 2, 4))
    assert not small_conv.is_smaller_than_kernel(inputs.shape, kernel.shape)
    got = small_conv.conv2d(inputs, kernel, (1, 1), ((1, 1), (1, 1)), groups=2)
    expected = lax.conv_general_dilated(inputs, kernel, (1, 1), ((1, 1), (1, 1)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=2)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
