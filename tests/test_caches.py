"""``jx.clear_caches`` empties jaxplain's program caches and the next call gives the same answer."""

from __future__ import annotations

import jax
import numpy as np

import jaxplain as jx
from jaxplain import program
from jaxplain.attribution import _common
from jaxplain.model import init_model
from jaxplain.nets import build


def test_clear_caches_empties_the_caches_and_keeps_the_answer():
    model = init_model(build("demo", num_classes=3), (1, 16, 16, 3), jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 16, 3))
    before = np.asarray(jx.guided_backprop(model, x, 1))
    program.blocks_of(model, x)
    assert program._GRAPHS and program._BLOCKS and _common._TRACE_CACHE
    jx.clear_caches()
    assert not program._GRAPHS and not program._BLOCKS and not _common._TRACE_CACHE
    np.testing.assert_array_equal(np.asarray(jx.guided_backprop(model, x, 1)), before)
