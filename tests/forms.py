"""One small residual CNN written five ways with the same weights, and a gated MLP three ways.

The CNN: ``conv1`` (3x3, 3->8) -> inference BatchNorm ``bn1`` -> ReLU -> 2x2 max pool ->
``block`` (``block.conv``: 3x3, 8->8, ReLU, residual add) -> spatial mean -> ``head``
(8->5). Written with the zoo's layers, as idiomatic Flax linen (``nn.relu`` functions,
``nn.max_pool``, an inline ``x + y``, ``.mean``), as Flax NNX, as Equinox (per example,
channels first, a hand-written inference BatchNorm) and as a plain function of a params
dict (``jnp.maximum(x, 0)``, ``lax.reduce_window``, ``jax.named_scope("block")`` around the residual
block, which otherwise would be only the operations reading its parameters). Weights are drawn once in torch's
layouts (:func:`cnn_weights`) and laid out for each form.

The gated MLP: ``fc1`` -> LayerNorm ``norm`` -> GELU, a gate ``gate`` with
``h * sigmoid(g)``, then ``head``.
"""

from __future__ import annotations

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

import jaxplain as jx
from jaxplain.nets import layers as zl

EPS = 1e-5
LAYERS = ("conv1", "bn1", "block", "block.conv", "head")


def cnn_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """Weights in torch layouts (OIHW kernels, ``[out, in]`` dense), BatchNorm state included."""
    rng = np.random.default_rng(seed)

    def uniform(shape, fan_in):
        bound = 1 / np.sqrt(fan_in)
        return rng.uniform(-bound, bound, shape).astype(np.float32)

    return {
        "conv1.weight": uniform((8, 3, 3, 3), 27), "conv1.bias": uniform((8,), 27),
        "bn1.weight": rng.uniform(0.5, 1.5, 8).astype(np.float32),
        "bn1.bias": rng.uniform(-0.2, 0.2, 8).astype(np.float32),
        "bn1.running_mean": rng.uniform(-0.3, 0.3, 8).astype(np.float32),
        "bn1.running_var": rng.uniform(0.5, 1.5, 8).astype(np.float32),
        "block.conv.weight": uniform((8, 8, 3, 3), 72), "block.conv.bias": uniform((8,), 72),
        "head.weight": uniform((5, 8), 8), "head.bias": uniform((5,), 8),
    }


def _hwio(w):
    return jnp.asarray(np.transpose(w, (2, 3, 1, 0)))


class ZooBlock(nn.Module):
    @nn.compact
    def __call__(self, x):
        y = zl.ReLU(name="relu")(zl.Conv2d(8, 3, padding=1, name="conv")(x))
        return zl.Add(name="add")(x, y)


class ZooCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = zl.Conv2d(8, 3, padding=1, name="conv1")(x)
        x = zl.BatchNorm2d(name="bn1")(x)
        x = zl.ReLU(name="relu1")(x)
        x = zl.MaxPool2d(2, name="pool")(x)
        x = ZooBlock(name="block")(x)
        x = jnp.mean(x, axis=(1, 2))
        return zl.Linear(5, name="head")(x)


class LinenBlock(nn.Module):
    @nn.compact
    def __call__(self, x):
        return x + nn.relu(nn.Conv(8, (3, 3), padding=1, name="conv")(x))


class LinenCNN(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.Conv(8, (3, 3), padding=1, name="conv1")(x)
        x = nn.BatchNorm(use_running_average=not train, epsilon=EPS, name="bn1")(x)
        x = nn.max_pool(nn.relu(x), (2, 2), (2, 2))
        x = LinenBlock(name="block")(x)
        return nn.Dense(5, name="head")(x.mean((1, 2)))


class NNXBlock(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(8, 8, (3, 3), padding=1, rngs=rngs)

    def __call__(self, x):
        return x + nnx.relu(self.conv(x))


class NNXCNN(nnx.Module):
    def __init__(self, rngs):
        self.conv1 = nnx.Conv(3, 8, (3, 3), padding=1, rngs=rngs)
        self.bn1 = nnx.BatchNorm(8, use_running_average=True, epsilon=EPS, rngs=rngs)
        self.block = NNXBlock(rngs)
        self.head = nnx.Linear(8, 5, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.bn1(self.conv1(x)))
        x = nnx.max_pool(x, (2, 2), (2, 2))
        return self.head(self.block(x).mean((1, 2)))


class EqxNorm(eqx.Module):
    """Inference BatchNorm over the channel axis of one ``[C, H, W]`` example."""

    weight: jax.Array
    bias: jax.Array
    mean: jax.Array
    var: jax.Array

    def __call__(self, x):
        scale = self.weight / jnp.sqrt(self.var + EPS)
        return (x - self.mean[:, None, None]) * scale[:, None, None] + self.bias[:, None, None]


class EqxBlock(eqx.Module):
    conv: eqx.nn.Conv2d

    def __call__(self, x):
        return x + jax.nn.relu(self.conv(x))


class EqxCNN(eqx.Module):
    conv1: eqx.nn.Conv2d
    bn1: EqxNorm
    pool: eqx.nn.MaxPool2d
    block: EqxBlock
    head: eqx.nn.Linear

    def __call__(self, x):
        x = self.pool(jax.nn.relu(self.bn1(self.conv1(x))))
        return self.head(self.block(x).mean((1, 2)))


def function_cnn(params, x):
    """The CNN as a plain function of a params dict, NHWC."""
    dims = ("NHWC", "HWIO", "NHWC")

    def conv(p, v):
        return lax.conv_general_dilated(v, p["kernel"], (1, 1), ((1, 1), (1, 1)), dimension_numbers=dims) + p["bias"]

    bn = params["bn1"]
    x = conv(params["conv1"], x)
    x = (x - bn["mean"]) * (bn["scale"] / jnp.sqrt(bn["var"] + EPS)) + bn["bias"]
    x = jnp.maximum(x, 0)
    x = lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    with jax.named_scope("block"):
        x = x + jnp.maximum(conv(params["block"]["conv"], x), 0)
    x = x.mean((1, 2))
    return x @ params["head"]["kernel"] + params["head"]["bias"]


def cnn_forms(weights: dict[str, np.ndarray]) -> dict[str, object]:
    """The five forms with ``weights``: every one takes NHWC batches except Equinox (NCHW, ``channel_axis=1``)."""
    w = {k: jnp.asarray(v) for k, v in weights.items()}
    zoo_variables = {
        "params": {"conv1": {"kernel": _hwio(weights["conv1.weight"]), "bias": w["conv1.bias"]},
                   "bn1": {"scale": w["bn1.weight"], "bias": w["bn1.bias"]},
                   "block": {"conv": {"kernel": _hwio(weights["block.conv.weight"]), "bias": w["block.conv.bias"]}},
                   "head": {"kernel": w["head.weight"].T, "bias": w["head.bias"]}},
        "batch_stats": {"bn1": {"mean": w["bn1.running_mean"], "var": w["bn1.running_var"]}},
    }
    zoo = jx.Model(ZooCNN(), zoo_variables)
    linen = jx.as_model(LinenCNN().bind(zoo_variables), train=False)
    nnx_model = NNXCNN(nnx.Rngs(0))
    nnx_model.conv1.kernel.value = _hwio(weights["conv1.weight"])
    nnx_model.conv1.bias.value = w["conv1.bias"]
    nnx_model.bn1.scale.value, nnx_model.bn1.bias.value = w["bn1.weight"], w["bn1.bias"]
    nnx_model.bn1.mean.value, nnx_model.bn1.var.value = w["bn1.running_mean"], w["bn1.running_var"]
    nnx_model.block.conv.kernel.value = _hwio(weights["block.conv.weight"])
    nnx_model.block.conv.bias.value = w["block.conv.bias"]
    nnx_model.head.kernel.value, nnx_model.head.bias.value = w["head.weight"].T, w["head.bias"]
    key = jax.random.PRNGKey(0)
    eqx_model = EqxCNN(
        eqx.nn.Conv2d(3, 8, 3, padding=1, key=key), EqxNorm(w["bn1.weight"], w["bn1.bias"], w["bn1.running_mean"],
                                                            w["bn1.running_var"]),
        eqx.nn.MaxPool2d(2, 2), EqxBlock(eqx.nn.Conv2d(8, 8, 3, padding=1, key=key)), eqx.nn.Linear(8, 5, key=key))
    eqx_model = eqx.tree_at(
        lambda m: (m.conv1.weight, m.conv1.bias, m.block.conv.weight, m.block.conv.bias, m.head.weight, m.head.bias),
        eqx_model,
        (w["conv1.weight"], w["conv1.bias"][:, None, None], w["block.conv.weight"],
         w["block.conv.bias"][:, None, None], w["head.weight"], w["head.bias"]))
    params = {"conv1": zoo_variables["params"]["conv1"],
              "bn1": {"scale": w["bn1.weight"], "bias": w["bn1.bias"], "mean": w["bn1.running_mean"],
                      "var": w["bn1.running_var"]},
              "block": zoo_variables["params"]["block"], "head": zoo_variables["params"]["head"]}
    function = jx.Model.from_function(function_cnn, params)
    return {"zoo": zoo, "linen": linen, "nnx": nnx_model, "equinox": eqx_model, "function": function}


def mlp_weights(seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "fc1.weight": rng.normal(0, 0.5, (12, 6)).astype(np.float32), "fc1.bias": rng.normal(0, 0.1, 12).astype(np.float32),
        "norm.weight": rng.uniform(0.5, 1.5, 12).astype(np.float32), "norm.bias": rng.normal(0, 0.1, 12).astype(np.float32),
        "gate.weight": rng.normal(0, 0.5, (12, 6)).astype(np.float32), "gate.bias": rng.normal(0, 0.1, 12).astype(np.float32),
        "head.weight": rng.normal(0, 0.5, (4, 12)).astype(np.float32), "head.bias": rng.normal(0, 0.1, 4).astype(np.float32),
    }


class LinenMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.gelu(nn.LayerNorm(epsilon=EPS, name="norm")(nn.Dense(12, name="fc1")(x)), approximate=False)
        g = nn.Dense(12, name="gate")(x)
        return nn.Dense(4, name="head")(h * nn.sigmoid(g))


class NNXMLP(nnx.Module):
    def __init__(self, rngs):
        self.fc1 = nnx.Linear(6, 12, rngs=rngs)
        self.norm = nnx.LayerNorm(12, epsilon=EPS, rngs=rngs)
        self.gate = nnx.Linear(6, 12, rngs=rngs)
        self.head = nnx.Linear(12, 4, rngs=rngs)

    def __call__(self, x):
        h = nnx.gelu(self.norm(self.fc1(x)), approximate=False)
        return self.head(h * nnx.sigmoid(self.gate(x)))


def function_mlp(params, x):
    h = x @ params["fc1"]["kernel"] + params["fc1"]["bias"]
    mean = h.mean(-1, keepdims=True)
    var = ((h - mean) ** 2).mean(-1, keepdims=True)
    h = (h - mean) / jnp.sqrt(var + EPS) * params["norm"]["scale"] + params["norm"]["bias"]
    h = jax.nn.gelu(h, approximate=False)
    g = x @ params["gate"]["kernel"] + params["gate"]["bias"]
    return (h * jax.nn.sigmoid(g)) @ params["head"]["kernel"] + params["head"]["bias"]


def mlp_forms(weights: dict[str, np.ndarray]) -> dict[str, object]:
    w = {k: jnp.asarray(v) for k, v in weights.items()}
    params = {"fc1": {"kernel": w["fc1.weight"].T, "bias": w["fc1.bias"]},
              "norm": {"scale": w["norm.weight"], "bias": w["norm.bias"]},
              "gate": {"kernel": w["gate.weight"].T, "bias": w["gate.bias"]},
              "head": {"kernel": w["head.weight"].T, "bias": w["head.bias"]}}
    linen = jx.Model(LinenMLP(), {"params": params})
    nnx_model = NNXMLP(nnx.Rngs(0))
    for name in ("fc1", "gate", "head"):
        getattr(nnx_model, name).kernel.value = params[name]["kernel"]
        getattr(nnx_model, name).bias.value = params[name]["bias"]
    nnx_model.norm.scale.value, nnx_model.norm.bias.value = params["norm"]["scale"], params["norm"]["bias"]
    return {"linen": linen, "nnx": nnx_model, "function": jx.Model.from_function(function_mlp, params)}
