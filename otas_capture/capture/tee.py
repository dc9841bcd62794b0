"""The stand-in for ``wsgi.input`` that copies the request body as the application reads it.

The application sees exactly the same bytes, and nothing is read ahead of it or held
beyond the capture limit of the :class:`~otas_capture.capture.exchange.BodyBuffer` it
fills.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import IO, Any

from .exchange import BodyBuffer


class InputTee:
    """A file-like stand-in for ``wsgi.input`` that copies what the application reads.

    Every read method takes the same arguments as the wrapped stream's (keywords
    included) and returns exactly what it returns. Iteration works line by line, as on
    the real stream. Anything else (``close``, ``fileno``, ``seekable``, a server's own
    attribute) is the wrapped stream's, looked up on it: forwarded, not emulated.
    """

    def __new__(cls, stream: IO[bytes] | None = None, buffer: BodyBuffer | None = None) -> Any:
        # readinto, read1 and readall are optional on a stream, and frameworks probe
        # for them (werkzeug reads through readinto when it is there), so the tee
        # offers each one exactly when the real stream does: its class is the one of
        # the tee classes that has just those (made once each, see _tee_class).
        if cls is InputTee and stream is not None:
            cls = _tee_class(tuple(name for name in _OPTIONAL_READS if hasattr(stream, name)))
        return object.__new__(cls)

    def __init__(self, stream: IO[bytes], buffer: BodyBuffer) -> None:
        self._stream = stream
        self._buffer = buffer

    def read(self, *args: Any, **kwargs: Any) -> bytes:
        data = self._stream.read(*args, **kwargs)
        if data:
            self._buffer.add(data)
        return data

    def readline(self, *args: Any, **kwargs: Any) -> bytes:
        data = self._stream.readline(*args, **kwargs)
        if data:
            self._buffer.add(data)
        return data

    def readlines(self, *args: Any, **kwargs: Any) -> list[bytes]:
        lines = self._stream.readlines(*args, **kwargs)
        for line in lines:
            self._buffer.add(line)
        return lines

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    # Special methods are looked up on the type, never through __getattr__, so the
    # context-manager and copy protocols are forwarded explicitly.

    def __enter__(self) -> InputTee:
        enter = getattr(type(self._stream), "__enter__", None)
        if enter is None:  # the same refusal the bare stream gets from a with statement
            raise TypeError(
                f"{type(self._stream).__name__!r} object does not support the context "
                "manager protocol"
            )
        enter(self._stream)
        return self  # reads inside the with block still go through the tee

    def __exit__(self, *exc_info: Any) -> Any:
        return type(self._stream).__exit__(self._stream, *exc_info)

    def __copy__(self) -> InputTee:
        # A copy of the stream (or the stream's own refusal to be copied), still teed.
        return InputTee(copy.copy(self._stream), self._buffer)

    def __deepcopy__(self, memo: dict[int, Any]) -> InputTee:
        return InputTee(copy.deepcopy(self._stream, memo), self._buffer)

    def __getattr__(self, name: str) -> Any:
        # Only called for what the tee itself lacks. Read the stream from __dict__: on
        # an instance built without __init__ (pickle, copy protocols), self._stream
        # would call __getattr__ again, forever.
        try:
            stream = self.__dict__["_stream"]
        except KeyError:
            raise AttributeError(name) from None
        return getattr(stream, name)


class _TeeReadinto:
    def readinto(self: Any, buffer: Any, *args: Any, **kwargs: Any) -> int | None:
        count: int | None = self._stream.readinto(buffer, *args, **kwargs)
        if count:
            self._buffer.add(memoryview(buffer)[:count])
        return count


class _TeeRead1:
    def read1(self: Any, *args: Any, **kwargs: Any) -> bytes:
        data: bytes = self._stream.read1(*args, **kwargs)
        if data:
            self._buffer.add(data)
        return data


class _TeeReadall:
    def readall(self: Any, *args: Any, **kwargs: Any) -> bytes:
        data: bytes = self._stream.readall(*args, **kwargs)
        if data:
            self._buffer.add(data)
        return data


_OPTIONAL_READS = ("readinto", "read1", "readall")
_TEE_MIXINS = {"readinto": _TeeReadinto, "read1": _TeeRead1, "readall": _TeeReadall}
_tee_classes: dict[tuple[str, ...], type[InputTee]] = {(): InputTee}


def _tee_class(names: tuple[str, ...]) -> type[InputTee]:
    """The InputTee class with exactly the optional read methods ``names`` (made once)."""
    made = _tee_classes.get(names)
    if made is None:
        mixins = tuple(_TEE_MIXINS[name] for name in names)
        made = _tee_classes[names] = type("InputTee", (*mixins, InputTee), {})
    return made
