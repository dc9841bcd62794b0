"""A durable spool: records kept on disk across a restart, claimed once by one process.

What is still undelivered when a process exits is written here (``OTAS_SPOOL_DIR``), and
the next process started with the same directory ships it. Records are opaque bytes: the
caller serialises. The spool promises:

- **Bounded**: everything in the directory stays within ``max_bytes``; :meth:`Spool.save`
  keeps the records that fit (a prefix of the list) and says how many.
- **Whole or nothing**: a file is written under a temporary name, ``fsync``-ed, then
  renamed into place (``os.replace`` is atomic), so a crash mid-write leaves no partial
  file to be read. A checksum catches what the disk damages later: damaged files are
  skipped, counted and removed, never a crash.
- **Private**: files are created ``0600`` in a directory created ``0700``. A directory
  that another user owns or can write to is refused (:class:`SpoolError`): another user
  could read the events, or plant records that this process would ship under its key.
- **Claimed once**: several processes may share the directory. A process claims a file by
  taking an exclusive ``flock`` on it and renaming it to a name unique to itself, so no
  two processes ever get the same file. The :class:`Claim` holds the lock for as long as
  the file is in use.
- **Durable until done**: a claimed record leaves the disk only once the caller says it
  is done with it (:meth:`Claim.done`: delivered, or failed for good). Each done record is
  appended to the claim's journal (``<claim>.done``); the file and its journal are
  deleted when every record is done. :meth:`Claim.release` lets the file go with the
  records not done still in it, for a later claim in any process.
- **At least once across a crash**: if the process dies, the kernel releases its locks,
  and the next :meth:`Spool.claims` in any process takes the file over where the journal
  says it stopped. Only a record delivered in the instant before the crash, and not yet
  journaled, is delivered again (the caller's events carry an id to recognise that).

``flock`` is what makes the claim safe between processes: use a local filesystem (NFS
emulates ``flock`` with per-process locks). POSIX only.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import time
import uuid
import zlib
from collections.abc import Iterator

from ..contract import LOGGER_NAME
from .claim import JOURNAL_SUFFIX, U32, Claim, read_all, remove

logger = logging.getLogger(LOGGER_NAME)

# File layout: MAGIC, record count (u32), then per record its length (u32) and bytes,
# then the CRC-32 (u32) of everything before it.
MAGIC = b"OTAS-SPOOL-1\n"
FILE_OVERHEAD = len(MAGIC) + 2 * U32.size
RECORD_OVERHEAD = U32.size

READY_SUFFIX = ".spool"
CLAIMED_SUFFIX = ".claimed"
TEMP_SUFFIX = ".tmp"
LOCK_NAME = ".lock"
# A temporary file is written in milliseconds; one this old belongs to a writer that died.
STALE_TEMP_SECONDS = 600.0


class SpoolError(OSError):
    """The spool directory cannot be used safely (or at all)."""


class Spool:
    """Records on disk in ``directory``, at most ``max_bytes`` in all.

    Raises :class:`SpoolError` if the directory cannot be created or is not private.
    ``corrupt_files`` counts the files :meth:`claim` skipped as unreadable or damaged.
    """

    def __init__(self, directory: str, max_bytes: int) -> None:
        if max_bytes < FILE_OVERHEAD + RECORD_OVERHEAD:
            raise ValueError(f"max_bytes must be at least {FILE_OVERHEAD + RECORD_OVERHEAD}")
        self.directory = os.path.abspath(directory)
        self.max_bytes = max_bytes
        self.corrupt_files = 0
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            info = os.stat(self.directory)
        except OSError as error:
            raise SpoolError(f"spool directory {self.directory} cannot be created: {error}")
        if not stat.S_ISDIR(info.st_mode):
            raise SpoolError(f"spool directory {self.directory} is not a directory")
        if info.st_uid != os.geteuid():
            raise SpoolError(f"spool directory {self.directory} belongs to another user")
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise SpoolError(
                f"spool directory {self.directory} can be written by other users "
                f"(mode {stat.S_IMODE(info.st_mode):o}); make it 700"
            )

    # -- writing -------------------------------------------------------------------------

    def save(self, records: list[bytes]) -> int:
        """Write the longest prefix of ``records`` that fits as one file; return its length.

        ``records[:n]`` are on disk when this returns ``n``; the rest were not saved.
        Raises OSError if the disk refuses the write; then nothing was saved.
        """
        if not records:
            return 0
        # One writer at a time, across processes, so that two savers cannot both fit
        # into the same free space.
        with _DirectoryLock(os.path.join(self.directory, LOCK_NAME)):
            room = self.max_bytes - self._bytes_used() - FILE_OVERHEAD
            count = 0
            for record in records:
                room -= RECORD_OVERHEAD + len(record)
                if room < 0:
                    break
                count += 1
            if count == 0:
                return 0
            self._write(_encode(records[:count]))
        return count

    def _write(self, data: bytes) -> None:
        unique = _unique()
        temp = os.path.join(self.directory, f".{unique}{TEMP_SUFFIX}")
        # The name sorts by time, so older files are claimed first.
        final = os.path.join(self.directory, f"{time.time_ns():020d}-{unique}{READY_SUFFIX}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                os.fchmod(fd, 0o600)  # whatever the umask left
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, final)
        except BaseException:
            remove(temp)
            raise
        _fsync_directory(self.directory)  # make the rename itself durable

    def _bytes_used(self) -> int:
        used = 0
        now = time.time()
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if entry.name == LOCK_NAME or not entry.is_file(follow_symlinks=False):
                    continue
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # claimed and deleted meanwhile
                if entry.name.endswith(TEMP_SUFFIX) and now - info.st_mtime > STALE_TEMP_SECONDS:
                    remove(entry.path)  # left by a writer that died mid-write
                    continue
                used += info.st_size
        return used

    # -- reading -------------------------------------------------------------------------

    def claims(self) -> Iterator[Claim]:
        """Claim each spooled file in turn, oldest first, as the caller asks for the next.

        Files other processes hold are skipped; files of processes that died holding
        them are taken over, without the records their journal says are done. A claim
        the caller does not finish or release stays locked until this process ends.
        """
        try:
            names = sorted(os.listdir(self.directory))
        except OSError as error:
            logger.error("otas-capture: cannot list the spool %s: %s", self.directory, error)
            return
        for name in names:
            if name.endswith(CLAIMED_SUFFIX + JOURNAL_SUFFIX):
                self._remove_orphan_journal(name)
            elif _is_spooled(name):
                claim = self._claim_one(name)
                if claim is not None:
                    yield claim

    def _remove_orphan_journal(self, name: str) -> None:
        # A journal outlives its file only when a process died between deleting the two.
        # A claimed file is never renamed, so its journal without it is an orphan.
        path = os.path.join(self.directory, name)
        if not os.path.lexists(path[: -len(JOURNAL_SUFFIX)]):
            remove(path)

    def _claim_one(self, name: str) -> Claim | None:
        """Lock one file (renamed to this claim's own name if it was ready), or None."""
        path = os.path.join(self.directory, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return None  # claimed (or deleted) by another process since the listing
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                logger.warning("otas-capture: cannot lock spool file %s: %s", path, error)
            return None  # a live process holds it
        # The holder may have renamed or deleted the file before releasing it to us: only
        # a file still at the name we opened is ours.
        try:
            if not os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False)):
                raise FileNotFoundError(path)
            if name.endswith(READY_SUFFIX):
                mine = f"{name}.{os.getpid()}-{_unique()}{CLAIMED_SUFFIX}"
                os.rename(path, os.path.join(self.directory, mine))
                path = os.path.join(self.directory, mine)
        except OSError:
            os.close(fd)
            return None
        records = self._read(fd, path)
        if records is None:  # damaged: nothing to give back
            remove(path)
            remove(path + JOURNAL_SUFFIX)
            os.close(fd)
            return None
        return Claim(fd, path, records)

    def _read(self, fd: int, path: str) -> list[bytes] | None:
        try:
            info = os.fstat(fd)
            if info.st_uid != os.geteuid():
                raise ValueError("written by another user")
            return _decode(read_all(fd))
        except (OSError, ValueError) as error:
            self.corrupt_files += 1
            logger.warning("otas-capture: skipped damaged spool file %s: %s", path, error)
            return None


# -- the file format ---------------------------------------------------------------------


def _encode(records: list[bytes]) -> bytes:
    parts = [MAGIC, U32.pack(len(records))]
    for record in records:
        parts.append(U32.pack(len(record)))
        parts.append(bytes(record))
    body = b"".join(parts)
    return body + U32.pack(zlib.crc32(body))


def _decode(data: bytes) -> list[bytes]:
    """The records of a spool file; ValueError if it is not one, or is damaged."""
    if len(data) < FILE_OVERHEAD or not data.startswith(MAGIC):
        raise ValueError("not a spool file, or cut short")
    body, (checksum,) = data[: -U32.size], U32.unpack(data[-U32.size :])
    if zlib.crc32(body) != checksum:
        raise ValueError("checksum mismatch")
    offset = len(MAGIC)
    (count,) = U32.unpack_from(body, offset)
    offset += U32.size
    records = []
    for _ in range(count):
        if offset + U32.size > len(body):
            raise ValueError("cut short")
        (length,) = U32.unpack_from(body, offset)
        offset += U32.size
        if offset + length > len(body):
            raise ValueError("cut short")
        records.append(body[offset : offset + length])
        offset += length
    if offset != len(body):
        raise ValueError("trailing bytes")
    return records


# -- small helpers ---------------------------------------------------------------------


def _unique() -> str:
    return uuid.uuid4().hex


def _is_spooled(name: str) -> bool:
    """A ready file, or a claim of one (``<time>-<id>.spool.<pid>-<id>.claimed``)."""
    return name.endswith(READY_SUFFIX) or (
        name.endswith(CLAIMED_SUFFIX) and READY_SUFFIX + "." in name
    )


def _fsync_directory(directory: str) -> None:
    # Best effort: the file is already in place, and some filesystems cannot sync a
    # directory. Failing here would tell the caller its records were not saved.
    try:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


class _DirectoryLock:
    """An exclusive ``flock`` on the spool's lock file, for the duration of a ``with``."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._fd = -1

    def __enter__(self) -> _DirectoryLock:
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(self._fd)
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        os.close(self._fd)  # closing releases the lock
