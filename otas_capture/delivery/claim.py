"""One claimed spool file: its records, and a journal of those done (see :mod:`.spool`).

The :class:`Claim` holds an exclusive ``flock`` on the file for as long as this process
uses it. Each record the caller is done with is appended to the journal
(``<claim>.done``), so that a process that takes the file over after a crash skips it; the
file and its journal are deleted once every record is done.
"""

from __future__ import annotations

import logging
import os
import struct

from ..contract import LOGGER_NAME

logger = logging.getLogger(LOGGER_NAME)

JOURNAL_SUFFIX = ".done"
# A big-endian u32: the spool file's counts and lengths, and each journal entry.
U32 = struct.Struct(">I")


class Claim:
    """One spool file held by this process: its ``records`` (a list the caller may empty
    of those it holds elsewhere), and the indexes in ``pending`` of those not done yet
    when the claim was made (all of them unless an earlier claim journaled some).

    Not thread-safe: the caller serialises :meth:`done` and :meth:`release`.
    """

    def __init__(self, fd: int, path: str, records: list[bytes]) -> None:
        self._fd = fd
        self._path = path
        self._journal = -1
        self.records = records
        done = journaled(path + JOURNAL_SUFFIX, len(records))
        self.pending = [index for index in range(len(records)) if index not in done]
        self._left = len(self.pending)
        self.open = True
        if not self._left:
            self._finish()

    def done(self, index: int) -> None:
        """Record ``index`` is delivered or failed for good: it leaves the disk (with the
        file, once every record is done)."""
        if not self.open:
            return
        self._left -= 1
        if not self._left:
            self._finish()
            return
        try:
            if self._journal < 0:
                self._journal = os.open(
                    self._path + JOURNAL_SUFFIX,
                    os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW,
                    0o600,
                )
            # One small append: whole or absent after a crash of this process (the page
            # cache outlives it; a power cut may cost a few duplicates, never a record).
            os.write(self._journal, U32.pack(index))
        except OSError as error:  # the record may be delivered again: never lost
            logger.warning("otas-capture: cannot journal spool file %s: %s", self._path, error)

    def release(self) -> None:
        """Let the file go, with every record not done still in it, for a later claim.
        (In a forked child, this drops the child's copy: the parent's lock stays.)"""
        if self.open:
            self.open = False
            self._close()

    def _finish(self) -> None:
        self.open = False
        remove(self._path)
        remove(self._path + JOURNAL_SUFFIX)
        self._close()

    def _close(self) -> None:
        if self._journal >= 0:
            os.close(self._journal)
            self._journal = -1
        os.close(self._fd)  # releases the lock, after the file is gone or complete


def read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def journaled(path: str, count: int) -> set[int]:
    """The indexes a claim's journal says are done (a torn last entry is ignored)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return set()
    except OSError as error:
        logger.warning("otas-capture: cannot read spool journal %s: %s", path, error)
        return set()
    try:
        data = read_all(fd)
    finally:
        os.close(fd)
    whole = len(data) - len(data) % U32.size
    return {index for (index,) in U32.iter_unpack(data[:whole]) if index < count}


def remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as error:
        logger.warning("otas-capture: cannot remove spool file %s: %s", path, error)
