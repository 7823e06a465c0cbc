"""Releasing what jaxplain keeps between calls: traced programs, their relevance blocks, compiled code."""

from __future__ import annotations

import jax


def clear_caches() -> None:
    """Forget jaxplain's traced programs and relevance blocks, and JAX's compiled executables.

    jaxplain traces a model once per structure and input shape and keeps the graph (up to
    256 of them) so later calls skip the Python trace; JAX keeps every compiled program.
    A long process that explains many different models (a notebook, a test suite) can call
    this to return that memory; the next call of each method traces and compiles again.

    Returns:
        None.

    Example:
        >>> import jax.numpy as jnp, jaxplain as jx
        >>> model = jx.as_model(lambda x: x @ jnp.eye(3))
        >>> _ = jx.saliency(model, jnp.ones((1, 3)), 0)
        >>> jx.clear_caches()
        >>> jx.saliency(model, jnp.ones((1, 3)), 0).shape
        (1, 3)
    """
    from jaxplain import program
    from jaxplain.attribution import _common

    program._GRAPHS.clear()
    program._BLOCKS.clear()
    _common._TRACE_CACHE.clear()
    jax.clear_caches()
