"""The JAX linear surrogates against scikit-learn, which LIME and Captum fit with.

Random weighted problems, over- and underdetermined; tolerance 1e-4 of the largest
coefficient (float32 here, float64 in sklearn). Lasso: sklearn run to a tight
tolerance, so both sides are at the optimum.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import Lasso, LinearRegression, Ridge
from sklearn.metrics import r2_score

from jaxplain.attribution import linear


def problem(samples: int, features: int, seed: int):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 2, size=(samples, features)).astype(np.float32)
    y = (X @ rng.normal(size=features) + 0.1 * rng.normal(size=samples)).astype(np.float32)
    w = rng.random(samples).astype(np.float32) + 0.1
    return X, y, w


def close(ours, theirs, scale):
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-4 * max(scale, 1.0))


@pytest.mark.parametrize("samples,features", [(60, 8), (10, 16)])
@pytest.mark.parametrize("alpha", [0.01, 1.0])
def test_ridge(samples, features, alpha):
    X, y, w = problem(samples, features, 0)
    theirs = Ridge(alpha=alpha).fit(X, y, sample_weight=w)
    ours = linear.ridge(jnp.asarray(X), jnp.asarray(y), jnp.asarray(w), alpha)
    close(ours.coef, theirs.coef_, np.abs(theirs.coef_).max())
    close(ours.intercept, theirs.intercept_, np.abs(theirs.coef_).max())
    np.testing.assert_allclose(linear.weighted_r2(ours, X, y, w), r2_score(y, theirs.predict(X), sample_weight=w), atol=1e-4)


def test_ridge_inactive_columns_are_dropped():
    X, y, w = problem(40, 6, 1)
    active = np.array([True, False, True, True, False, True])
    theirs = Ridge(alpha=1.0).fit(X[:, active], y, sample_weight=w)
    ours = linear.ridge(jnp.asarray(X), jnp.asarray(y), jnp.asarray(w), 1.0, jnp.asarray(active))
    close(ours.coef[active], theirs.coef_, np.abs(theirs.coef_).max())
    assert np.all(np.asarray(ours.coef)[~active] == 0)


@pytest.mark.parametrize("samples,features", [(60, 8), (12, 20)])
def test_lasso(samples, features):
    X, y, w = problem(samples, features, 2)
    theirs = Lasso(alpha=0.01, tol=1e-10, max_iter=100000).fit(X, y, sample_weight=w)
    ours = linear.lasso(jnp.asarray(X), jnp.asarray(y), jnp.asarray(w), 0.01, max_sweeps=5000, tol=1e-7)
    close(ours.coef, theirs.coef_, np.abs(theirs.coef_).max())
    close(ours.intercept, theirs.intercept_, np.abs(theirs.coef_).max())


@pytest.mark.parametrize("samples,features", [(60, 8), (12, 20)])
def test_least_squares_is_sklearns_minimum_norm_fit(samples, features):
    X, y, w = problem(samples, features, 3)
    theirs = LinearRegression().fit(X, y, sample_weight=w)
    ours = linear.least_squares(jnp.asarray(X), jnp.asarray(y), jnp.asarray(w))
    close(ours.coef, theirs.coef_, np.abs(theirs.coef_).max())
    close(ours.intercept, theirs.intercept_, np.abs(theirs.coef_).max())


def test_solvers_vmap_over_problems():
    problems = [problem(30, 5, seed) for seed in range(3)]
    X, y, w = (jnp.stack(parts) for parts in zip(*problems))
    batched = jax.vmap(lambda a, b, c: linear.lasso(a, b, c, 0.01))(X, y, w)
    for i, (Xi, yi, wi) in enumerate(problems):
        np.testing.assert_allclose(batched.coef[i], linear.lasso(Xi, yi, wi, 0.01).coef, rtol=1e-5, atol=1e-6)
