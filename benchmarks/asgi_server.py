"""A FastAPI endpoint under uvicorn, driven over loopback: bare, behind
OtasASGIMiddleware, and behind OpenTelemetry's ASGI middleware.

    python benchmarks/asgi_server.py                 # about two minutes
    python benchmarks/asgi_server.py --rounds 2 --seconds 3

The app of ``asgi_loop.py`` (1 KB of JSON in and out, an agent session token on every
request) is served by ``uvicorn --http h11`` in a process of its own per variant and
round, and loaded with ``wrk -t1 -c8`` (Debian's ``wrk``) for a few seconds. The table
shows the median over rounds of requests per second and of wrk's latency percentiles;
after each load the run waits until the collector (otas-capture) or the span sink
(OpenTelemetry) has received an event for every request wrk completed, and says how
long that took.

Run with ``--serve VARIANT`` by uvicorn itself (through ``application`` below).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import apps  # noqa: E402
import asgi_loop  # noqa: E402

VARIANTS = ("bare", "otas", "otel")
TOKEN_HEADER = "X-OTAS-AGENT-SESSION-TOKEN"


def _application() -> Any:
    """The variant named by ASGI_BENCH_VARIANT, for uvicorn (None outside a benchmark)."""
    variant = os.environ.get("ASGI_BENCH_VARIANT")
    if variant is None:
        return None
    app = asgi_loop.make_app(
        variant, os.environ["ASGI_BENCH_COLLECTOR"], os.environ["ASGI_BENCH_SINK"], 1_000_000
    )
    return app


application = _application()


def serve(variant: str, collector_url: str, sink_url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = asgi_loop.free_port()
    env = dict(
        os.environ,
        ASGI_BENCH_VARIANT=variant,
        ASGI_BENCH_COLLECTOR=collector_url,
        ASGI_BENCH_SINK=sink_url,
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", str(HERE), "--http", "h11"]
        + ["--port", str(port), "--log-level", "warning", "--no-access-log"]
        + ["asgi_server:application"],
        env=env,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            asgi_loop.get(url + "/missing")
        except OSError as error:
            if getattr(error, "code", None) == 404:
                return process, url
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"uvicorn ({variant}) did not start") from None
            time.sleep(0.1)


def load(url: str, seconds: int, token: str) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\n'
            f"wrk.body = [==[{apps.REQUEST_BODY.decode()}]==]\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
            f'wrk.headers["{TOKEN_HEADER}"] = "{token}"\n'
        )
    try:
        out = subprocess.run(
            ["wrk", "-t1", "-c8", f"-d{seconds}s", "--latency", "-s", script.name]
            + [url + apps.PATH],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        ).stdout
    finally:
        os.unlink(script.name)
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")

    def latency(label: str) -> float:
        match = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert match is not None, out
        return float(match[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[match[2]]

    done = re.search(r"(\d+) requests in", out)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert done is not None and rate is not None, out
    return {
        "requests": int(done[1]),
        "rps": float(rate[1]),
        "p50_ms": latency("50%"),
        "p99_ms": latency("99%"),
    }


def delivered(variant: str, collector_url: str, sink_url: str) -> int:
    if variant == "otas":
        return int(asgi_loop.get(collector_url + apps.COUNT_PATH))
    if variant == "otel":
        return int(asgi_loop.get(sink_url + "/"))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=4, help="load per variant per round")
    args = parser.parse_args(argv)

    from otas_capture.collector import Collector

    token = Collector().issue_token()
    collector, collector_url = asgi_loop.start(apps.serve_collector, apps.COUNT_PATH)
    sink, sink_url = asgi_loop.start(apps.serve_span_sink, "/")
    rows: dict[str, list[dict[str, float]]] = {variant: [] for variant in VARIANTS}
    failed = False
    try:
        for number in range(args.rounds):
            for variant in VARIANTS[number % 3 :] + VARIANTS[: number % 3]:
                asgi_loop.delete(collector_url + apps.COUNT_PATH)
                asgi_loop.delete(sink_url + "/")
                process, url = serve(variant, collector_url, sink_url)
                try:
                    row = load(url, args.seconds, token)
                    began = time.monotonic()
                    while variant != "bare" and time.monotonic() - began < 60:
                        if delivered(variant, collector_url, sink_url) >= row["requests"]:
                            break
                        time.sleep(0.1)
                    row["drain_s"] = time.monotonic() - began
                    count = delivered(variant, collector_url, sink_url)
                    if variant != "bare" and count < row["requests"]:
                        print(f"{variant}: {count} of {row['requests']} delivered")
                        failed = True
                finally:
                    process.terminate()
                    process.wait(30)
                rows[variant].append(row)
                print(f"  round {number + 1} {variant}: {row['rps']:.0f} req/s", flush=True)
    finally:
        collector.terminate()
        sink.terminate()

    def med(variant: str, key: str) -> float:
        return statistics.median(row[key] for row in rows[variant])

    print(f"FastAPI under uvicorn (h11), wrk -t1 -c8, {args.seconds} s x {args.rounds} rounds")
    print(f"{'variant':<10}{'req/s':>9}{'share':>7}{'p50 ms':>9}{'p99 ms':>9}{'drain s':>9}")
    for variant in VARIANTS:
        share = med(variant, "rps") / med("bare", "rps")
        print(
            f"{variant:<10}{med(variant, 'rps'):>9.0f}{share:>7.0%}{med(variant, 'p50_ms'):>9.2f}"
            f"{med(variant, 'p99_ms'):>9.2f}{med(variant, 'drain_s'):>9.2f}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
