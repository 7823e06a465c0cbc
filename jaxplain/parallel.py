"""Dataset-scale explanation, data parallel over devices with ``jax.sharding``.

:func:`explain_sharded` splits one batch over a 1-D device mesh (axis ``"batch"``):
inputs and targets are sharded along their first axis, the model's variables are
replicated, and the explainer runs under ``jax.jit`` so each device explains its own
rows. :func:`explain_dataset` streams a dataset through it in batches of one fixed
shape, so a single compilation serves the whole dataset.

Multi-host
----------
``jaxplain explain --coordinator HOST:PORT --num-processes N --process-id I`` does all of
this from the command line (README, "Command line"). In Python, each host runs the same
program and tells JAX about the others before its first computation. With two hosts, the
first reachable at ``10.0.0.1``::

    # on host 0
    python explain.py --coordinator 10.0.0.1:1234 --num-processes 2 --process-id 0
    # on host 1
    python explain.py --coordinator 10.0.0.1:1234 --num-processes 2 --process-id 1

where ``explain.py`` parses those flags and starts with::

    import jax
    jax.distributed.initialize(
        coordinator_address=args.coordinator,  # host 0's address and any free port
        num_processes=args.num_processes,      # 2
        process_id=args.process_id,            # 0 on host 0, 1 on host 1
    )

(``coordinator_address`` may instead come from the ``JAX_COORDINATOR_ADDRESS``
environment variable; on SLURM, Cloud TPU and Open MPI clusters a bare
``jax.distributed.initialize()`` discovers all three.) Explanations need no
communication between images, so each host then explains its own part of the dataset
on its own devices (``devices=None`` means ``jax.local_devices()``)::

    share = slice(jax.process_index(), None, jax.process_count())
    for maps in explain_dataset(jx.integrated_gradients, model, images[share], targets[share], batch_size=64):
        ...
"""

from __future__ import annotations

from functools import lru_cache
from itertools import islice
from typing import Any, Callable, Iterable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxplain.attribution._common import check_inputs, resolve_target
from jaxplain.model import as_model
from jaxplain.typing import Array, Target


def _is_array(value: Any) -> bool:
    return isinstance(value, (jax.Array, np.ndarray))


@lru_cache(maxsize=64)
def _jitted(
    method: Callable[..., Any], static: tuple[tuple[str, Any], ...], has_target: bool, sharding: NamedSharding
) -> Callable[..., Any]:
    def explain(model, inputs, target, rows, shared):
        result = method(model, inputs, target if has_target else None, **rows, **shared, **dict(static))
        return jax.tree_util.tree_map(
            lambda leaf: jax.lax.with_sharding_constraint(leaf, sharding)
            if jnp.ndim(leaf) and leaf.shape[0] == inputs.shape[0]
            else leaf,
            result,
        )

    return jax.jit(explain)


def _pad_rows(array: Array, rows: int) -> Array:
    """``array`` with its last row repeated until it has ``rows`` rows."""
    missing = rows - array.shape[0]
    if missing == 0:
        return array
    return jnp.concatenate([array, jnp.repeat(array[-1:], missing, axis=0)])


def explain_sharded(
    method: Callable[..., Any],
    model: Any,
    inputs: Array,
    target: Target = None,
    *,
    devices: Sequence[jax.Device] | None = None,
    per_example: Sequence[str] | None = None,
    **options: Any,
) -> Any:
    """``method(model, inputs, target, **options)`` with the batch split over devices.

    Builds ``Mesh(devices, ("batch",))``, places ``inputs`` and the ``[N]`` targets with
    ``NamedSharding(mesh, P("batch"))`` and the model's variables replicated, then runs
    ``jax.jit`` of the method, whose computation XLA partitions along the batch (GSPMD),
    so each device explains its rows; every output leaf with a leading batch axis is
    constrained to the same sharding (``return_convergence_delta=True`` works too).
    Per-example array options (``baselines`` of shape ``[N, H, W, C]``) are sharded
    like the inputs; other array options (a key, a baseline distribution) are replicated.

    The batch is padded to a multiple of the device count by repeating its last row, and
    the padding is cut from the result. An array cannot be split unevenly, so a cut
    result is gathered (replicated on every device): take ``N`` a multiple of the device
    count to keep the result sharded.

    The result equals the one-device call for every deterministic method. Stochastic
    methods draw their noise for the padded batch, so they match the one-device call
    exactly when ``N`` is a multiple of the device count.

    Args:
        method: an explainer such as ``jx.integrated_gradients``; to set a method option
            named like an argument here, bind it with ``functools.partial``.
        model: a ``jx.Model``, a bound Flax module or a JAX function.
        inputs: ``[N, H, W, C]``.
        target: an int, an int array ``[N]``, or None (each device takes its rows' predicted class).
        devices: the devices to use; default ``jax.local_devices()``.
        per_example: names of the array options that hold one row per example; default:
            those shaped exactly like ``inputs``. Pass ``()`` for ``gradient_shap`` when its
            baseline distribution happens to have ``N`` rows.
        **options: the method's options; arrays among them are replicated, the rest
            must be hashable (they are static under ``jit``).

    Returns:
        The method's output, sharded over the devices along the batch axis.

    Raises:
        ValueError: no devices, ``per_example`` names that are not array options, an
            option that is neither an array nor hashable, and the method's own checks.

    Example:
        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> maps = jx.explain_sharded(jx.saliency, model, x, 0)  # over jax.local_devices()
        >>> bool(jax.numpy.allclose(maps, jx.saliency(model, x, 0)))
        True
    """
    model = as_model(model)
    inputs = check_inputs(model, inputs, method="explain_sharded")
    devices = list(jax.local_devices() if devices is None else devices)
    if not devices:
        raise ValueError("explain_sharded: devices is empty")
    mesh = Mesh(np.asarray(devices), ("batch",))
    batch, replicated = NamedSharding(mesh, P("batch")), NamedSharding(mesh, P())
    rows = inputs.shape[0]
    padded = -(-rows // len(devices)) * len(devices)
    has_target = target is not None
    if has_target:
        target = resolve_target(model, inputs, target, method="explain_sharded")
    else:
        target = jnp.zeros((rows,), jnp.int32)
    arrays = {name: value for name, value in options.items() if _is_array(value)}
    if per_example is None:
        per_example = [name for name, value in arrays.items() if value.shape == inputs.shape]
    unknown = sorted(set(per_example) - set(arrays))
    if unknown:
        raise ValueError(f"explain_sharded: per_example names {unknown}, which are not array options")
    rows_options = {name: _pad_rows(jnp.asarray(arrays[name]), padded) for name in per_example}
    shared = {name: value for name, value in arrays.items() if name not in rows_options}
    static = tuple(sorted((name, value) for name, value in options.items() if name not in arrays))
    for name, value in static:
        try:
            hash(value)
        except TypeError:
            raise ValueError(f"explain_sharded: option {name}={value!r} is neither an array nor hashable") from None
    explain = _jitted(method, static, has_target, batch)
    result = explain(
        jax.device_put(model, replicated),
        jax.device_put(_pad_rows(inputs, padded), batch),
        jax.device_put(_pad_rows(target, padded), batch),
        jax.device_put(rows_options, batch),
        jax.device_put(shared, replicated),
    )
    return _cut(result, rows, padded)


def _cut(result: Any, rows: int, padded: int) -> Any:
    """The first ``rows`` rows of every leaf with a leading axis of ``padded`` rows."""
    if rows == padded:
        return result
    return jax.tree_util.tree_map(
        lambda leaf: leaf[:rows] if jnp.ndim(leaf) and leaf.shape[0] == padded else leaf, result
    )


def explain_dataset(
    method: Callable[..., Any],
    model: Any,
    images: Iterable[Array] | Array,
    targets: Iterable[int] | Array | int | None = None,
    *,
    batch_size: int = 32,
    devices: Sequence[jax.Device] | None = None,
    **options: Any,
) -> Iterator[Any]:
    """Explain a dataset batch by batch with :func:`explain_sharded`.

    Every batch has ``batch_size`` rows (the last one padded by repeating its last image,
    the padding cut from its result), so the method is compiled once. Take
    ``batch_size`` a multiple of the device count to avoid padding every batch.

    Args:
        method: an explainer; its own ``batch_size`` option (steps per pass) can be bound
            with ``functools.partial(method, batch_size=...)``.
        model: a ``jx.Model``, a bound Flax module or a JAX function.
        images: an array ``[M, H, W, C]`` or an iterable of images ``[H, W, C]``.
        targets: None (predicted classes), an int, an array ``[M]`` or an iterable of ints.
        batch_size: images per batch.
        devices: as in :func:`explain_sharded`.
        **options: the method's options, the same for every batch (a per-example
            ``baselines`` array cannot be split here; give one that broadcasts).

    Yields:
        The method's output for each batch, in order (the last one may be shorter).

    Raises:
        ValueError: ``batch_size`` not a positive int, fewer targets than images.

    Example:
        >>> import jax, jaxplain as jx
        >>> model = jx.demo.load_model()
        >>> x = jx.demo.normalise(jx.demo.load_samples().images[:2, ::4, ::4])  # two 16x16 images
        >>> [maps.shape for maps in jx.explain_dataset(jx.saliency, model, x[[0, 1, 0]], 0, batch_size=2)]
        [(2, 16, 16, 3), (1, 16, 16, 3)]
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"explain_dataset: batch_size must be a positive int, got {batch_size!r}")
    if _is_array(images):
        image_iter = (images[start : start + batch_size] for start in range(0, images.shape[0], batch_size))
    else:
        image_iter = (jnp.stack([jnp.asarray(image) for image in chunk]) for chunk in _chunks(images, batch_size))
    if targets is None or isinstance(targets, (int, np.integer)) or (_is_array(targets) and np.ndim(targets) == 0):
        target_iter = None
    else:
        target_iter = iter(targets)
    for chunk in image_iter:
        rows = chunk.shape[0]
        target = targets
        if target_iter is not None:
            target = np.asarray(list(islice(target_iter, rows)))
            if target.shape != (rows,):
                raise ValueError("explain_dataset: targets has fewer entries than images")
            target = _pad_rows(jnp.asarray(target), batch_size)
        chunk = _pad_rows(jnp.asarray(chunk), batch_size)
        result = explain_sharded(method, model, chunk, target, devices=devices, **options)
        yield _cut(result, rows, batch_size)


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk
