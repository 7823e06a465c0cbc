"""Type aliases shared across jaxplain."""

from typing import Callable, Union

import jax
import numpy as np

Array = jax.Array
ArrayLike = Union[jax.Array, np.ndarray]
Target = Union[int, ArrayLike, None]
Forward = Callable[[jax.Array], jax.Array]
