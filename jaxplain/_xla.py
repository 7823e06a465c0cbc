"""XLA settings jaxplain needs for correct results, applied before the backend starts.

jaxlib 0.10 on CPU miscompiles some YNNPACK fusions: its ``eltwise`` and ``reduce``
library fusions return garbage (values of 1e18-1e34, changing from run to run) for a
weighted sum over a vmapped axis whose terms do not depend on the mapped value, e.g.
``sum_k w_k * dF/dA`` at a layer whose gradient is input-independent (internal
influence at ResNet's ``layer4``). Restricting YNNPACK to convolutions and dots gives
correct results. The setting is added to ``XLA_FLAGS`` only where the flag is known to
exist (jaxlib 0.10.x), only if the user has not set it, and only if ``JAXPLAIN_XLA_FLAGS``
is not ``0``. It must be in place before JAX runs its first computation.
"""

from __future__ import annotations

import os
import warnings

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
SAFE_YNN_FUSIONS = "individual_convolution,individual_dot,dot"
AFFECTED_JAXLIB = ("0.10.",)


def _jaxlib_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("jaxlib")
    except Exception:
        return None


def configure() -> bool:
    """Add the safe YNNPACK fusion set to ``XLA_FLAGS``; True if jaxplain set it now."""
    version = _jaxlib_version()
    flags = os.environ.get("XLA_FLAGS", "")
    if os.environ.get("JAXPLAIN_XLA_FLAGS") == "0" or YNN_FLAG in flags:
        return False
    if version is None or not version.startswith(AFFECTED_JAXLIB):
        return False
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        warnings.warn(
            f"jaxlib {version} miscompiles some YNNPACK fusions on CPU and JAX is already running, so jaxplain "
            f"could not restrict them: set XLA_FLAGS={YNN_FLAG}={SAFE_YNN_FUSIONS} before the first computation "
            "(or import jaxplain first)",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {YNN_FLAG}={SAFE_YNN_FUSIONS}".strip()
    return True
