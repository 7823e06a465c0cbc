"""Doctests: ``python -m pytest`` runs every docstring example of the ``jaxplain`` package
(``--doctest-modules`` and ``testpaths`` in ``pyproject.toml``), on the shipped demo model.

The modules below hold illustrative examples that name objects they do not define
(``model``, ``x``); they are left out until their examples run as written.
"""

collect_ignore = [
    "jaxplain/attribution/cam_family.py",
    "jaxplain/nets/prototype.py",
    "jaxplain/road.py",
]
