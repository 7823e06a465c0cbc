"""Test package. jaxplain is imported first so its XLA settings apply before any test computes (jaxplain/_xla.py)."""

import jaxplain  # noqa: F401
