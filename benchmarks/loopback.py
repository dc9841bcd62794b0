"""A loopback server that answers every log call at once, for the tight-loop benchmarks.

It stands in for Brain where the server's own time must not count: each call on a
kept-alive connection gets the bytes ``answer()`` returns as soon as its body is in.
``breakdown.py --instant`` and ``wire_call.py`` run it in a process of their own.
"""

from __future__ import annotations

import socket
import threading
from typing import Callable


def serve_answers(answer: Callable[[], bytes]) -> None:
    """Print the port, then answer every call on it with ``answer()`` (never returns)."""
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)

    def serve(conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer = b""
        while data := conn.recv(65536):
            buffer += data
            while (end := buffer.find(b"\r\n\r\n")) >= 0:
                head = buffer[:end].decode("latin-1").lower()
                length = int(head.split("content-length:", 1)[1].split("\r\n", 1)[0])
                if len(buffer) < end + 4 + length:
                    break
                buffer = buffer[end + 4 + length :]
                conn.sendall(answer())

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()
