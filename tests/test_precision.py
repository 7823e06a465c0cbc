"""bf16 on request: ``model.astype(jnp.bfloat16)`` with bf16 inputs runs a method in bf16, with a bounded error.

The reference is the same method in float32 on the shipped demo model (trained weights) and
its eight sample images. The bounds are those measured (README, "Precision") with a margin.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxplain as jx
from jaxplain import demo, recipes

BOUNDS = {  # method: (max relative L2 error, min mean Spearman of |map|)
    "integrated_gradients": (0.25, 0.95),
    "lrp": (0.15, 0.97),
    "gradcam": (0.03, 0.99),
}


@pytest.fixture(scope="module")
def setting():
    model = demo.load_model()
    samples = demo.load_samples()
    inputs = jnp.asarray(demo.normalise(samples.images))
    return model, inputs, jnp.asarray(samples.labels, jnp.int32), recipes.default_layer(model, inputs[:1])


def test_astype_casts_only_floating_variables(setting):
    model, *_ = setting
    low = model.astype(jnp.bfloat16)
    dtypes = {leaf.dtype for leaf in jax.tree_util.tree_leaves(low.variables)}
    assert dtypes == {jnp.dtype(jnp.bfloat16)}
    assert low.module is model.module and low.mean == model.mean


@pytest.mark.parametrize("method", sorted(BOUNDS))
def test_bf16_runs_in_bf16_within_the_measured_error(setting, method):
    model, inputs, target, layer = setting
    recipe = recipes.RECIPES[method]
    key = jax.random.PRNGKey(0)
    reference = np.asarray(recipe.run(model, inputs, target, key, layer), np.float32)
    low = recipe.run(model.astype(jnp.bfloat16), inputs.astype(jnp.bfloat16), target, key, layer)
    assert low.dtype == jnp.bfloat16
    low = np.asarray(low, np.float32)
    assert np.isfinite(low).all()
    error = np.linalg.norm(low - reference) / np.linalg.norm(reference)
    ranks = jx.metrics.spearman(np.abs(low).sum(-1).reshape(len(low), -1),
                                np.abs(reference).sum(-1).reshape(len(low), -1))
    max_error, min_rank = BOUNDS[method]
    assert 0 < error < max_error, error
    assert float(np.mean(ranks)) > min_rank
