"""The linen interception engine: per-module modified backward passes without touching the model.

CaBRNet PRP (and the feature-visualisation loop's convolution rules) still apply their rules
here, on Flax linen module calls; every other structure-dependent method runs on the program engine
(:mod:`jaxplain.program`), which reads any model form.

A *rule* is a function ``rule(module, call, *args) -> output`` where ``call(*args)``
runs the layer's ordinary forward. A rule typically returns the ordinary output with a
modified backward pass, built with ``jax.custom_vjp`` (guided backprop, LRP,
DeepLift multipliers, excitation backprop). A *rule map* decides which rule, if any,
applies to each module call; :func:`forward_with_rules` returns the model's forward
function with the rules applied through ``flax.linen.intercept_methods``, entered
inside the function so it takes effect under ``jit``/``grad``/``vmap`` tracing. The
model's module and variables are never modified.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

import flax.linen as nn
import jax

from jaxplain.model import Model
from jaxplain.typing import Array

Rule = Callable[..., Any]


class RuleMap(Protocol):
    """Chooses the rule for one module call, or None for the ordinary forward."""

    def __call__(self, module: nn.Module, path: tuple[str, ...]) -> Rule | None: ...


def kind_of(module: nn.Module) -> str | None:
    """The layer kind a module declares (its ``layer_kind`` trait: ``"convolution"``, ``"sum"``...), or None."""
    return getattr(module, "layer_kind", None)


@dataclass(frozen=True)
class ByKind:
    """Apply ``rule`` to every module whose declared kind is one of ``kinds``."""

    kinds: tuple[str, ...]
    rule: Rule

    def __call__(self, module: nn.Module, path: tuple[str, ...]) -> Rule | None:
        return self.rule if kind_of(module) in self.kinds else None


@dataclass(frozen=True)
class ByPath:
    """Apply ``rule`` to the module at ``path`` (``"layer4.1.conv2"``)."""

    path: str
    rule: Rule

    def __call__(self, module: nn.Module, path: tuple[str, ...]) -> Rule | None:
        return self.rule if ".".join(path) == self.path else None


@dataclass(frozen=True)
class FirstMatch:
    """Try rule maps in order; the first that answers wins (Zennit's composite order)."""

    maps: tuple[RuleMap, ...]

    def __call__(self, module: nn.Module, path: tuple[str, ...]) -> Rule | None:
        for rule_map in self.maps:
            rule = rule_map(module, path)
            if rule is not None:
                return rule
        return None


def forward_with_rules(model: Model, rule_map: RuleMap, method: str | None = None) -> Callable[[Array], Array]:
    """``model``'s forward function with ``rule_map``'s rules on ``__call__`` of each module.

    ``method`` names another method of the top module to run instead of ``__call__``
    (``"similarities"`` of a prototype network); the rules still act on the modules' ``__call__``.
    """

    def interceptor(next_fun, args, kwargs, context):
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        rule = rule_map(context.module, context.module.path)
        if rule is None:
            return next_fun(*args, **kwargs)
        return rule(context.module, lambda *a: next_fun(*a, **kwargs), *args)

    def forward(inputs: Array) -> Array:
        with nn.intercept_methods(interceptor):
            return model.module.apply(model.variables, inputs, method=method)

    return forward


def module_calls(model: Model, inputs: Array) -> list[tuple[tuple[str, ...], nn.Module]]:
    """Every module call ``(path, module)`` of one forward pass, in execution order.

    Traced abstractly (``jax.eval_shape``): nothing is computed.
    """
    calls: list[tuple[tuple[str, ...], nn.Module]] = []

    def interceptor(next_fun, args, kwargs, context):
        if context.method_name == "__call__":
            calls.append((context.module.path, context.module))
        return next_fun(*args, **kwargs)

    def forward(x):
        with nn.intercept_methods(interceptor):
            return model.module.apply(model.variables, x)

    jax.eval_shape(forward, inputs)
    return calls

