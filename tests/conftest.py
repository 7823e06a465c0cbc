"""Fixtures shared across the test suite.

torch and torchvision are imported inside the fixtures, never at module level, so
tests that check ``import jaxplain`` leaves torch out of ``sys.modules`` stay honest.
"""

from __future__ import annotations

import ctypes
import gc
from typing import Any, Callable, Iterator

import pytest

CALIBRATION_SHAPE = (4, 3, 64, 64)
"""NCHW batch whose statistics become the BatchNorm running statistics (AlexNet needs >= 63 px)."""


@pytest.fixture(scope="session")
def seeded_torchvision_model() -> Callable[..., Any]:
    """Factory ``make(arch, seed=0, **kwargs)`` of randomised torchvision models in eval mode.

    ``arch`` is a ``torchvision.models`` constructor name and ``kwargs`` its arguments
    (``num_classes=10``). Weights come from torchvision's initialisation under
    ``torch.manual_seed(seed)`` (the global torch RNG is left as it was). Every
    ``BatchNorm2d`` is randomised: its running statistics are those of one seeded
    standard-normal batch of :data:`CALIBRATION_SHAPE` (so activations keep a sane
    scale through deep residual nets), its weight is drawn from U(0.5, 1.5) and its
    bias from U(-0.2, 0.2). Same ``arch``, ``seed`` and ``kwargs``, same model.
    """
    import torch
    import torchvision

    def make(arch: str, seed: int = 0, **kwargs: Any) -> torch.nn.Module:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = getattr(torchvision.models, arch)(**kwargs)
            norms = [module for module in model.modules() if isinstance(module, torch.nn.BatchNorm2d)]
            for norm in norms:
                norm.reset_running_stats()
                norm.momentum = None
            with torch.no_grad():
                model.train()(torch.randn(CALIBRATION_SHAPE))
                for norm in norms:
                    norm.momentum = 0.1
                    norm.weight.uniform_(0.5, 1.5)
                    norm.bias.uniform_(-0.2, 0.2)
        return model.eval()

    return make


@pytest.fixture(scope="module", autouse=True)
def release_memory_between_modules() -> Iterator[None]:
    """After each test module: drop JAX's compiled programs and jaxplain's traced graphs, then free the heap.

    Each xdist worker runs hundreds of modules in one process; without this its resident set
    grows with every model compiled (to 9 GB on 2 workers of a 24 GB machine).
    """
    yield
    import jaxplain

    jaxplain.clear_caches()
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
