"""otas-capture: report every API call an AI agent makes to a WSGI backend to OTAS.

.. code-block:: python

    from otas_capture import OtasMiddleware

    app = OtasMiddleware(app)  # reads OTAS_SDK_KEY and friends from the environment

See :class:`OtasMiddleware` for the options and :mod:`otas_capture.flask` for Flask.
"""

from ._version import __version__
from .capture.annotate import annotate
from .capture.middleware import OtasMiddleware
from .config import ConfigError

__all__ = ["OtasMiddleware", "ConfigError", "annotate", "__version__"]
