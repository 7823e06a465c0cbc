"""Doctests: ``python -m pytest`` runs every docstring example of the ``jaxplain`` package
(``--doctest-modules`` and ``testpaths`` in ``pyproject.toml``), on the shipped demo model.
Every public module's examples run as written; none is left out.
"""
