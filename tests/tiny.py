"""A tiny CNN from the zoo's primitives: fast to compile, every layer kind a rule may see."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

import jaxplain as jx
from jaxplain.nets.layers import Add, AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d, ReLU


class TinyNet(nn.Module):
    num_classes: int = 5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = ReLU(name="relu1")(BatchNorm2d(name="bn1")(Conv2d(6, 3, padding=1, name="conv1")(x)))
        x = MaxPool2d(2, name="pool")(x)
        skip = x
        x = ReLU(name="relu2")(Conv2d(6, 3, padding=1, name="conv2")(x))
        x = Add(name="add")(x, skip)
        x = Flatten(name="flatten")(AdaptiveAvgPool2d(2, name="avgpool")(x))
        return Linear(self.num_classes, name="fc")(x)


def tiny_model(seed: int = 0) -> jx.Model:
    """TinyNet with random weights and random BatchNorm statistics (non-homogeneous)."""
    model = jx.init_model(TinyNet(), (1, 12, 10, 3), key=jax.random.PRNGKey(seed))
    keys = jax.random.split(jax.random.PRNGKey(seed + 100), 2)
    stats = {
        "bn1": {
            "mean": jax.random.uniform(keys[0], (6,), minval=-0.5, maxval=0.5),
            "var": jax.random.uniform(keys[1], (6,), minval=0.5, maxval=1.5),
        }
    }
    return model.replace_variables({**model.variables, "batch_stats": stats})


def tiny_inputs(batch: int = 3, seed: int = 1) -> jax.Array:
    return jax.random.normal(jax.random.PRNGKey(seed), (batch, 12, 10, 3), jnp.float32)
