"""Settings of the example project. The otas-capture part is MIDDLEWARE's first line and OTAS.

The SDK key and the OTAS URLs come from the environment (``OTAS_SDK_KEY``,
``OTAS_BRAIN_URL``, ``OTAS_UASAM_URL``), so the same project ships to the local collector
or to OTAS depending only on where it runs. Without ``OTAS_SDK_KEY`` it runs as usual and
ships nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = ["shop"]

MIDDLEWARE = [
    # First, so that it measures all of Django's work and sees every response.
    "otas_capture.django.OtasCaptureMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "shop.auth.BearerTokenMiddleware",
]

# otas-capture: Django-only and per-project options here; the key and URLs come from the
# environment. Any OTAS_* environment variable works as a key here too (lower or upper case).
OTAS = {
    "capture_user": True,  # the authenticated user's id goes into each event's metadata
    "skip_paths": ["/health/"],
}

ROOT_URLCONF = "shop.urls"
WSGI_APPLICATION = "shop.wsgi.application"
DATABASES: dict[str, dict[str, str]] = {}  # the example keeps its items in memory
USE_TZ = True

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]

# See what otas-capture does (start-up, losses, misuse) on the console.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"otas_capture": {"handlers": ["console"], "level": "INFO"}},
}
