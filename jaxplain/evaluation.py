"""``jaxplain evaluate``: every method scored against the demo set's ground-truth object masks.

The shipped demo model explains freshly generated demo images (``make_dataset`` with
the given seed; the model was trained on other seeds) for their true class. Per method,
averaged over the images:

* ``pointing``: pointing-game hit rate (Zhang et al. 2016), the tolerance scaled from
  the paper's 15 pixels at 224 to the image size;
* ``energy``: share of positive attribution inside the object (Wang et al. 2020);
* ``deletion`` (lower is better) and ``insertion`` (higher) AUCs (Petsiuk et al. 2018),
  32 steps, softmax of the true class;
* ``completeness``: ``mean |sum attr - (F(x) - F(0))| / mean |F(x) - F(0)|`` for the
  methods that claim to add up (``Recipe.additive``: 0 for a complete method; ``-`` for
  the others, where it has no meaning);
* ``sanity``: Spearman rank correlation between the map of the trained model and the map
  after every layer was randomised (Adebayo et al. 2018, cascading to the input): near 0
  means the explanation depends on what the model learnt; near 1 means it does not.
  Images whose randomised map is constant (no ranks to correlate) are left out, and
  ``-`` is shown when every one is.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import numpy as np

from jaxplain import demo, metrics, recipes
from jaxplain.model import Model
from jaxplain.typing import Array

COLUMNS = ("pointing", "energy", "deletion", "insertion", "completeness", "sanity")
SANITY_IMAGES = 8


def _recipe_method(name: str, layer: str, key: Array):
    recipe = recipes.RECIPES[name]

    def method(model: Model, inputs: Array, target: Array) -> Array:
        return recipe.run(model, inputs, target, key, layer)

    return method


Progress = Callable[[int, str], None]
"""``progress(images done since the last call, note)``, as ``jaxplain.cli.Progress.advance`` takes it."""


def _quiet(count: int, note: str) -> None:
    """The default progress report: none."""


def _in_batches(method, model: Model, inputs: np.ndarray, target: np.ndarray, batch_size: int,
                progress: Progress, name: str) -> np.ndarray:
    maps = []
    for start in range(0, len(inputs), batch_size):
        maps.append(np.asarray(method(model, inputs[start:start + batch_size], target[start:start + batch_size])))
        done = min(start + batch_size, len(inputs))
        progress(done - start, f"{name}: explained {done}/{len(inputs)}")
    return np.concatenate(maps)


def score_method(name: str, model: Model, images: np.ndarray, labels: np.ndarray, masks: np.ndarray, *,
                 key: Array, sanity: bool = True, batch_size: int = 16,
                 progress: Progress = _quiet) -> dict[str, float | None]:
    """The metrics of ``COLUMNS`` for recipe ``name`` on normalised ``images`` explained for ``labels``.

    ``progress`` is told of every batch explained and of the scoring that follows.

    Args:
        name: a recipe of ``jaxplain.recipes.RECIPES``.
        model: the model to explain (its last spatial layer is the CAM layer).
        images: ``[N, H, W, C]`` normalised images.
        labels: ``[N]`` classes to explain.
        masks: ``[N, H, W]`` boolean object masks.
        key: PRNG key of the stochastic recipes and of the randomisation.
        sanity: compute the ``sanity`` column (explains the randomised model too).
        batch_size: images explained per call.
        progress: ``progress(images done, note)``.

    Returns:
        ``{column: value}`` for every column of ``COLUMNS``; None where a metric does not apply.

    Example:
        >>> import jax
        >>> from jaxplain import demo
        >>> data = demo.make_dataset(2, seed=1)
        >>> row = score_method("random", demo.load_model(), demo.normalise(data.images), data.labels, data.masks,
        ...                    key=jax.random.PRNGKey(0), sanity=False)
        >>> sorted(row) == sorted(COLUMNS), row["completeness"]
        (True, None)
    """
    layer = recipes.default_layer(model, images[:1])
    method = _recipe_method(name, layer, key)
    maps = _in_batches(method, model, images, labels, batch_size, progress, name)
    progress(0, f"{name}: deletion and insertion curves")
    tolerance = max(round(15 * images.shape[1] / 224), 1)
    row: dict[str, float | None] = {
        "pointing": float(np.mean(metrics.pointing_game(maps, masks, tolerance=tolerance))),
        "energy": float(np.mean(metrics.mask_energy(maps, masks))),
        "deletion": float(np.mean(metrics.deletion_auc(model, images, maps, labels, steps=32, batch_size=8))),
        "insertion": float(np.mean(metrics.insertion_auc(model, images, maps, labels, steps=32, batch_size=8))),
        "completeness": None,
        "sanity": None,
    }
    if recipes.RECIPES[name].additive:
        gap = np.asarray(metrics.completeness(model, maps, images, labels))
        change = np.asarray(metrics.completeness(model, np.zeros_like(maps), images, labels))
        row["completeness"] = float(np.mean(gap) / max(np.mean(change), 1e-12))
    if sanity:
        progress(0, f"{name}: maps of the randomised model")
        subset = slice(0, min(SANITY_IMAGES, len(images)))
        steps = metrics.randomisation_sanity(method, model, images[subset], labels[subset],
                                             key=jax.random.fold_in(key, 1), order="cascading")
        final = np.asarray(list(steps.values())[-1])
        row["sanity"] = float(np.nanmean(final)) if np.isfinite(final).any() else None
    return row


def evaluate(methods: Sequence[str], *, num_images: int = 32, seed: int = 1, sanity: bool = True,
             key: Array | None = None, progress: Progress = _quiet) -> dict[str, dict[str, float | None]]:
    """``{method: {column: value}}`` for the shipped demo model on ``num_images`` generated demo images.

    ``progress(count, note)`` is called as each method explains each batch of images
    (``count`` images more, ``len(methods) * num_images`` in all) and as it scores them.

    Args:
        methods: recipe names (``jaxplain.recipes.RECIPES``).
        num_images: demo images to generate and score on.
        seed: the seed of ``demo.make_dataset``.
        sanity: compute the ``sanity`` column.
        key: PRNG key of the stochastic recipes (default ``PRNGKey(0)``).
        progress: ``progress(images done, note)``.

    Returns:
        ``{method: {column: value}}``, in the order of ``methods``.

    Example:
        >>> rows = evaluate(["random"], num_images=2, sanity=False)
        >>> list(rows), 0 <= rows["random"]["pointing"] <= 1
        (['random'], True)
    """
    model = demo.load_model()
    size = demo.metadata()["image_size"]
    data = demo.make_dataset(num_images, seed=seed, size=size)
    images = demo.normalise(data.images)
    labels = data.labels.astype(np.int32)
    key = jax.random.PRNGKey(0) if key is None else key
    return {name: score_method(name, model, images, labels, data.masks, key=key, sanity=sanity, progress=progress)
            for name in methods}


def format_table(rows: dict[str, dict[str, float | None]]) -> str:
    """The rows as an aligned text table (``-`` where a metric does not apply).

    Args:
        rows: ``{method: {column: value or None}}`` as :func:`evaluate` returns.

    Returns:
        The table, a header line, one line per method, and a line on how to read it.

    Example:
        >>> row = {"pointing": 1.0, "energy": 0.5, "deletion": 0.2, "insertion": 0.9, "completeness": None,
        ...        "sanity": 0.1}
        >>> print(format_table({"saliency": row}).splitlines()[1])
        saliency         1.000         0.500         0.200         0.900             -         0.100
    """
    width = max(len("method"), *(len(name) for name in rows))
    lines = [f"{'method':<{width}}  " + "  ".join(f"{column:>12}" for column in COLUMNS)]
    for name, row in rows.items():
        cells = ("-" if row[c] is None else f"{row[c]:.3f}" for c in COLUMNS)
        lines.append(f"{name:<{width}}  " + "  ".join(f"{cell:>12}" for cell in cells))
    lines.append("pointing, energy, insertion: higher is better; deletion, completeness, sanity: lower is better")
    return "\n".join(lines)

