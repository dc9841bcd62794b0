"""What the event JSON costs with orjson and with the standard library (issue 20).

For the realistic event of ``apps.py`` (about 3 KB of JSON each way, five secrets),
built by the package's ``EventBuilder``, CPU time per operation of:

* *encode event*: the whole event dict to UTF-8 bytes (``build._dumps`` today,
  ``jsoncodec.dumps`` with orjson);
* *parse body*: the request body text (``json.loads`` today, ``jsoncodec.loads``);
* *encode masked body*: the masked body back to text (``build._text_json`` today,
  ``jsoncodec.dumps_text``).

    python benchmarks/codec.py                 # both paths, in two processes
    python benchmarks/codec.py --count N --op encode|parse|text --path stdlib|codec

``--count`` runs one operation N times and prints nothing, for valgrind::

    valgrind --tool=callgrind --callgrind-out-file=/dev/null python benchmarks/codec.py \\
        --count 2100 --op encode --path codec      # then --count 100:
    # instructions per operation = (the first "Collected" - the second) / 2000

Each path's result is checked equal, as parsed JSON, to the standard library's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import timeit
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def operations(path: str) -> dict[str, tuple[Callable[[], Any], Any]]:
    """name: (the operation, what the standard library's version of it gives, parsed)."""
    from apps import REALISTIC_REQUEST, REALISTIC_RESPONSE
    from event_build import PROJECT, exchange

    from otas_capture.config import Config
    from otas_capture.event import build, jsoncodec

    builder = build.EventBuilder(Config.load({"sdk_key": "otas_abc_defghijkl"}, {}))
    event = builder.event(exchange(True, (REALISTIC_REQUEST, REALISTIC_RESPONSE)), PROJECT)
    body = REALISTIC_REQUEST.decode()
    masked, finite = jsoncodec.loads_finite(event["request_body"])
    if path == "stdlib":
        ops: dict[str, Callable[[], Any]] = {
            "encode": lambda: build._dumps(event),
            "parse": lambda: json.loads(body),
            "text": lambda: build._text_json(masked),
        }
    else:
        ops = {
            "encode": lambda: jsoncodec.dumps(event),
            "parse": lambda: jsoncodec.loads(body),
            "text": lambda: jsoncodec.dumps_text(masked, allow_nan=True, finite=finite),
        }
    expected = {"encode": event, "parse": json.loads(body), "text": masked}
    return {name: (op, expected[name]) for name, op in ops.items()}


def measure(path: str) -> dict[str, float]:
    from otas_capture.event import jsoncodec

    results: dict[str, float] = {"accelerated": float(jsoncodec.ACCELERATED)}
    for name, (op, expected) in operations(path).items():
        got = op()
        parsed = json.loads(got) if name != "parse" else got
        if parsed != expected:
            raise SystemExit(f"{path} {name}: not what the standard library gives")
        runs = [
            timeit.Timer(op, timer=time.process_time).timeit(number=2000) / 2000 for _ in range(7)
        ]
        results[name] = min(runs) * 1e6
    return results


def main() -> None:
    args = sys.argv[1:]
    if "--count" in args:
        path = args[args.index("--path") + 1]
        if path == "blocked":  # the codec with orjson not installed
            sys.modules["orjson"] = None  # type: ignore[assignment]
            path = "codec"
        op = operations(path)[args[args.index("--op") + 1]][0]
        for _ in range(int(args[args.index("--count") + 1])):
            op()
        return
    if "--measure" in args:
        if "--blocked" in args:
            sys.modules["orjson"] = None  # type: ignore[assignment]
        print(json.dumps(measure(args[args.index("--measure") + 1])))
        return
    rows = {}
    for label, extra in (
        ("standard library, as build.py does it today", ["--measure", "stdlib"]),
        ("jsoncodec with orjson", ["--measure", "codec"]),
        ("jsoncodec without orjson (the fallback)", ["--measure", "codec", "--blocked"]),
    ):
        out = subprocess.run(
            [sys.executable, __file__, *extra], check=True, stdout=subprocess.PIPE, text=True
        ).stdout
        rows[label] = json.loads(out)
    print("| path | encode event µs | parse body µs | encode masked body µs |")
    print("|---|---:|---:|---:|")
    for label, row in rows.items():
        print(f"| {label} | {row['encode']:.1f} | {row['parse']:.1f} | {row['text']:.1f} |")


if __name__ == "__main__":
    main()
