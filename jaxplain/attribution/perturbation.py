"""Perturbation methods: feature ablation, occlusion, Shapley values (sampled and exact).

Every perturbation is one element of a vmapped axis: the model sees ``batch_size``
perturbations of every input per step (Captum's ``perturbations_per_eval``), all of
them inside one jit-compiled program. Formulas: Captum's ``FeatureAblation``,
``Occlusion``, ``ShapleyValueSampling`` and ``ShapleyValues``
(captum/attr/_core/feature_ablation.py, occlusion.py, shapley_value.py).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxplain import program
from jaxplain.attribution import incremental as incremental_module
from jaxplain.attribution._common import (
    broadcast_baselines,
    check_batch_size,
    is_concrete,
    map_over,
    prepare,
    require_key,
    run,
    selected_output,
)
from jaxplain.typing import Array, Target

INCREMENTAL_NEEDS = (
    "{method}: incremental=True needs a 4-d image batch and a model with its weights as arguments (a jx.Model, "
    "an NNX or Equinox module, or jx.Model.from_function(fn, params)), not a bare callable"
)
EXACT_SHAPLEY_MAX_FEATURES = 16
"""``shapley_values`` evaluates all ``2**M`` coalitions; beyond this, use sampling."""


def resolve_batch_size(batch_size: int | None, perturbations_per_eval: int | None, *, method: str) -> int | None:
    """``batch_size``, or Captum's name for it, ``perturbations_per_eval`` (not both)."""
    if perturbations_per_eval is not None:
        if batch_size is not None and batch_size != perturbations_per_eval:
            raise ValueError(f"{method}: pass batch_size or its alias perturbations_per_eval, not both")
        batch_size = perturbations_per_eval
    check_batch_size(batch_size, method=method)
    return batch_size


def feature_groups(feature_mask: Any, inputs: Array, *, method: str, shift_to_zero: bool = False) -> tuple[Array, int]:
    """An int32 mask of the inputs' full shape and the number of feature groups ``M``.

    ``None`` makes every scalar of an example its own feature (shared by the batch).
    Otherwise the mask broadcasts to the inputs (``[1, H, W, 1]`` for pixel groups
    shared across channels and the batch, ``[N, H, W, C]`` per example); a 2-D
    ``[H, W]`` mask of 4-D inputs means ``[1, H, W, 1]``. Groups are ``0 .. M-1`` with
    ``M = max + 1`` (Captum), or ``max - min + 1`` after shifting with
    ``shift_to_zero`` (Captum's Lime and KernelShap).
    """
    if feature_mask is None:
        count = math.prod(inputs.shape[1:])
        mask = jnp.arange(count, dtype=jnp.int32).reshape((1,) + inputs.shape[1:])
        return jnp.broadcast_to(mask, inputs.shape), count
    mask = jnp.asarray(feature_mask)
    if not jnp.issubdtype(mask.dtype, jnp.integer):
        raise TypeError(f"{method}: feature_mask must hold integer group ids, got dtype {mask.dtype}")
    if mask.ndim == 2 and inputs.ndim == 4:
        mask = mask[None, :, :, None]
    try:
        mask = jnp.broadcast_to(mask, inputs.shape)
    except ValueError:
        raise ValueError(
            f"{method}: feature_mask of shape {tuple(jnp.shape(feature_mask))} does not broadcast to inputs of shape "
            f"{inputs.shape} (use [H, W], [1, H, W, 1], [N, H, W, 1] or the inputs' shape; inputs are NHWC)"
        ) from None
    if not is_concrete(mask):
        raise TypeError(f"{method}: feature_mask must be a concrete array (the number of groups sets the work)")
    low, high = int(jnp.min(mask)), int(jnp.max(mask))
    if shift_to_zero:
        mask, low, high = mask - low, 0, high - low
    if low < 0:
        raise ValueError(f"{method}: feature_mask ids must be >= 0, got {low}")
    return mask.astype(jnp.int32), high + 1


def spread_over_groups(group_values: Array, mask: Array) -> Array:
    """``out[n, e] = group_values[n, mask[n, e]]``: each element gets its group's value."""
    batch = mask.shape[0]
    flat = jnp.take_along_axis(group_values, mask.reshape(batch, -1), axis=1)
    return flat.reshape(mask.shape)


def target_scores(model, batch: Array, target: Array) -> Array:
    return selected_output(model(batch), target)


def _feature_ablation_core(model, inputs, target, key, arrays, *, num_features, batch_size, group_spans):
    mask, baselines = arrays["feature_mask"], arrays["baselines"]
    if group_spans is None:
        reference = target_scores(model, inputs, target)

        def ablated(feature):
            return target_scores(model, jnp.where(mask == feature, baselines, inputs), target)
    else:
        rows, cols, axes = group_spans
        output, clean = incremental_module.record_clean(program.structured(model, "feature_ablation"), inputs)
        reference = selected_output(output, target)
        sizes = (rows.size, cols.size)

        def ablated(feature):
            starts = (jnp.asarray(rows.starts)[feature], jnp.asarray(cols.starts)[feature])
            cut = lambda array: incremental_module.box_slice(array, axes, starts, sizes)
            box = jnp.where(cut(mask) == feature, cut(baselines), cut(inputs))
            patch = incremental_module.Patch(box, feature, feature, rows, cols, axes)
            return selected_output(incremental_module.patched_forward(clean, patch), target)

    scores = map_over(ablated, jnp.arange(num_features), batch_size)
    return spread_over_groups((reference[None] - scores).T, mask)


def feature_ablation(
    model: Any,
    inputs: Array,
    target: Target,
    *,
    baselines: Any = None,
    feature_mask: Any = None,
    batch_size: int | None = None,
    perturbations_per_eval: int | None = None,
    incremental: bool | None = None,
) -> Array:
    """Ablate each feature group to its baseline; every element gets ``F(x) - F(x_ablated)``.

    Captum's ``FeatureAblation`` (captum/attr/_core/feature_ablation.py): each group of
    ``feature_mask`` (every scalar by default) is replaced by ``baselines`` (0 by
    default; scalar, per-channel ``[C]`` or input-shaped) in turn, all groups as one
    vmapped axis, ``batch_size`` groups per forward pass.

    Args:
        model: a ``jx.Model``, a bound Flax module or any JAX function ``[N, ...] -> [N, K]``.
        inputs: ``[N, H, W, C]``.
        target: an int, an int array ``[N]``, or None for the predicted class.
        baselines: the values ablated features take.
        feature_mask: integer group ids broadcastable to ``inputs`` (see :func:`feature_groups`).
        batch_size: groups per forward pass (None: all at once); ``perturbations_per_eval`` is its alias.
        incremental: recompute only the activations inside each group's bounding box
            (``jaxplain.attribution.incremental``, as :func:`occlusion`): True requires it, False
            turns it off, None (default) uses it for image batches when every group's box
            covers at most half of the image.
        perturbations_per_eval: Captum's name for ``batch_size`` (pass one of them).

    Returns:
        The attribution, shaped like ``inputs``.

    Raises:
        ValueError: ``incremental=True`` on inputs that are not a 4-d image batch or on a model
            without weights as arguments (a bare callable), bad mask, baselines, batch size or target.

    Example:
        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> quadrants = (jax.numpy.arange(16)[:, None] // 8) * 2 + jax.numpy.arange(16) // 8  # 4 groups, [H, W]
        >>> jx.feature_ablation(model, x, 0, feature_mask=quadrants).shape
        (2, 16, 16, 3)
    """
    batch_size = resolve_batch_size(batch_size, perturbations_per_eval, method="feature_ablation")
    model, inputs, target = prepare(model, inputs, target, method="feature_ablation")
    mask, count = feature_groups(feature_mask, inputs, method="feature_ablation")
    axes = incremental_module.spatial_axes(model, inputs)
    if incremental and axes is None:
        raise ValueError(INCREMENTAL_NEEDS.format(method="feature_ablation"))
    spans = None
    if axes is not None and incremental is not False:
        rows, cols = incremental_module.group_spans(np.asarray(mask), count, axes)
        if incremental or rows.size * cols.size <= incremental_module.MAX_BOX_SHARE * rows.extent * cols.extent:
            spans = (rows, cols, axes)
    arrays = {"feature_mask": mask, "baselines": broadcast_baselines(baselines, inputs, method="feature_ablation")}
    return run(
        _feature_ablation_core, model, inputs, target, arrays=arrays, num_features=count, batch_size=batch_size,
        group_spans=spans,
    )


def window_positions(size: int, window: int, stride: int) -> np.ndarray:
    """``[count, size]`` booleans: element ``e`` lies in window ``i`` (Captum's shift count
    ``ceil((size - window) / stride) + 1``; the last window is cropped where it overruns)."""
    count = -(-(size - window) // stride) + 1
    starts = stride * np.arange(count)[:, None]
    positions = np.arange(size)[None, :]
    return (positions >= starts) & (positions < starts + window)


def _incremental_occlusion(model, inputs, target, baselines, axes, counts, windows, strides, spatial):
    """``(reference scores, score of window index)``: each window's pass recomputes only what it changes."""
    output, clean = incremental_module.record_clean(program.structured(model, "occlusion"), inputs)
    rows, cols = (incremental_module.window_spans(strides[a - 1] * np.arange(counts[a - 1]), windows[a - 1],
                                                  inputs.shape[a]) for a in spatial)
    sizes = (rows.size, cols.size)

    def occluded(index):
        position = jnp.unravel_index(index, counts)
        row, col = position[spatial[0] - 1], position[spatial[1] - 1]
        starts = (jnp.asarray(rows.starts)[row], jnp.asarray(cols.starts)[col])
        covered = None
        for dim, (axis, at) in enumerate(zip(axes, position), start=1):
            mask = axis[at]
            if dim in spatial:
                span_start, size = starts[spatial.index(dim)], sizes[spatial.index(dim)]
                mask = lax.dynamic_slice(mask, (span_start,), (size,))
            mask = mask.reshape((1,) * (dim - 1) + (-1,) + (1,) * (len(axes) - dim))
            covered = mask if covered is None else covered & mask
        cut = lambda array: incremental_module.box_slice(array, spatial, starts, sizes)
        values = jnp.where(covered[None], cut(baselines), cut(inputs))
        patch = incremental_module.Patch(values, row, col, rows, cols, spatial)
        return selected_output(incremental_module.patched_forward(clean, patch), target)

    return selected_output(output, target), occluded


def _occlusion_core(model, inputs, target, key, arrays, *, windows, strides, batch_size, spatial):
    baselines = arrays["baselines"]
    dims = inputs.shape[1:]
    axes = [jnp.asarray(window_positions(d, w, s)) for d, w, s in zip(dims, windows, strides)]
    counts = tuple(axis.shape[0] for axis in axes)
    if spatial is not None:
        reference, occluded = _incremental_occlusion(model, inputs, target, baselines, axes, counts, windows, strides,
                                                     spatial)
    else:
        reference = target_scores(model, inputs, target)

        def occluded(index):
            position = jnp.unravel_index(index, counts)
            covered = axes[0][position[0]]
            for axis, at in zip(axes[1:], position[1:]):
                covered = covered[..., None] & axis[at]
            return target_scores(model, jnp.where(covered, baselines, inputs), target)

    scores = map_over(occluded, jnp.arange(math.prod(counts)), batch_size)
    differences = (reference[None] - scores).reshape(counts + (inputs.shape[0],))
    letters = "abcdefghijklm"[: len(dims)]
    elements = "opqrstuvwxyz"[: len(dims)]
    factors = [axis.astype(inputs.dtype) for axis in axes]
    spec = ",".join(f"{a}{e}" for a, e in zip(letters, elements))
    total = jnp.einsum(f"{letters}n,{spec}->n{elements}", differences, *factors)
    coverage = jnp.einsum(f"{spec}->{elements}", *factors)
    return total / coverage


def _as_tuple(value: int | Sequence[int], length: int, name: str, *, method: str) -> tuple[int, ...]:
    values = (value,) * length if isinstance(value, (int, np.integer)) else tuple(value)
    if len(values) != length or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in values):
        raise ValueError(f"{method}: {name} must be a positive int or {length} positive ints, got {value!r}")
    return tuple(int(v) for v in values)


def occlusion(
    model: Any,
    inputs: Array,
    target: Target,
    *,
    sliding_window_shapes: Sequence[int],
    strides: int | Sequence[int] = 1,
    baselines: Any = None,
    batch_size: int | None = None,
    perturbations_per_eval: int | None = None,
    incremental: bool | None = None,
) -> Array:
    """Slide a window of baseline values over the input; average ``F(x) - F(x_occluded)``.

    Captum's ``Occlusion`` (captum/attr/_core/occlusion.py, Zeiler and Fergus 2014): one
    window position per ``ceil((D - w) / s) + 1`` shift along each dimension, windows that
    overrun the input cropped, and each element's attribution the mean over the windows
    covering it. Every window position is one vmapped perturbation.

    Args:
        model: a ``jx.Model``, or any model form :func:`jaxplain.as_model` takes.
        inputs: ``[N, H, W, C]`` inputs, normalised as the model expects.
        target: the output to explain: an int for every input, ``[N]`` ints, or None (each input's predicted class).
        sliding_window_shapes: the window in the inputs' layout without the batch axis:
            ``(h, w, c)`` for NHWC inputs, or ``(h, w)`` for a window over all channels (of a
            channels-first model's ``[N, C, H, W]`` inputs too, ``channel_axis=1``).
            Captum's ``(c, h, w)`` is NCHW: reorder it.
        strides: an int for every dimension, or one per window dimension; at most the window
            where the window does not span the dimension.
        baselines: the values a window writes (0 by default; scalar, per-channel ``[C]`` or input-shaped).
        batch_size: window positions per forward pass (None: all at once); alias ``perturbations_per_eval``.
        incremental: recompute only the activations each window changes
            (``jaxplain.attribution.incremental``, Krypton's exact incremental inference): True
            requires it, False turns it off, None (default) uses it for image batches when a
            window covers at most half of the image. Any model with its weights as arguments:
            the change is followed through the traced program's convolutions, pools and
            element-wise operations.
        perturbations_per_eval: Captum's name for ``batch_size`` (pass one of them).

    Returns:
        The attribution, shaped like ``inputs``.

    Raises:
        ValueError: a window or stride that does not fit the inputs, ``incremental=True`` on
            inputs that are not a 4-d image batch or on a bare callable, bad baselines, batch
            size or target.

    Example:
        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> jx.occlusion(model, x, 0, sliding_window_shapes=(8, 8), strides=8).shape
        (2, 16, 16, 3)
    """
    batch_size = resolve_batch_size(batch_size, perturbations_per_eval, method="occlusion")
    model, inputs, target = prepare(model, inputs, target, method="occlusion")
    spatial = incremental_module.spatial_axes(model, inputs)
    dims = inputs.shape[1:]
    windows = tuple(sliding_window_shapes)
    if inputs.ndim == 4 and len(windows) == 2:
        windows = (dims[0],) + windows if getattr(model, "channel_axis", -1) == 1 else windows + (dims[-1],)
    windows = _as_tuple(windows, len(dims), "sliding_window_shapes", method="occlusion")
    strides = _as_tuple(strides, len(dims), "strides", method="occlusion")
    for name, window, stride, size in zip("hwc" if len(dims) == 3 else range(len(dims)), windows, strides, dims):
        if window > size:
            raise ValueError(
                f"occlusion: window {windows} is larger than the input {dims} along {name!r} "
                "(windows are in the inputs' NHWC order: (h, w, c))"
            )
        if stride > window and window < size:
            raise ValueError(f"occlusion: strides {strides} exceed the window {windows}: elements would be skipped")
    if incremental and spatial is None:
        raise ValueError(INCREMENTAL_NEEDS.format(method="occlusion"))
    if spatial is not None:
        window_area, map_area = (math.prod(shape[a - 1] for a in spatial) for shape in (windows, dims))
        small_windows = window_area <= incremental_module.MAX_BOX_SHARE * map_area
        if incremental is False or not (incremental or small_windows):
            spatial = None
    arrays = {"baselines": broadcast_baselines(baselines, inputs, method="occlusion")}
    return run(
        _occlusion_core, model, inputs, target, arrays=arrays, windows=windows, strides=strides, batch_size=batch_size,
        spatial=spatial,
    )


def coalition_inputs(inputs: Array, baselines: Array, mask: Array, present: Array) -> Array:
    """The inputs with the groups flagged in ``present`` ``[N, M]`` kept, the rest at baseline."""
    keep = spread_over_groups(present, mask)
    return jnp.where(keep, inputs, baselines)


def _shapley_sampling_core(model, inputs, target, key, arrays, *, num_features, n_samples, batch_size):
    mask, baselines = arrays["feature_mask"], arrays["baselines"]
    permutations = arrays.get("permutations")
    if permutations is None:
        keys = jax.random.split(key, n_samples)
        permutations = jax.vmap(lambda k: jax.random.permutation(k, num_features))(keys)
    ranks = jnp.argsort(permutations, axis=1)
    batch = inputs.shape[0]
    empty = target_scores(model, baselines, target)

    def prefix(sample_step):
        sample, step = sample_step // num_features, sample_step % num_features
        present = jnp.broadcast_to(ranks[sample] <= step, (batch, num_features))
        return target_scores(model, coalition_inputs(inputs, baselines, mask, present), target)

    scores = map_over(prefix, jnp.arange(n_samples * num_features), batch_size)
    scores = scores.reshape(n_samples, num_features, batch)
    gains = scores - jnp.concatenate([jnp.broadcast_to(empty, (n_samples, 1, batch)), scores[:, :-1]], axis=1)
    per_group = jnp.take_along_axis(gains, ranks[:, :, None], axis=1).mean(axis=0)
    return spread_over_groups(per_group.T, mask)


def shapley_value_sampling(
    model: Any,
    inputs: Array,
    target: Target,
    *,
    key: Array | None = None,
    baselines: Any = None,
    feature_mask: Any = None,
    n_samples: int = 25,
    permutations: Any = None,
    batch_size: int | None = None,
    perturbations_per_eval: int | None = None,
) -> Array:
    """Shapley values estimated from ``n_samples`` random orderings of the feature groups.

    Captum's ``ShapleyValueSampling`` (captum/attr/_core/shapley_value.py; Castro et al.
    2009): starting from the all-baseline input, groups are restored in each sampled
    order and each gets the change of the target output it causes; the gains are averaged
    over orderings. Every (ordering, step) pair is one vmapped forward pass.

    Args:
        model: a ``jx.Model``, or any model form :func:`jaxplain.as_model` takes.
        inputs: ``[N, H, W, C]`` inputs, normalised as the model expects.
        target: the output to explain: an int for every input, ``[N]`` ints, or None (each input's predicted class).
        key: PRNG key for the orderings (required unless ``permutations`` is given).
        baselines: the absent value of a group (0 by default).
        feature_mask: integer group ids broadcastable to ``inputs`` (every scalar by default).
        n_samples: number of orderings.
        permutations: ``[n_samples, M]`` orderings to use instead of random ones.
        batch_size: forward passes per step (None: all at once); alias ``perturbations_per_eval``.
        perturbations_per_eval: Captum's name for ``batch_size`` (pass one of them).

    Returns:
        The attribution, shaped like ``inputs``.

    Raises:
        ValueError: neither ``key`` nor ``permutations``, permutations not ``[n_samples, M]``,
            bad mask, baselines, batch size or target.

    Example:
        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> quadrants = (jax.numpy.arange(16)[:, None] // 8) * 2 + jax.numpy.arange(16) // 8  # 4 groups, [H, W]
        >>> jx.shapley_value_sampling(model, x, 0, key=jax.random.PRNGKey(0), feature_mask=quadrants,
        ...                           n_samples=3).shape
        (2, 16, 16, 3)
    """
    batch_size = resolve_batch_size(batch_size, perturbations_per_eval, method="shapley_value_sampling")
    model, inputs, target = prepare(model, inputs, target, method="shapley_value_sampling")
    mask, count = feature_groups(feature_mask, inputs, method="shapley_value_sampling")
    arrays = {"feature_mask": mask, "baselines": broadcast_baselines(baselines, inputs, method="shapley_value_sampling")}
    if permutations is not None:
        permutations = jnp.asarray(permutations, jnp.int32)
        if permutations.ndim != 2 or permutations.shape[1] != count:
            raise ValueError(
                f"shapley_value_sampling: permutations must have shape [n_samples, {count}], got {permutations.shape}"
            )
        if not bool(jnp.all(jnp.sort(permutations, axis=1) == jnp.arange(count))):
            raise ValueError("shapley_value_sampling: every row of permutations must be a permutation of 0..M-1")
        arrays["permutations"] = permutations
        n_samples = permutations.shape[0]
    else:
        key = require_key(key, method="shapley_value_sampling")
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"shapley_value_sampling: n_samples must be a positive int, got {n_samples!r}")
    return run(
        _shapley_sampling_core,
        model,
        inputs,
        target,
        key=key,
        arrays=arrays,
        num_features=count,
        n_samples=n_samples,
        batch_size=batch_size,
    )


def _coalition_weights(num_features: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index pairs (coalition without f, with f) and Shapley weights ``|S|!(M-|S|-1)!/M!``."""
    coalitions = np.arange(2**num_features)
    without = np.stack([coalitions[(coalitions >> f) & 1 == 0] for f in range(num_features)])
    sizes = np.array([bin(c).count("1") for c in range(2**num_features)])[without]
    factorial = np.vectorize(math.factorial)
    weights = factorial(sizes) * factorial(num_features - sizes - 1) / math.factorial(num_features)
    with_f = without | (1 << np.arange(num_features))[:, None]
    return without, with_f, weights


def _shapley_exact_core(model, inputs, target, key, arrays, *, num_features, batch_size):
    mask, baselines = arrays["feature_mask"], arrays["baselines"]
    batch = inputs.shape[0]
    bits = 1 << jnp.arange(num_features)

    def coalition(index):
        present = jnp.broadcast_to((index & bits) > 0, (batch, num_features))
        return target_scores(model, coalition_inputs(inputs, baselines, mask, present), target)

    scores = map_over(coalition, jnp.arange(2**num_features), batch_size)
    without, with_f, weights = _coalition_weights(num_features)
    gains = scores[with_f] - scores[without]
    per_group = jnp.einsum("fsn,fs->nf", gains, jnp.asarray(weights, scores.dtype))
    return spread_over_groups(per_group, mask)


def shapley_values(
    model: Any,
    inputs: Array,
    target: Target,
    *,
    baselines: Any = None,
    feature_mask: Any = None,
    batch_size: int | None = None,
    perturbations_per_eval: int | None = None,
) -> Array:
    """Exact Shapley values of a few feature groups.

    Captum's ``ShapleyValues`` (captum/attr/_core/shapley_value.py) averages over all
    ``M!`` orderings; the same value is ``sum_S |S|!(M-|S|-1)!/M! [F(S+f) - F(S)]`` over
    the ``2**M`` coalitions, which is what is evaluated here (one vmapped pass).

    Args:
        model: a ``jx.Model``, or any model form :func:`jaxplain.as_model` takes.
        inputs: ``[N, H, W, C]`` inputs, normalised as the model expects.
        target: the output to explain: an int for every input, ``[N]`` ints, or None (each input's predicted class).
        baselines: the absent value of a group (0 by default; scalar, per-channel ``[C]`` or
            input-shaped).
        feature_mask: integer group ids broadcastable to ``inputs``, at most
            ``EXACT_SHAPLEY_MAX_FEATURES`` groups.
        batch_size: coalitions per forward pass (None: all at once).
        perturbations_per_eval: Captum's name for ``batch_size`` (pass one of them).

    Returns:
        The attribution, shaped like ``inputs``: every element carries its group's Shapley
        value, and the groups' values add up to ``F(x) - F(baselines)`` (efficiency).

    Raises:
        ValueError: with more than ``EXACT_SHAPLEY_MAX_FEATURES`` groups (use
            :func:`shapley_value_sampling`), bad mask, baselines, batch size or target.

    Example:
        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> quadrants = (jax.numpy.arange(16)[:, None] // 8) * 2 + jax.numpy.arange(16) // 8  # 4 groups, [H, W]
        >>> values = jx.shapley_values(model, x, 0, feature_mask=quadrants)
        >>> gap = model(x)[:, 0] - model(jax.numpy.zeros_like(x))[:, 0]
        >>> per_group = values[:, ::8, ::8, 0].sum(axis=(1, 2))  # one element of each quadrant
        >>> bool(jax.numpy.allclose(per_group, gap, rtol=1e-4, atol=1e-4))
        True
    """
    batch_size = resolve_batch_size(batch_size, perturbations_per_eval, method="shapley_values")
    model, inputs, target = prepare(model, inputs, target, method="shapley_values")
    mask, count = feature_groups(feature_mask, inputs, method="shapley_values")
    if count > EXACT_SHAPLEY_MAX_FEATURES:
        raise ValueError(
            f"shapley_values: {count} feature groups need 2**{count} forward passes; group the features with "
            f"feature_mask (at most {EXACT_SHAPLEY_MAX_FEATURES} groups) or use shapley_value_sampling"
        )
    arrays = {"feature_mask": mask, "baselines": broadcast_baselines(baselines, inputs, method="shapley_values")}
    return run(_shapley_exact_core, model, inputs, target, arrays=arrays, num_features=count, batch_size=batch_size)
