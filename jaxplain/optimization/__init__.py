"""The optimisation family: feature visualisation (Lucent), Deep Dream and layer visualisation.

>>> from jaxplain.optimization import objectives, param, render_vis
>>> images = render_vis(model, [objectives.channel("features.8", n) for n in range(64)],
...                     key=jax.random.PRNGKey(0), param_f=param.image(64))  # doctest: +SKIP
"""

from jaxplain.optimization import objectives, param, transforms
from jaxplain.optimization.classic import deep_dream, layer_visualization
from jaxplain.optimization.render import render_vis
from jaxplain.optimization.pil import to_pil

__all__ = ["deep_dream", "layer_visualization", "objectives", "param", "render_vis", "to_pil", "transforms"]
