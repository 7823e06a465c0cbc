"""Layer-wise relevance propagation rules as modified backward passes.

Relevance travels as the cotangent of the backward pass: a rule's backward receives the
relevance ``R`` of the layer's output and returns the relevance of its input. Every
rule of a linear layer (a convolution or a dense layer) is one shared construction, after
Zennit's ``BasicHook`` (Anders et al. 2021, zennit/core.py): evaluate the layer on
``k`` modified (input, parameter) pairs, ``z_k = f(theta_k, x_k)``; map the output
relevance to one cotangent per pair, ``s_k = mapping(R, z)``; pull each back,
``g_k = J_k^T s_k``; and reduce, ``R_in = reduce(x, g)``. The rule definitions
(Epsilon, ZPlus, AlphaBeta, Gamma, ZBox, Flat, WSquare) and the stabiliser follow
Bach et al. 2015, Montavon et al. 2017 and 2019 and Zennit's conventions
(zennit/rules.py); ``Norm`` splits a sum or a pooling in proportion to its inputs,
``Pass`` hands relevance through unchanged.

Rules are frozen dataclasses, hashable, so a composite can be a static argument of a
jit-compiled function.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from jaxplain.typing import Array

Params = dict[str, Array]
Term = tuple[Array, Params]


def stabilize(values: Array, epsilon: float) -> Array:
    """``z + epsilon * sign(z)``, with sign 1 at 0 (Zennit's stabiliser)."""
    return values + epsilon * jnp.where(values >= 0, 1.0, -1.0).astype(values.dtype)


def _positive(params: Params) -> Params:
    return {name: jnp.maximum(value, 0) for name, value in params.items()}


def _negative(params: Params) -> Params:
    return {name: jnp.minimum(value, 0) for name, value in params.items()}


def _without_bias(params: Params) -> Params:
    return {name: value for name, value in params.items() if name != "bias"}


def _with_bias_of(params: Params, bias_source: Params) -> Params:
    out = _without_bias(params)
    if "bias" in bias_source:
        out["bias"] = bias_source["bias"]
    return out


def _positive_part(x: Array) -> Array:
    return jnp.maximum(x, 0)


def _negative_part(x: Array) -> Array:
    return jnp.minimum(x, 0)


class LinearRule:
    """A relevance rule for a linear layer (``x -> W x + b``), in Zennit's basic-hook form.

    Subclasses define :meth:`terms` (the modified inputs and parameters), :meth:`cotangents`
    (output relevance to one cotangent per term) and :meth:`reduce` (inputs and pulled-back
    cotangents to the input relevance). ``set_bias_to_zero`` drops the bias from every
    term (Zennit's ``zero_params=['bias']``).

    On a layer whose input is known to be non-negative (every layer after a ReLU:
    ``nonnegative_input``, found on the program's blocks, :mod:`jaxplain.program.blocks`), rules that
    split the input by sign (``x+``, ``x-``) leave out the ``x-`` terms, which are exactly zero
    there: the relevance is the same and two of every four convolutions are skipped. A term that
    is the layer's own forward (its input and parameters unmodified) reuses the forward pass's
    output instead of recomputing it.
    """

    set_bias_to_zero: bool = False

    def terms(self, params: Params, x: Array, nonnegative: bool = False) -> list[Term]:
        raise NotImplementedError

    def cotangents(self, relevance: Array, outputs: list[Array]) -> list[Array]:
        raise NotImplementedError

    def reduce(self, inputs: list[Array], gradients: list[Array]) -> Array:
        raise NotImplementedError

    def relevance(self, forward: Callable[[Params, Array], Array], params: Params, x: Array, relevance: Array,
                  output: Array | None = None, nonnegative_input: bool = False) -> Array:
        """The input relevance of a layer ``forward(params, x)`` (whose value is ``output``) given its output
        relevance; ``nonnegative_input`` promises ``x >= 0``."""
        if self.set_bias_to_zero:
            params, output = _without_bias(params), None
        inputs, outputs, pullbacks = [], [], []
        for term_input, term_params in self.terms(params, x, nonnegative_input):
            term_output, pullback = jax.vjp(lambda v, p=term_params: forward(p, v), term_input)
            if output is not None and term_input is x and term_params is params:
                term_output = output
            inputs.append(term_input)
            outputs.append(term_output)
            pullbacks.append(pullback)
        gradients = [pullback(cotangent)[0] for pullback, cotangent in zip(pullbacks, self.cotangents(relevance, outputs))]
        return self.reduce(inputs, gradients)


def relevance_layer(rule: LinearRule, forward: Callable[[Params, Array], Array], params: Params, x: Array,
                    nonnegative_input: bool = False, primal: Callable[[Array], Array] | None = None) -> Array:
    """``forward(params, x)`` whose backward pass is ``rule``'s relevance (zero for the parameters).

    ``primal(x)``, where given, computes the same value as ``forward(params, x)`` another way (a
    layer and the batch norm folded into ``params``, evaluated unfolded, so that the folded weight
    is only built where a rule's modified weights need it).
    """
    evaluate = (lambda params, x: primal(x)) if primal is not None else forward

    @jax.custom_vjp
    def layer(params, x):
        return evaluate(params, x)

    def layer_forward(params, x):
        output = evaluate(params, x)
        return output, (params, x, output)

    def layer_backward(residuals, relevance):
        params, x, output = residuals
        relevance_in = rule.relevance(forward, params, x, relevance, output, nonnegative_input)
        return jax.tree_util.tree_map(jnp.zeros_like, params), relevance_in

    layer.defvjp(layer_forward, layer_backward)
    return layer(params, x)


def _sign_split_terms(x: Array, nonnegative: bool, *pairs: tuple[Params, Params]) -> list[Term]:
    """``(x+, p), (x-, q without bias)`` for each ``(p, q)``; just ``(x, p)`` when ``x`` is known non-negative."""
    if nonnegative:
        return [(x, p) for p, _ in pairs]
    x_pos, x_neg = _positive_part(x), _negative_part(x)
    return [term for p, q in pairs for term in ((x_pos, p), (x_neg, _without_bias(q)))]


def _sum_products(inputs: list[Array], gradients: list[Array]) -> Array:
    return sum(x * g for x, g in zip(inputs, gradients))


def _single_ratio(stabilizer: float):
    def cotangents(relevance: Array, outputs: list[Array]) -> list[Array]:
        return [relevance / stabilize(outputs[0], stabilizer)]

    return cotangents


@dataclass(frozen=True)
class Epsilon(LinearRule):
    """LRP-epsilon: ``R_in = x * W^T (R / stab(W x + b))`` (Bach et al. 2015); ``epsilon=0`` is LRP-0."""

    epsilon: float = 1e-6
    set_bias_to_zero: bool = False

    def terms(self, params, x, nonnegative=False):
        return [(x, params)]

    def cotangents(self, relevance, outputs):
        return _single_ratio(self.epsilon)(relevance, outputs)

    def reduce(self, inputs, gradients):
        return inputs[0] * gradients[0]


@dataclass(frozen=True)
class ZPlus(LinearRule):
    """z+: ``z = W+ x+ + b+ + W- x-``, ``R_in = x+ W+^T s + x- W-^T s`` with ``s = R / stab(z)``."""

    stabilizer: float = 1e-6
    set_bias_to_zero: bool = False

    def terms(self, params, x, nonnegative=False):
        return _sign_split_terms(x, nonnegative, (_positive(params), _negative(params)))

    def cotangents(self, relevance, outputs):
        ratio = relevance / stabilize(sum(outputs), self.stabilizer)
        return [ratio] * len(outputs)

    def reduce(self, inputs, gradients):
        return _sum_products(inputs, gradients)


@dataclass(frozen=True)
class AlphaBeta(LinearRule):
    """Alpha-beta (Bach et al. 2015): positive contributions weighted by ``alpha``, negative by ``beta``.

    ``z+ = W+ x+ + b+ + W- x-`` and ``z- = W- x+ + b- + W+ x-``;
    ``R_in = alpha (x+ W+^T s+ + x- W-^T s+) - beta (x+ W-^T s- + x- W+^T s-)``.
    """

    alpha: float = 2.0
    beta: float = 1.0
    stabilizer: float = 1e-6
    set_bias_to_zero: bool = False

    def __post_init__(self):
        if self.alpha < 0 or self.beta < 0 or abs(self.alpha - self.beta - 1.0) > 1e-12:
            raise ValueError(f"AlphaBeta needs alpha, beta >= 0 and alpha - beta = 1, got {self.alpha}, {self.beta}")

    def terms(self, params, x, nonnegative=False):
        positive, negative = _positive(params), _negative(params)
        positive_terms = _sign_split_terms(x, nonnegative, (positive, negative))
        if self.beta == 0:
            return positive_terms
        return positive_terms + _sign_split_terms(x, nonnegative, (negative, positive))

    def _groups(self, values: list) -> tuple[list, list]:
        """The terms' values split into the positive and the negative contributions (none when beta is 0)."""
        if self.beta == 0:
            return values, []
        half = len(values) // 2
        return values[:half], values[half:]

    def cotangents(self, relevance, outputs):
        positive, negative = self._groups(outputs)
        ratio_pos = relevance / stabilize(sum(positive), self.stabilizer)
        ratios = [ratio_pos] * len(positive)
        if negative:
            ratios += [relevance / stabilize(sum(negative), self.stabilizer)] * len(negative)
        return ratios

    def reduce(self, inputs, gradients):
        (inputs_pos, inputs_neg), (gradients_pos, gradients_neg) = self._groups(inputs), self._groups(gradients)
        positive = _sum_products(inputs_pos, gradients_pos)
        if not inputs_neg:
            return self.alpha * positive
        return self.alpha * positive - self.beta * _sum_products(inputs_neg, gradients_neg)


def Alpha1Beta0(stabilizer: float = 1e-6, set_bias_to_zero: bool = False) -> AlphaBeta:
    """``AlphaBeta(alpha=1, beta=0)`` (equal to :class:`ZPlus`)."""
    return AlphaBeta(1.0, 0.0, stabilizer, set_bias_to_zero)


def Alpha2Beta1(stabilizer: float = 1e-6, set_bias_to_zero: bool = False) -> AlphaBeta:
    """``AlphaBeta(alpha=2, beta=1)``."""
    return AlphaBeta(2.0, 1.0, stabilizer, set_bias_to_zero)


def _gamma_params(params: Params, gamma: float, part: Callable[[Params], Params]) -> Params:
    extra = part(params)
    return {name: value + gamma * extra[name] for name, value in params.items()}


@dataclass(frozen=True)
class Gamma(LinearRule):
    """LRP-gamma (Montavon et al. 2019), sign-aware as Zennit's generalised form (Andeol et al. 2021).

    Where ``W x + b > 0``: ``z+ = (W + g W+) x+ + (W + g W-) x- + b + g b+``; where it is
    negative: ``z- = (W + g W-) x+ + (W + g W+) x- + b + g b-``; relevance flows through
    the matching pair. ``sign_aware=False`` gives Captum's ``GammaRule`` (weights
    changed, bias kept; Captum's stabiliser is 1e-9):
    ``R_in = x (W + g W+)^T (R / stab((W + g W+) x + b))``.
    """

    gamma: float = 0.25
    stabilizer: float = 1e-6
    set_bias_to_zero: bool = False
    sign_aware: bool = True

    def terms(self, params, x, nonnegative=False):
        return [(x, _with_bias_of(_gamma_params(params, self.gamma, _positive), params))]

    def cotangents(self, relevance, outputs):
        return _single_ratio(self.stabilizer)(relevance, outputs)

    def reduce(self, inputs, gradients):
        return inputs[0] * gradients[0]

    def relevance(self, forward, params, x, relevance, output=None, nonnegative_input=False):
        """The sign-aware rule in two products, one forward and two pullbacks (the terms' algebra).

        With ``W+- = (W +- |W|) / 2`` and ``x+- = (x +- |x|) / 2``, the positive contributions are
        ``P = x+ W+ + x- W- = (x W + |x| |W|) / 2``, so ``z+ = x W + g P + b + g b+`` and
        ``z- = (1 + g) x W - g P + b + g b-``; with ``s+- = R / stab(z+-)`` where the output has that
        sign, ``u = s+ + s-`` and ``d = s+ - s-``, the four terms' relevance sums to
        ``R_in = (1 + g/2) x (W^T u) + (g/2) |x| (|W|^T d)``: Zennit's ``Gamma`` (four modified
        products forward and four pullbacks) up to rounding, at one product forward and two pullbacks.
        ``sign_aware=False`` takes the single term of :meth:`terms`.
        """
        if not self.sign_aware:
            return super().relevance(forward, params, x, relevance, output, nonnegative_input)
        if self.set_bias_to_zero:
            params, output = _without_bias(params), None
        weights = _without_bias(params)
        magnitudes = {name: jnp.abs(value) for name, value in weights.items()}
        x_abs = x if nonnegative_input else jnp.abs(x)
        linear, pull_linear = jax.vjp(lambda v: forward(weights, v), x)
        absolute, pull_absolute = jax.vjp(lambda v: forward(magnitudes, v), x_abs)
        positive = (linear + absolute) / 2
        z_pos, z_neg = linear + self.gamma * positive, (1 + self.gamma) * linear - self.gamma * positive
        if "bias" in params:
            bias = params["bias"]
            z_pos = z_pos + bias + self.gamma * jnp.maximum(bias, 0)
            z_neg = z_neg + bias + self.gamma * jnp.minimum(bias, 0)
            plain = linear + bias if output is None else output
        else:
            plain = linear if output is None else output
        s_pos = jnp.where(plain > 0, relevance / stabilize(z_pos, self.stabilizer), 0.0)
        s_neg = jnp.where(plain < 0, relevance / stabilize(z_neg, self.stabilizer), 0.0)
        half = self.gamma / 2
        return ((1 + half) * x * pull_linear(s_pos + s_neg)[0]
                + half * x_abs * pull_absolute(s_pos - s_neg)[0])


def _bound(value: float | Sequence[float], like: Array, channel_axis: int = -1) -> Array:
    """A scalar or per-channel bound (along ``channel_axis``), broadcast to ``like``."""
    bound = jnp.asarray(value, like.dtype)
    if bound.ndim == 1:
        shape = [1] * like.ndim
        shape[channel_axis] = bound.shape[0]
        bound = bound.reshape(shape)
    return jnp.broadcast_to(bound, like.shape)


@dataclass(frozen=True)
class ZBox(LinearRule):
    """z^B for bounded inputs ``low <= x <= high`` (Montavon et al. 2017).

    ``z = W x + b - (W+ l + b+) - (W- h + b-)``; ``R_in = x W^T s - l W+^T s - h W-^T s``.
    ``low`` and ``high`` are scalars or per-channel tuples, along ``channel_axis`` (the last
    axis, NHWC, unless the model is channels-first). ``set_bias_to_zero=True`` is CaBRNet's ZBeta.
    """

    low: float | tuple[float, ...] = -3.0
    high: float | tuple[float, ...] = 3.0
    stabilizer: float = 1e-6
    set_bias_to_zero: bool = False
    channel_axis: int = -1

    def terms(self, params, x, nonnegative=False):
        low, high = _bound(self.low, x, self.channel_axis), _bound(self.high, x, self.channel_axis)
        return [(x, params), (low, _positive(params)), (high, _negative(params))]

    def cotangents(self, relevance, outputs):
        ratio = relevance / stabilize(outputs[0] - outputs[1] - outputs[2], self.stabilizer)
        return [ratio, ratio, ratio]

    def reduce(self, inputs, gradients):
        return inputs[0] * gradients[0] - inputs[1] * gradients[1] - inputs[2] * gradients[2]


@dataclass(frozen=True)
class WSquare(LinearRule):
    """w^2 (Montavon et al. 2017): ``R_in = (W^2)^T (R / stab(W^2 1 + b^2))`` (the bias squared, kept)."""

    stabilizer: float = 1e-6
    set_bias_to_zero: bool = False

    def terms(self, params, x, nonnegative=False):
        return [(jnp.ones_like(x), {name: value**2 for name, value in params.items()})]

    def cotangents(self, relevance, outputs):
        return _single_ratio(self.stabilizer)(relevance, outputs)

    def reduce(self, inputs, gradients):
        return gradients[0]


@dataclass(frozen=True)
class Flat(LinearRule):
    """Flat (Lapuschkin et al. 2019): weights 1, bias 0, input 1: relevance spread evenly over the receptive field.

    Zero padding counts as absent, so border positions of a convolution have a smaller fan-in.
    """

    stabilizer: float = 1e-6

    def terms(self, params, x, nonnegative=False):
        return [(jnp.ones_like(x), {"kernel": jnp.ones_like(params["kernel"])})]

    def cotangents(self, relevance, outputs):
        return _single_ratio(self.stabilizer)(relevance, outputs)

    def reduce(self, inputs, gradients):
        return gradients[0]


def with_backward(call: Callable[..., Array], args: tuple, backward: Callable[[tuple, Array, Array], tuple]) -> Array:
    """``call(*args)`` whose cotangents are ``backward(args, output, relevance)``."""

    @jax.custom_vjp
    def layer(*args):
        return call(*args)

    def layer_forward(*args):
        output = call(*args)
        return output, (args, output)

    def layer_backward(residuals, relevance):
        args, output = residuals
        return tuple(backward(args, output, relevance))

    layer.defvjp(layer_forward, layer_backward)
    return layer(*args)


@dataclass(frozen=True)
class Norm:
    """Relevance split in proportion to each input's contribution: ``R_i = x_i J_i^T (R / stab(y))``.

    For sums (residual additions: ``R_i = x_i R / stab(sum_j x_j)``) and average pooling.
    """

    stabilizer: float = 1e-6

    def __call__(self, block: Any, call: Callable, *args: Array) -> Array:
        def backward(args, output, relevance):
            _, pullback = jax.vjp(call, *args)
            gradients = pullback(relevance / stabilize(output, self.stabilizer))
            return [x * g for x, g in zip(args, gradients)]

        return with_backward(call, args, backward)


@dataclass(frozen=True)
class Pass:
    """Relevance handed through unchanged (activations, batch norm): ``R_in = R_out``."""

    def __call__(self, block: Any, call: Callable, x: Array) -> Array:
        return with_backward(call, (x,), lambda args, output, relevance: (relevance,))


@dataclass(frozen=True)
class Gradient:
    """The ordinary backward pass; stops a composite's later mappings from applying."""

    def __call__(self, block: Any, call: Callable, *args: Any) -> Any:
        return call(*args)


@dataclass(frozen=True)
class Zero:
    """No relevance through the layer (CP-LRP's attention softmax: the attention weights are constants)."""

    def __call__(self, block: Any, call: Callable, *args: Array) -> Array:
        return with_backward(call, args, lambda args, output, relevance: tuple(jnp.zeros_like(a) for a in args))
