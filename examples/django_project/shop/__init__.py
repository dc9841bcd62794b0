"""A small Django JSON API instrumented with otas-capture: one line in settings.MIDDLEWARE."""
