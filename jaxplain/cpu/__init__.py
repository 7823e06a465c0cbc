"""XLA CPU workarounds, in one place, so that method code reads as its paper's formula.

Each keeps every value and only changes how XLA CPU computes it:

- :mod:`jaxplain.cpu.small_conv`: a convolution over a map smaller than its kernel, and every
  float64 convolution, as one matrix product over gathered patches (XLA CPU runs those
  convolutions in a slow generic loop); the program engine still sees a convolution there.
  CPU backend only.
- :mod:`jaxplain.cpu.fast_conv`: inside a ``lax.scan`` body, a convolution's input gradient
  as an ordinary forward-layout convolution (XLA CPU loses its fast kernels there). A node
  rule of the program engine, CPU backend only.
- :mod:`jaxplain.cpu.patch_conv`: a patch-embedding convolution (windows tiling the input) as
  one matrix product in the relevance rules' linear blocks (XLA CPU's input gradient of it, a
  heavily dilated convolution, runs at a few GFLOP/s). CPU backend only.
- :mod:`jaxplain.cpu.max_pool`: max pooling whose gradient goes to each window's first
  maximum without select-and-scatter. Kept on every backend: the first maximum is torch's
  semantics, not only a speed-up.

The backend is read when a function is traced (``jax.default_backend()``), so a program
compiled for a GPU or TPU never contains them. The host initialisers of the zoo's layers
(``jaxplain.nets.layers.host_uniform``) stay on every backend too: one key gives the same
weights everywhere. ``jaxplain._xla`` sets the CPU-only XLA flag.
"""

from __future__ import annotations

import jax


def on_cpu() -> bool:
    """Whether programs traced now compile for the CPU backend (where the workarounds apply).

    Returns:
        ``jax.default_backend() == "cpu"``.

    Example:
        >>> import jax
        >>> on_cpu() == (jax.default_backend() == "cpu")
        True
    """
    return jax.default_backend() == "cpu"
