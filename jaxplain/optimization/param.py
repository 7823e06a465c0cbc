"""Image parameterisations for feature visualisation (Lucent's ``lucent/optvis/param``).

A parameterisation is a hashable description (so ``jax.jit`` can take it as a static
argument) with two pure functions: ``init(key)`` draws the parameters and
``param(params)`` maps them to an NHWC image ``[batch, h, w, channels]``, in [0, 1]
by a sigmoid. The FFT parameterisation scales a random spectrum by ``1 / frequency``
(Lucid's ``fft_image``); colour decorrelation multiplies by the square root of
ImageNet's colour covariance (Lucid's ``_linear_decorrelate_color``).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from jaxplain.typing import Array

COLOR_CORRELATION_SVD_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], np.float32)
"""Square root of ImageNet's colour covariance (Lucid); its columns' largest norm is scaled to 1."""

FFT_MAGIC = 4.0
"""Lucid's divisor of the FFT image (a larger one saturates less)."""


def color_matrix() -> np.ndarray:
    """The decorrelation matrix normalised by its largest column norm."""
    return COLOR_CORRELATION_SVD_SQRT / np.max(np.linalg.norm(COLOR_CORRELATION_SVD_SQRT, axis=0))


def decorrelate_colors(images: Array) -> Array:
    """Map decorrelated colour coordinates to RGB on the last axis of NHWC ``images``."""
    return images @ jnp.asarray(color_matrix().T, images.dtype)


def rfft2d_freqs(h: int, w: int) -> np.ndarray:
    """Frequency magnitudes ``[h, w // 2 + 1]`` of a real 2-D FFT (one more column when ``w`` is odd)."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[: w // 2 + 1 + (w % 2)]
    return np.sqrt(fx * fx + fy * fy)


def spectrum_scale(h: int, w: int, decay_power: float = 1.0) -> np.ndarray:
    """``1 / max(f, 1 / max(h, w)) ** decay_power`` for every frequency ``[h, w // 2 + 1 (+1)]``."""
    return (1.0 / np.maximum(rfft2d_freqs(h, w), 1.0 / max(w, h)) ** decay_power).astype(np.float32)


def _inverse_dft_matrices(h: int, w: int) -> tuple[np.ndarray, ...]:
    """Real matrices of the orthonormal inverse real 2-D DFT of size ``(h, w)``.

    Rows: ``cos`` and ``sin`` of ``2 pi ky y / h`` over ``sqrt(h)``. Columns: the same
    over ``x`` with each frequency counted twice except 0 and ``w / 2`` (Hermitian
    symmetry), and a zero row for the extra column Lucent keeps when ``w`` is odd.
    """
    ky, y = np.meshgrid(np.arange(h), np.arange(h), indexing="ij")
    row_angle = 2 * np.pi * ky * y / h
    columns = rfft2d_freqs(h, w).shape[1]
    kx, x = np.meshgrid(np.arange(columns), np.arange(w), indexing="ij")
    weight = np.where((kx == 0) | (2 * kx == w), 1.0, 2.0) * (kx <= w // 2)
    col_angle = 2 * np.pi * kx * x / w
    matrices = (np.cos(row_angle) / np.sqrt(h), np.sin(row_angle) / np.sqrt(h))
    matrices += (weight * np.cos(col_angle) / np.sqrt(w), weight * np.sin(col_angle) / np.sqrt(w))
    return tuple(m.astype(np.float32) for m in matrices)


def fft_to_image(spectrum: Array, h: int, w: int, decay_power: float = 1.0) -> Array:
    """The spatial image ``[b, h, w, c]`` of a real/imaginary spectrum ``[b, h, w // 2 + 1 (+1), c, 2]``.

    The spectrum is scaled by :func:`spectrum_scale`, inverted with an orthonormal real
    FFT of size ``(h, w)`` (``irfftn(..., norm="ortho")``, computed as real matrix
    products, which XLA CPU compiles and runs faster than its FFT at these sizes) and
    divided by :data:`FFT_MAGIC`.
    """
    scale = jnp.asarray(spectrum_scale(h, w, decay_power))[None, :, :, None]
    real, imag = spectrum[..., 0] * scale, spectrum[..., 1] * scale
    cos_y, sin_y, cos_x, sin_x = (jnp.asarray(m, spectrum.dtype) for m in _inverse_dft_matrices(h, w))
    rows_real = jnp.einsum("ky,bkfc->byfc", cos_y, real) - jnp.einsum("ky,bkfc->byfc", sin_y, imag)
    rows_imag = jnp.einsum("ky,bkfc->byfc", sin_y, real) + jnp.einsum("ky,bkfc->byfc", cos_y, imag)
    image = jnp.einsum("fx,byfc->byxc", cos_x, rows_real) - jnp.einsum("fx,byfc->byxc", sin_x, rows_imag)
    return image / FFT_MAGIC


@dataclass(frozen=True)
class ImageParam:
    """An image ``[batch, h, w, channels]`` as parameters: pixels or a spectrum, optionally decorrelated.

    Attributes:
        w, h: image size.
        sd: standard deviation of the initial parameters (Lucent's 0.01).
        batch: images per objective.
        decorrelate: mix colours through :func:`decorrelate_colors` (only with three channels).
        fft: parameterise by the spectrum rather than the pixels.
        channels: image channels.
        decay_power: spectrum decay ``1 / f ** decay_power``.
    """

    w: int
    h: int
    sd: float = 0.01
    batch: int = 1
    decorrelate: bool = True
    fft: bool = True
    channels: int = 3
    decay_power: float = 1.0

    def __post_init__(self) -> None:
        for name in ("w", "h", "batch", "channels"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"image: {name} must be a positive int, got {value!r}")
        if self.decorrelate and self.channels != 3:
            raise ValueError(f"image: colour decorrelation needs 3 channels, got {self.channels}")

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """The NHWC shape of the image."""
        return (self.batch, self.h, self.w, self.channels)

    def init(self, key: Array) -> Array:
        """Random parameters, normal with standard deviation ``sd``."""
        if self.fft:
            shape = (self.batch, *rfft2d_freqs(self.h, self.w).shape, self.channels, 2)
        else:
            shape = self.shape
        return self.sd * jax.random.normal(key, shape, jnp.float32)

    def __call__(self, params: Array) -> Array:
        """The image in [0, 1] for ``params``."""
        image = fft_to_image(params, self.h, self.w, self.decay_power) if self.fft else params
        if self.decorrelate:
            image = decorrelate_colors(image)
        return jax.nn.sigmoid(image)


def image(
    w: int,
    h: int | None = None,
    sd: float | None = None,
    batch: int | None = None,
    decorrelate: bool = True,
    fft: bool = True,
    channels: int | None = None,
) -> ImageParam:
    """Lucent's ``param.image`` (lucent/optvis/param/images.py): an FFT, colour-decorrelated image by default.

    As in Lucent, asking for ``channels`` explicitly turns decorrelation off.

    Args:
        w: width in pixels.
        h: height (None: ``w``).
        sd: standard deviation of the random start (None: Lucent's 0.01).
        batch: images per objective (None: 1).
        decorrelate: work in Lucent's decorrelated colour space.
        fft: parameterise the image by its Fourier coefficients.
        channels: channel count (None: 3).

    Returns:
        The :class:`ImageParam`, for ``render_vis(param_f=...)``.

    Example:
        >>> parameterisation = image(32, batch=2)
        >>> parameterisation.h, parameterisation.batch, parameterisation.decorrelate
        (32, 2, True)
    """
    return ImageParam(
        w=w,
        h=h or w,
        sd=sd or 0.01,
        batch=batch or 1,
        decorrelate=decorrelate and not channels,
        fft=fft,
        channels=channels or 3,
    )
