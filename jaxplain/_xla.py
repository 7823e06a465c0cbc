"""XLA CPU settings jaxplain applies before the backend starts: correct results, and both cores busy.

jaxlib 0.10 hands convolutions, dots and some elementwise fusions to YNNPACK on the CPU.
jaxplain keeps YNNPACK for dots only (``--xla_cpu_experimental_ynn_fusion_type=individual_dot,dot``):

- **Correctness.** Its ``eltwise`` and ``reduce`` library fusions return garbage (values of
  1e18-1e34, changing from run to run) for a weighted sum over a vmapped axis whose terms do
  not depend on the mapped value, e.g. ``sum_k w_k * dF/dA`` at a layer whose gradient is
  input-independent (internal influence at ResNet's ``layer4``).
- **Threads.** Its convolutions with 64 output channels or fewer run on one thread whatever
  the batch (ResNet's stem and ``layer1``: a third of a ResNet-18 input gradient at 224 px),
  so XLA kept 1.5 of 2 cores busy. XLA's own (Eigen) convolutions use every core:
  ResNet-18's input gradient at batch 8 went from 8.5 to 11.4 images/s on 2 cores (1.5 to
  1.8 cores busy), batch 1 from 4.7 to 7.9, ResNet-50 at batch 8 from 4.1 to 5.0, and on one
  core they are no slower (7.2 against 6.9). YNNPACK's dots stay: they beat Eigen's on a
  ViT's matmuls and their gradients (``benchmarks/XLA_CPU_NOTES.md``).
- **Rounding.** Eigen's convolutions sum in another order than YNNPACK's (and oneDNN's):
  on their own they are closer to a float64 reference (2-5e-7 of the output's scale,
  against 1-2e-6). A max-pool window whose two largest values lie within a float32 ulp can
  then pick the other element than torch does, and the input gradient follows it; that is
  float32's conditioning, not a wrong kernel, and the parity tests compare such cases in
  float64.

The flag is a CPU one: GPU and TPU compilations never read it. It is added to ``XLA_FLAGS``
only where it is known to exist (jaxlib 0.10.x), only if the user has not set it, and only
if ``JAXPLAIN_XLA_FLAGS`` is not ``0``. It must be in place before JAX runs its first
computation.
"""

from __future__ import annotations

import os
import warnings

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
SAFE_YNN_FUSIONS = "individual_dot,dot"
AFFECTED_JAXLIB = ("0.10.",)


def _jaxlib_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("jaxlib")
    except Exception:
        return None


def configure() -> bool:
    """Add jaxplain's YNNPACK fusion set (dots only) to ``XLA_FLAGS``; True if jaxplain set it now."""
    version = _jaxlib_version()
    flags = os.environ.get("XLA_FLAGS", "")
    if os.environ.get("JAXPLAIN_XLA_FLAGS") == "0" or YNN_FLAG in flags:
        return False
    if version is None or not version.startswith(AFFECTED_JAXLIB):
        return False
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        warnings.warn(
            f"jaxlib {version} miscompiles some YNNPACK fusions on CPU (and runs its small convolutions on one "
            f"thread) and JAX is already running, so jaxplain could not restrict them: set "
            f"XLA_FLAGS={YNN_FLAG}={SAFE_YNN_FUSIONS} before the first computation (or import jaxplain first)",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {YNN_FLAG}={SAFE_YNN_FUSIONS}".strip()
    return True
