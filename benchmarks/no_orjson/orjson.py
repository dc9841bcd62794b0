"""Put first on PYTHONPATH by ``run.py --no-orjson``: the package then runs as it does
without the ``fast`` extra (``otas_capture.event.jsoncodec`` falls back to ``json``)."""

raise ImportError("orjson blocked by benchmarks/run.py --no-orjson")
