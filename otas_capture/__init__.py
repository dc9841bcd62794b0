"""otas-capture: report every API call an AI agent makes to a WSGI backend to OTAS.

.. code-block:: python

    from otas_capture import OtasMiddleware

    app = OtasMiddleware(app)  # reads OTAS_SDK_KEY and friends from the environment

See :class:`OtasMiddleware` for the options and :mod:`otas_capture.flask` for Flask.
"""

__version__ = "0.1.0"

from .config import ConfigError  # noqa: E402
from .middleware import OtasMiddleware, annotate  # noqa: E402

__all__ = ["OtasMiddleware", "ConfigError", "annotate", "__version__"]
