"""Attention maps of vision transformers: attention rollout and gradient-weighted rollout, batched.

The attention probabilities ``A [N, heads, T, T]`` of a layer are the output of a softmax
*unit* of the model's traced program (:mod:`jaxplain.program.graph`): a softmax over the last
axis of a square, 4-d score array, whatever way the model spells it (``jax.nn.softmax``, a
converted torch ``scaled_dot_product_attention`` or ``nn.MultiheadAttention``). They are
recorded (and, for gradients, perturbed) by a tap on that unit, so one jit-compiled pass
serves the whole batch.

The class token's row becomes a patch grid as :func:`jaxplain.attribution.tokens.token_grid`
reads it from the token count and the input size.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp

from jaxplain import program
from jaxplain.attribution._common import check_choice, prepare, run, selected_output
from jaxplain.attribution.cam import UPSAMPLE_MODES, _upsample, channel_axis
from jaxplain.attribution.lrp import block_rules, check_rules
from jaxplain.attribution.tokens import token_grid
from jaxplain.model import require_structure
from jaxplain.program.graph import Graph, Unit
from jaxplain.program.interpret import Region, Tap, evaluate, region
from jaxplain.rules import composites as kinds
from jaxplain.rules import lrp as lrp_rules
from jaxplain.rules import relevance as relevance_rules
from jaxplain.rules.composites import Composite
from jaxplain.typing import Array, Target

HEAD_FUSIONS = ("mean", "max", "min")
ROLLOUT_FLAVOURS = ("paper", "vit_explain")


# --------------------------------------------------------------------------------------------
# attention units


def _is_attention(graph: Graph, unit: Unit) -> bool:
    if unit.kind != "softmax":
        return False
    shape = graph.aval(unit.output).shape
    return len(shape) == 4 and shape[-1] == shape[-2] and tuple(a % 4 for a in unit.attributes.get("axes", ())) == (3,)


def attention_units(graph: Graph, layers: Sequence[str] | None, *, method: str) -> list[Unit]:
    """The attention softmaxes of the program (``[N, heads, T, T]`` over the last axis), in execution order.

    Args:
        graph: the traced program.
        layers: layer paths each holding exactly one attention softmax, or None for every one.
        method: the calling method's name, for the messages.

    Returns:
        The softmax units, one per layer, in execution order whatever the order of ``layers``.

    Raises:
        ValueError: an unknown layer, a layer holding no or several attention softmaxes, or a
            program with none.

    Example:
        >>> from jaxplain import program
        >>> from jaxplain.attribution.attention import _tiny_vit, attention_units
        >>> model, x = _tiny_vit()
        >>> [unit.kind for unit in attention_units(program.graph_of(model, x), None, method="example")]
        ['softmax', 'softmax']
    """
    found = [unit for unit in graph.unit_list() if _is_attention(graph, unit)]
    if layers is None:
        if not found:
            softmaxes = ", ".join(unit.describe() for unit in graph.unit_list() if unit.kind == "softmax") or "none"
            raise ValueError(f"{method}: the model's program has no attention softmax [N, heads, T, T] over its last "
                             f"axis (softmaxes found: {softmaxes})")
        return found
    chosen = []
    for name in layers:
        region(graph, name, method=method)
        inside = [unit for unit in found if unit.name == name or unit.name.startswith(name + ".")]
        if len(inside) != 1:
            what = "no" if not inside else f"{len(inside)}"
            raise ValueError(f"{method}: layer {name!r} holds {what} attention softmaxes; name layers that hold one "
                             f"each (attention softmaxes at: {', '.join(dict.fromkeys(u.name for u in found)) or 'none'})")
        chosen.append(inside[0])
    return sorted({unit.output: unit for unit in chosen}.values(), key=lambda unit: unit.nodes[0])


def _unit_region(unit: Unit) -> Region:
    return Region(unit.name, frozenset(unit.nodes), min(unit.nodes), max(unit.nodes), (unit.input,), (unit.output,))


def _units(model: Any, inputs: Array, layers: tuple[str, ...] | None, method: str) -> list[Unit]:
    graph = program.graph_of(model, inputs)
    units = attention_units(graph, layers, method=method)
    for unit in units:
        shape = graph.aval(unit.output).shape
        if shape[0] != inputs.shape[0]:
            raise ValueError(f"{method}: the attention at {unit.name!r} is {tuple(shape)} for a batch of "
                             f"{inputs.shape[0]}: windowed attention (Swin) has no token-to-token map of the image")
    if len({graph.aval(unit.output).shape[-1] for unit in units}) != 1:
        raise ValueError(f"{method}: the attention layers have different token counts; pick layers of one stage")
    return units


def _attention_forward(model: Any, units: Sequence[Unit], composite: Composite | None = None):
    """``f(inputs, deltas) -> (outputs, maps)``: each unit's attention recorded, ``deltas[i]`` added to it;
    with ``composite``, the program runs under its relevance rules."""

    def forward(inputs: Array, deltas: Sequence[Any]) -> tuple[Array, list[Array]]:
        graph = program.graph_of(model, inputs)
        taps = [Tap(_unit_region(unit), False, delta) for unit, delta in zip(units, deltas)]
        if composite is None:
            return evaluate(graph, program.params_of(model), inputs, taps=taps)
        view = program.blocks_of(model, inputs, merge=composite.merge_batch_norm)
        rules = block_rules(composite, view, None, model.layer_channel_axis)
        return evaluate(graph, program.params_of(model), inputs, rules=rules, units=view.blocks, taps=taps)

    return forward


def _prepare(model: Any, inputs: Any, target: Target, layers: Sequence[str] | str | None, method: str):
    model, inputs, target = prepare(model, inputs, target, method=method)
    model = require_structure(model, method)
    if channel_axis(model) != -1:
        raise ValueError(f"{method} reads channels-last (NHWC) inputs; this model keeps them on axis {channel_axis(model)}")
    layers = (layers,) if isinstance(layers, str) else (None if layers is None else tuple(layers))
    _units(model, inputs, layers, method)
    return model, inputs, target, layers


def cls_map(matrix: Array, size: tuple[int, int], method: str) -> Array:
    """The class token's row of a ``[N, T, T]`` token matrix over the patches, as ``[N, h, w, 1]``.

    Args:
        matrix: ``[N, T, T]``.
        size: the input's spatial size ``(H, W)``.
        method: the calling method's name, for the message.

    Returns:
        ``[N, h, w, 1]``: row 0 over the patch tokens (:func:`~jaxplain.attribution.tokens.token_grid`).

    Raises:
        ValueError: when the tokens are all patches (no class token).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxplain.attribution.attention import cls_map
        >>> cls_map(jnp.eye(5)[None], (4, 4), "example")[0, ..., 0]
        Array([[0., 0.],
               [0., 0.]], dtype=float32)
    """
    prefix, height, width = token_grid(matrix.shape[-1], size, method=method)
    if prefix == 0:
        raise ValueError(f"{method}: {matrix.shape[-1]} tokens are all patches ({height}x{width}): the model has "
                         "no class token whose row to read")
    return matrix[:, 0, prefix:].reshape(matrix.shape[0], height, width, 1)


def _attention_maps_core(model, inputs, target, key, arrays, *, layers):
    units = _units(model, inputs, layers, "attention_maps")
    return tuple(_attention_forward(model, units)(inputs, [0.0] * len(units))[1])


def attention_maps(model: Any, inputs: Array, *, layers: Sequence[str] | str | None = None) -> tuple[Array, ...]:
    """The attention probabilities of every attention layer (or of ``layers``), ``[N, heads, T, T]`` each.

    Read from the softmax units of the model's program (see the module's docstring), in
    execution order.

    Args:
        model: a ``jx.Model`` (a converted torch ViT), or any model form whose program the
            engine reads (NNX, Equinox, ``jx.Model.from_function``).
        inputs: ``[N, H, W, C]`` inputs, normalised as the model expects.
        layers: None (every attention softmax), or paths of layers holding one each
            (``"encoder.layers.encoder_layer_0.self_attention"``), in any order.

    Returns:
        A tuple of ``[N, heads, T, T]`` arrays, rows summing to 1.

    Raises:
        ValueError: a model with no attention softmax, an unknown layer, a layer holding
            none or several.

    Example:
        >>> import jax, jax.numpy as jnp, jaxplain as jx
        >>> from jaxplain.attribution.attention import _tiny_vit
        >>> model, x = _tiny_vit()
        >>> [a.shape for a in jx.attention_maps(model, x)]
        [(2, 2, 5, 5), (2, 2, 5, 5)]
    """
    model, inputs, target, layers = _prepare(model, inputs, 0, layers, "attention_maps")
    return run(_attention_maps_core, model, inputs, target, layers=layers)


# --------------------------------------------------------------------------------------------
# attention rollout


def _fuse(attention: Array, fusion: str) -> Array:
    return {"mean": jnp.mean, "max": jnp.max, "min": jnp.min}[fusion](attention, axis=1)


def _discard(fused: Array, ratio: float) -> Array:
    """vit-explain's discard: the ``int(T^2 ratio)`` lowest weights of each example's ``T x T`` matrix set to 0,
    except entry ``(0, 0)`` (class token to itself)."""
    count, tokens, _ = fused.shape
    flat = fused.reshape(count, tokens * tokens)
    dropped = int(tokens * tokens * ratio)
    if dropped == 0:
        return fused
    _, lowest = jax.lax.top_k(-flat, dropped)
    drop = jnp.zeros(flat.shape, bool).at[jnp.arange(count)[:, None], lowest].set(True).at[:, 0].set(False)
    return jnp.where(drop, 0.0, flat).reshape(fused.shape)


def _rollout_core(model, inputs, target, key, arrays, *, layers, head_fusion, discard_ratio, flavour, upsample):
    units = _units(model, inputs, layers, "attention_rollout")
    maps = _attention_forward(model, units)(inputs, [0.0] * len(units))[1]
    tokens = maps[0].shape[-1]
    identity = jnp.eye(tokens, dtype=maps[0].dtype)
    result = jnp.broadcast_to(identity, (inputs.shape[0], tokens, tokens))
    for attention in maps:
        mixed = (_discard(_fuse(attention, head_fusion), discard_ratio) + identity) / 2
        if flavour == "paper":
            mixed = mixed / jnp.sum(mixed, axis=-1, keepdims=True)
        else:
            mixed = mixed / jnp.sum(mixed, axis=-1)[:, None, :]
        result = mixed @ result
    cam = cls_map(result, inputs.shape[1:3], "attention_rollout")
    if flavour == "vit_explain":
        cam = cam / jnp.max(cam, axis=(1, 2, 3), keepdims=True)
    return _upsample(cam, inputs.shape[1:3], upsample)


def attention_rollout(
    model: Any,
    inputs: Array,
    *,
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    layers: Sequence[str] | str | None = None,
    flavour: str = "paper",
    upsample: str | None = None,
) -> Array:
    """Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers"), batched.

    Per attention layer ``l``: the heads fused, ``A_l = mean | max | min_h A_lh``; the
    lowest weights discarded (``discard_ratio``, as jacobgil/vit-explain's ``rollout``: the
    ``int(T^2 r)`` smallest entries of each example's ``T x T`` matrix set to 0, the class
    token's weight on itself kept); the residual added and the rows renormalised,
    ``W_l = (A_l + I) / 2`` divided by its row sums (paper, eq. 2 of section 3); the product
    ``R = W_L ... W_1``. The map is the class token's row of ``R`` over the patches,
    ``[N, h, w, 1]`` (the grid from :func:`token_grid`).

    ``flavour="vit_explain"`` reproduces vit-explain's numbers: its ``a / a.sum(dim=-1)`` on a
    ``[1, T, T]`` matrix divides entry ``(i, j)`` by the sum of row ``j`` (broadcasting), and the
    map is divided by its maximum. vit-explain explains batch element 0 only; here every row of
    the batch is explained in one jit-compiled pass.

    Args:
        model: a ``jx.Model`` (a converted torch ViT such as torchvision's
            ``VisionTransformer``), or any model form whose program the engine reads.
        inputs: ``[N, H, W, C]`` inputs, normalised as the model expects.
        head_fusion: ``"mean"``, ``"max"`` or ``"min"`` over the heads.
        discard_ratio: fraction in ``[0, 1)`` of the lowest attention weights set to 0.
        layers: None (every attention layer) or the paths of the layers to roll out.
        flavour: ``"paper"`` (rows renormalised) or ``"vit_explain"``.
        upsample: None (the patch grid), ``"nearest"`` or ``"bilinear"`` (the input's size).

    Returns:
        ``[N, h, w, 1]`` (``[N, H, W, 1]`` with ``upsample``).

    Raises:
        ValueError: a bad option, a model with no attention softmax or with windowed attention
            (Swin), no class token, an unknown layer.

    Example:
        >>> import jaxplain as jx
        >>> from jaxplain.attribution.attention import _tiny_vit
        >>> model, x = _tiny_vit()
        >>> jx.attention_rollout(model, x, head_fusion="max", discard_ratio=0.5).shape
        (2, 2, 2, 1)
    """
    method = "attention_rollout"
    check_choice("head_fusion", head_fusion, HEAD_FUSIONS, method=method)
    check_choice("flavour", flavour, ROLLOUT_FLAVOURS, method=method)
    check_choice("upsample", upsample, UPSAMPLE_MODES, method=method)
    if not isinstance(discard_ratio, (int, float)) or not 0.0 <= discard_ratio < 1.0:
        raise ValueError(f"{method}: discard_ratio must be a number in [0, 1), got {discard_ratio!r}")
    model, inputs, target, layers = _prepare(model, inputs, 0, layers, method)
    return run(_rollout_core, model, inputs, target, layers=layers, head_fusion=head_fusion,
               discard_ratio=float(discard_ratio), flavour=flavour, upsample=upsample)


# --------------------------------------------------------------------------------------------
# gradient-weighted rollout


def attention_gradients(model: Any, inputs: Array, target: Array, units: Sequence[Unit]) -> tuple[list[Array], list[Array]]:
    """``(dF_t/dA_l, A_l)`` at each attention unit, for every row (inside a jit-compiled core).

    Args:
        model: a structured model.
        inputs: the batch.
        target: ``[N]`` target classes.
        units: attention units (:func:`attention_units`).

    Returns:
        Per unit, the gradient of the target logit with respect to its output, and the output.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxplain import program
        >>> from jaxplain.attribution.attention import _tiny_vit, attention_gradients, attention_units
        >>> model, x = _tiny_vit()
        >>> units = attention_units(program.graph_of(model, x), None, method="example")
        >>> gradients, maps = attention_gradients(model, x, jnp.array([0, 2]), units)
        >>> gradients[1].shape, maps[1].shape
        ((2, 2, 5, 5), (2, 2, 5, 5))
    """
    forward = _attention_forward(model, units)
    graph = program.graph_of(model, inputs)
    zeros = [jnp.zeros(graph.aval(unit.output).shape, graph.aval(unit.output).dtype) for unit in units]

    def score(deltas):
        outputs, maps = forward(inputs, deltas)
        return jnp.sum(selected_output(outputs, target)), maps

    return jax.grad(score, has_aux=True)(zeros)


def relevance_rollout(products: Sequence[Array]) -> Array:
    """Chefer et al.'s accumulation over layers: ``R = I``, then ``R <- R + mean_h relu(P_l) R`` per layer.

    ``P_l = dF_t/dA_l * A_l`` gives the generic (ICCV 2021) rollout; ``P_l = dF_t/dA_l * R^(A_l)``,
    with ``R^(A_l)`` the LRP relevance of the attention map, the CVPR 2021 one.

    Args:
        products: per layer, in execution order, ``[N, heads, T, T]``.

    Returns:
        ``R``, ``[N, T, T]``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxplain.attribution.attention import relevance_rollout
        >>> relevance_rollout([jnp.ones((1, 2, 3, 3))])[0]  # I + (1/1) ones(3, 3) @ I
        Array([[2., 1., 1.],
               [1., 2., 1.],
               [1., 1., 2.]], dtype=float32)
    """
    count, _, tokens, _ = products[0].shape
    relevance = jnp.broadcast_to(jnp.eye(tokens, dtype=products[0].dtype), (count, tokens, tokens))
    for product in products:
        relevance = relevance + jnp.mean(jax.nn.relu(product), axis=1) @ relevance
    return relevance


def _gradient_rollout_core(model, inputs, target, key, arrays, *, layers, upsample):
    units = _units(model, inputs, layers, "gradient_rollout")
    gradients, maps = attention_gradients(model, inputs, target, units)
    relevance = relevance_rollout([gradient * attention for gradient, attention in zip(gradients, maps)])
    return _upsample(cls_map(relevance, inputs.shape[1:3], "gradient_rollout"), inputs.shape[1:3], upsample)


def gradient_rollout(
    model: Any,
    inputs: Array,
    target: Target,
    *,
    layers: Sequence[str] | str | None = None,
    upsample: str | None = None,
) -> Array:
    """Gradient-weighted attention rollout (Chefer, Gur and Wolf, ICCV 2021, "Generic Attention-model Explainability").

    Per attention layer, ``Abar_l = mean_h relu(dF_t/dA_lh * A_lh)`` (the gradient of the
    target logit with respect to the attention probabilities); ``R_0 = I``,
    ``R_l = R_(l-1) + Abar_l R_(l-1)`` (eqs. 5-6 of the paper for self-attention; the
    authors' ``generate_relevance`` for ViT). The map is the class token's row of ``R`` over
    the patches, ``[N, h, w, 1]``, for every row of the batch in one jit-compiled pass.

    Args:
        model: a ``jx.Model`` (a converted torch ViT), or any model form whose program the engine reads.
        inputs: ``[N, H, W, C]`` inputs, normalised as the model expects.
        target: the output to explain: an int for every input, ``[N]`` ints, or None (each input's predicted class).
        layers: None (every attention layer) or the paths of the layers to use.
        upsample: None (the patch grid), ``"nearest"`` or ``"bilinear"`` (the input's size).

    Returns:
        ``[N, h, w, 1]`` (``[N, H, W, 1]`` with ``upsample``).

    Raises:
        ValueError: a bad option or target, a model with no attention softmax or with windowed
            attention (Swin), no class token, an unknown layer.

    Example:
        >>> import jaxplain as jx
        >>> from jaxplain.attribution.attention import _tiny_vit
        >>> model, x = _tiny_vit()
        >>> jx.gradient_rollout(model, x, 1, upsample="nearest").shape
        (2, 4, 4, 1)
    """
    method = "gradient_rollout"
    check_choice("upsample", upsample, UPSAMPLE_MODES, method=method)
    model, inputs, target, layers = _prepare(model, inputs, target, layers, method)
    return run(_gradient_rollout_core, model, inputs, target, layers=layers, upsample=upsample)


# --------------------------------------------------------------------------------------------
# Chefer et al.'s transformer attribution (CVPR 2021)


def relevance_composite(stabilizer: float = 1e-9) -> Composite:
    """The rules of Chefer et al.'s relevance propagation (CVPR 2021, section 3.1; the authors' ``layers_ours.py``).

    Linear layers (dense, convolution) by LRP-alpha1beta0 without their bias; LayerNorm, GELU and
    the other activations, the softmax, scalings and affine constants pass relevance unchanged;
    products of activations (``Q K^T``, ``A V``) by the proportional split halved between the two
    factors; residual sums by :class:`~jaxplain.rules.relevance.NormalisedSum`; average pools in
    proportion.

    Args:
        stabilizer: the denominators' epsilon (the authors' ``safe_divide`` adds 1e-9).

    Returns:
        A :class:`~jaxplain.rules.composites.Composite`.

    Example:
        >>> from jaxplain.attribution.attention import relevance_composite
        >>> type(relevance_composite().rule_for("sum", "encoder", None)).__name__
        'NormalisedSum'
    """
    return Composite(layer_map=(
        (kinds.LINEAR, lrp_rules.Alpha1Beta0(stabilizer, set_bias_to_zero=True)),
        (kinds.NORM + kinds.ACTIVATION + kinds.SOFTMAX + kinds.SCALE + kinds.BATCH_NORM, lrp_rules.Pass()),
        (kinds.PRODUCT, relevance_rules.Uniform(stabilizer)),
        (kinds.SUM, relevance_rules.NormalisedSum(stabilizer)),
        (kinds.AVG_POOL, lrp_rules.Norm(stabilizer)),
    ))


def attention_relevance(model: Any, inputs: Array, target: Array, units: Sequence[Unit],
                        composite: Composite) -> list[Array]:
    """The relevance ``R^(A_l)`` of each attention unit's probabilities, starting from 1 at the target.

    One backward pass of the program under ``composite``'s rules, seeded with the one-hot target
    (inside a jit-compiled core); a unit's relevance is the cotangent that reaches its output.

    Args:
        model: a structured model.
        inputs: the batch.
        target: ``[N]`` target classes.
        units: attention units (:func:`attention_units`).
        composite: the rules (:func:`relevance_composite`).

    Returns:
        Per unit, ``[N, heads, T, T]``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxplain import program
        >>> from jaxplain.attribution.attention import _tiny_vit, attention_relevance, attention_units
        >>> from jaxplain.attribution.attention import relevance_composite
        >>> model, x = _tiny_vit()
        >>> units = attention_units(program.graph_of(model, x), None, method="example")
        >>> [r.shape for r in attention_relevance(model, x, jnp.array([0, 2]), units, relevance_composite())]
        [(2, 2, 5, 5), (2, 2, 5, 5)]
    """
    graph = program.graph_of(model, inputs)
    forward = _attention_forward(model, units, composite)
    zeros = [jnp.zeros(graph.aval(unit.output).shape, graph.aval(unit.output).dtype) for unit in units]
    outputs, pullback = jax.vjp(lambda deltas: forward(inputs, deltas)[0], zeros)
    return pullback(jax.nn.one_hot(target, outputs.shape[-1], dtype=outputs.dtype))[0]


def _transformer_attribution_core(model, inputs, target, key, arrays, *, layers, upsample, stabilizer):
    method = "transformer_attribution"
    units = _units(model, inputs, layers, method)
    relevances = attention_relevance(model, inputs, target, units, relevance_composite(stabilizer))
    gradients, _ = attention_gradients(model, inputs, target, units)
    rollout = relevance_rollout([gradient * relevance for gradient, relevance in zip(gradients, relevances)])
    return _upsample(cls_map(rollout, inputs.shape[1:3], method), inputs.shape[1:3], upsample)


def transformer_attribution(
    model: Any,
    inputs: Array,
    target: Target,
    *,
    layers: Sequence[str] | str | None = None,
    upsample: str | None = None,
    stabilizer: float = 1e-9,
) -> Array:
    """Chefer, Gur and Wolf's transformer attribution (CVPR 2021, "Transformer Interpretability Beyond
    Attention Visualization"), batched.

    Relevance is propagated from 1 at the target logit by :func:`relevance_composite`'s rules
    (LRP-alpha1beta0 on linear layers, normalised residual sums, halved products, the rest passed
    through); ``R^(A_l)`` is the relevance that reaches layer ``l``'s attention probabilities from
    the ``A V`` product. Per layer ``Abar_l = mean_h relu(dF_t/dA_lh * R^(A_lh))`` (eq. 13), then
    the rollout ``C = (I + Abar_L) ... (I + Abar_1)`` (eq. 14) and the class token's row over the
    patches, ``[N, h, w, 1]`` (the authors' ``generate_LRP(method="transformer_attribution")``). The
    authors' code reads batch element 0; here every row is explained in one jit-compiled pass,
    its sums taken per example.

    Args:
        model: a ``jx.Model`` (a converted torch ViT), or any model form whose program the engine reads.
        inputs: ``[N, H, W, C]`` inputs, normalised as the model expects.
        target: the output to explain: an int for every input, ``[N]`` ints, or None (each input's predicted class).
        layers: None (every attention layer) or the paths of the layers to use.
        upsample: None (the patch grid), ``"nearest"`` or ``"bilinear"`` (the input's size).
        stabilizer: the denominators' epsilon.

    Returns:
        ``[N, h, w, 1]`` (``[N, H, W, 1]`` with ``upsample``).

    Raises:
        ValueError: a bad option or target, a model with no attention softmax or with windowed
            attention (Swin), no class token, an unknown layer, an operation or layer kind the rules
            cannot reach (named with its layer path).

    Example:
        >>> import jaxplain as jx
        >>> from jaxplain.attribution.attention import _tiny_vit
        >>> model, x = _tiny_vit()
        >>> jx.transformer_attribution(model, x, 1, upsample="nearest").shape
        (2, 4, 4, 1)
    """
    method = "transformer_attribution"
    check_choice("upsample", upsample, UPSAMPLE_MODES, method=method)
    if not isinstance(stabilizer, (int, float)) or not stabilizer > 0:
        raise ValueError(f"{method}: stabilizer must be a positive number, got {stabilizer!r}")
    model, inputs, target, layers = _prepare(model, inputs, target, layers, method)
    composite = relevance_composite(float(stabilizer))
    view = program.blocks_of(model, inputs, merge=composite.merge_batch_norm)
    check_rules(composite, view, None, program.graph_of(model, inputs), method=method)
    return run(_transformer_attribution_core, model, inputs, target, layers=layers, upsample=upsample,
               stabilizer=float(stabilizer))


# --------------------------------------------------------------------------------------------
# the docstrings' model


def _tiny_vit(seed: int = 0) -> tuple[Any, Array]:
    """A two-layer, two-head plain-JAX ViT on 4x4 images (2x2 patches and a class token) and two images."""
    from jaxplain.model import Model

    keys = iter(jax.random.split(jax.random.PRNGKey(seed), 12))
    dim, heads = 8, 2

    def dense(shape):
        return jax.random.normal(next(keys), shape) / jnp.sqrt(shape[0])

    params = {"embed": dense((12, dim)), "cls": dense((1, dim)), "head": dense((dim, 3)),
              "blocks": [{"qkv": dense((dim, 3 * dim)), "out": dense((dim, dim))} for _ in range(2)]}

    def apply(params, images):
        count = images.shape[0]
        patches = images.reshape(count, 2, 2, 2, 2, 3).transpose(0, 1, 3, 2, 4, 5).reshape(count, 4, 12)
        tokens = jnp.concatenate([jnp.broadcast_to(params["cls"], (count, 1, dim)), patches @ params["embed"]], 1)
        for block in params["blocks"]:
            q, k, v = jnp.split((tokens @ block["qkv"]).reshape(count, 5, 3 * heads, dim // heads).transpose(0, 2, 1, 3),
                                3, axis=1)
            attention = jax.nn.softmax(q @ k.transpose(0, 1, 3, 2) / jnp.sqrt(dim // heads), axis=-1)
            mixed = (attention @ v).transpose(0, 2, 1, 3).reshape(count, 5, dim)
            tokens = tokens + mixed @ block["out"]
        return tokens[:, 0] @ params["head"]

    images = jax.random.normal(next(keys), (2, 4, 4, 3))
    return Model.from_function(apply, params), images


__all__ = ["attention_gradients", "attention_maps", "attention_relevance", "attention_rollout", "attention_units",
           "cls_map", "gradient_rollout", "relevance_composite", "relevance_rollout", "transformer_attribution"]
