"""Modified ReLU backward passes: guided backpropagation and deconvolution.

The rules act on the ReLUs of the model's traced program (``jax.nn.relu``, ``nn.relu``,
``max(x, 0)``, a zoo ``ReLU`` module: every spelling is one ``"relu"`` unit of
:mod:`jaxplain.program.graph`); other non-linearities keep their gradient, as Captum
hooks ``nn.ReLU`` only. Sources: Springenberg et al. 2015 (guided backprop), Zeiler & Fergus 2014
(deconvnet); semantics of Captum's ``GuidedBackprop`` / ``Deconvolution``
(captum/attr/_core/guided_backprop_deconvnet.py) and TorchRay's
(torchray/attribution/guided_backprop.py, deconvnet.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxplain.program.interpret import UnitRules


@jax.custom_vjp
def guided_relu(x: jax.Array) -> jax.Array:
    """ReLU whose backward passes ``relu(g) * [x > 0]`` (Captum's guided backprop)."""
    return jax.nn.relu(x)


guided_relu.defvjp(lambda x: (jax.nn.relu(x), x), lambda x, g: (jnp.where(x > 0, jax.nn.relu(g), 0.0),))


@jax.custom_vjp
def guided_relu_torchray(x: jax.Array) -> jax.Array:
    """ReLU whose backward passes ``relu(g) * [x >= 0]`` (TorchRay: only x < 0 is zeroed)."""
    return jax.nn.relu(x)


guided_relu_torchray.defvjp(lambda x: (jax.nn.relu(x), x), lambda x, g: (jnp.where(x >= 0, jax.nn.relu(g), 0.0),))


@jax.custom_vjp
def deconv_relu(x: jax.Array) -> jax.Array:
    """ReLU whose backward passes ``relu(g)`` regardless of ``x`` (deconvnet)."""
    return jax.nn.relu(x)


deconv_relu.defvjp(lambda x: (jax.nn.relu(x), None), lambda _, g: (jax.nn.relu(g),))


def _relu_rule(function):
    def rule(unit, call, x):
        return function(x)

    return rule


GUIDED_BACKPROP = UnitRules({"relu": _relu_rule(guided_relu)}, "ReLUs")
GUIDED_BACKPROP_TORCHRAY = UnitRules({"relu": _relu_rule(guided_relu_torchray)}, "ReLUs")
DECONVOLUTION = UnitRules({"relu": _relu_rule(deconv_relu)}, "ReLUs")
