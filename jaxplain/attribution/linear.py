"""Weighted linear surrogates solved in JAX: ridge, lasso, least squares, weighted R^2.

Each solver fits one problem ``X [S, M], y [S], w [S]``, with an intercept and
scikit-learn's conventions for sample weights (sklearn/linear_model: ``Ridge``,
``Lasso``, ``LinearRegression``); ``jax.vmap`` batches them over images and labels.
``active [M]`` marks the columns in play: inactive ones get a zero coefficient and do
not influence the others (used for padded superpixels and feature selection).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxplain.typing import Array


class LinearFit(NamedTuple):
    """Coefficients ``[M]`` and intercept of a fitted linear model.

    Attributes:
        coef: ``[M]`` coefficients.
        intercept: the scalar intercept.

    Example:
        >>> import jax.numpy as jnp
        >>> LinearFit(coef=jnp.array([2.0]), intercept=jnp.array(1.0)).coef.shape
        (1,)
    """

    coef: Array
    intercept: Array


def _centred(X: Array, y: Array, w: Array, active: Array) -> tuple[Array, Array, Array, Array]:
    """Weighted means and the centred data (sklearn's ``_preprocess_data``)."""
    X = jnp.where(active[None, :], X, 0.0)
    total = jnp.sum(w)
    X_mean = w @ X / total
    y_mean = w @ y / total
    return X - X_mean, y - y_mean, X_mean, y_mean


def ridge(X: Array, y: Array, w: Array, alpha: float, active: Array | None = None) -> LinearFit:
    """``argmin sum_i w_i (y_i - x_i b - c)^2 + alpha |b|^2`` (sklearn ``Ridge``, ``fit_intercept=True``).

    ``alpha=0`` is weighted least squares; inactive columns are pinned to zero.

    Args:
        X: ``[S, M]`` samples.
        y: ``[S]`` targets.
        w: ``[S]`` sample weights.
        alpha: the L2 penalty.
        active: ``[M]`` booleans, the columns the fit may use (None: all).

    Returns:
        The :class:`LinearFit`.

    Example:
        >>> import jax.numpy as jnp
        >>> X = jnp.array([[0.0, 1.0], [1.0, 0.0], [2.0, 1.0], [3.0, 0.0]])
        >>> y = 2 * X[:, 0] - X[:, 1] + 1  # coefficients (2, -1), intercept 1
        >>> w = jnp.ones(4)
        >>> fit = ridge(X, y, w, alpha=0.0)
        >>> [round(float(c), 4) for c in fit.coef], round(float(fit.intercept), 4)
        ([2.0, -1.0], 1.0)
    """
    active = jnp.ones(X.shape[1], bool) if active is None else active
    Xc, yc, X_mean, y_mean = _centred(X, y, w, active)
    gram = (Xc * w[:, None]).T @ Xc + jnp.diag(jnp.where(active, alpha, 1.0))
    coef = jnp.linalg.solve(gram, (Xc * w[:, None]).T @ yc)
    coef = jnp.where(active, coef, 0.0)
    return LinearFit(coef, y_mean - X_mean @ coef)


def least_squares(X: Array, y: Array, w: Array) -> LinearFit:
    """Minimum-norm weighted least squares with an intercept (sklearn ``LinearRegression``:
    weighted centring, rows scaled by ``sqrt(w)``, an SVD least-squares solve).

    Args:
        X: ``[S, M]`` samples.
        y: ``[S]`` targets.
        w: ``[S]`` sample weights.

    Returns:
        The :class:`LinearFit` (of least norm when the samples do not determine it).

    Example:
        >>> import jax.numpy as jnp
        >>> X = jnp.array([[0.0, 1.0], [1.0, 0.0], [2.0, 1.0], [3.0, 0.0]])
        >>> y = 2 * X[:, 0] - X[:, 1] + 1  # coefficients (2, -1), intercept 1
        >>> w = jnp.ones(4)
        >>> [round(float(c), 4) for c in least_squares(X, y, w).coef]
        [2.0, -1.0]
    """
    Xc, yc, X_mean, y_mean = _centred(X, y, w, jnp.ones(X.shape[1], bool))
    root = jnp.sqrt(w)
    coef = jnp.linalg.lstsq(Xc * root[:, None], yc * root)[0]
    return LinearFit(coef, y_mean - X_mean @ coef)


def lasso(
    X: Array, y: Array, w: Array, alpha: float, *, max_sweeps: int = 1000, tol: float = 1e-6
) -> LinearFit:
    """``argmin 1/(2 sum w) sum_i w_i (y_i - x_i b - c)^2 + alpha |b|_1`` (sklearn ``Lasso``).

    Cyclic coordinate descent, as scikit-learn's solver, until no coefficient moves by
    more than ``tol`` times the largest one in a sweep (or ``max_sweeps``). sklearn
    rescales the weights to sum to the number of samples, which gives this objective.

    Args:
        X: ``[S, M]`` samples.
        y: ``[S]`` targets.
        w: ``[S]`` sample weights.
        alpha: the L1 penalty.
        max_sweeps: most sweeps over the coefficients.
        tol: the stopping tolerance (relative to the largest coefficient).

    Returns:
        The :class:`LinearFit`.

    Example:
        >>> import jax.numpy as jnp
        >>> X = jnp.array([[0.0, 1.0], [1.0, 0.0], [2.0, 1.0], [3.0, 0.0]])
        >>> y = 2 * X[:, 0] - X[:, 1] + 1  # coefficients (2, -1), intercept 1
        >>> w = jnp.ones(4)
        >>> [round(float(c), 2) for c in lasso(X, y, w, alpha=0.01).coef]  # shrunk a little towards 0
        [2.0, -0.96]
    """
    Xc, yc, X_mean, y_mean = _centred(X, y, w, jnp.ones(X.shape[1], bool))
    scale = jnp.sqrt(w / jnp.sum(w))
    Xs, ys = Xc * scale[:, None], yc * scale
    column_norms = jnp.sum(Xs * Xs, axis=0)
    features = X.shape[1]

    def update(j, state):
        coef, residual, moved = state
        column = Xs[:, j]
        rho = column @ residual + column_norms[j] * coef[j]
        new = jnp.sign(rho) * jnp.maximum(jnp.abs(rho) - alpha, 0.0) / jnp.where(column_norms[j] > 0, column_norms[j], 1.0)
        new = jnp.where(column_norms[j] > 0, new, 0.0)
        residual = residual - column * (new - coef[j])
        return coef.at[j].set(new), residual, jnp.maximum(moved, jnp.abs(new - coef[j]))

    def sweep(state):
        coef, residual, _, count = state
        coef, residual, moved = jax.lax.fori_loop(0, features, update, (coef, residual, jnp.zeros((), X.dtype)))
        return coef, residual, moved, count + 1

    def unfinished(state):
        coef, _, moved, count = state
        return (count < max_sweeps) & (moved > tol * jnp.maximum(jnp.max(jnp.abs(coef)), 1e-12))

    start = (jnp.zeros(features, X.dtype), ys, jnp.asarray(jnp.inf, X.dtype), jnp.zeros((), jnp.int32))
    coef = jax.lax.while_loop(unfinished, sweep, start)[0]
    return LinearFit(coef, y_mean - X_mean @ coef)


def weighted_r2(fit: LinearFit, X: Array, y: Array, w: Array) -> Array:
    """``1 - sum w (y - y_hat)^2 / sum w (y - mean_w y)^2`` (sklearn ``r2_score`` with weights).

    Args:
        fit: the fitted model.
        X: ``[S, M]`` samples.
        y: ``[S]`` targets.
        w: ``[S]`` sample weights.

    Returns:
        The scalar weighted R^2 (1 for a perfect fit).

    Example:
        >>> import jax.numpy as jnp
        >>> X = jnp.array([[0.0, 1.0], [1.0, 0.0], [2.0, 1.0], [3.0, 0.0]])
        >>> y = 2 * X[:, 0] - X[:, 1] + 1  # coefficients (2, -1), intercept 1
        >>> w = jnp.ones(4)
        >>> round(float(weighted_r2(ridge(X, y, w, alpha=0.0), X, y, w)), 4)
        1.0
    """
    predicted = X @ fit.coef + fit.intercept
    mean = w @ y / jnp.sum(w)
    return 1.0 - (w @ (y - predicted) ** 2) / (w @ (y - mean) ** 2)
