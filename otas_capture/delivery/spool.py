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
  two processes ever get the same file. The file is deleted once the caller has taken its
  records (asked for the next batch, or ended the loop normally).
- **At least once across a crash**: the lock is held until the file is deleted. If the
  process dies in between, the kernel releases the lock, and the next :meth:`Spool.claim`
  in any process recovers the file. Records the dead process had already delivered are
  then delivered again (the caller's events carry an id to recognise that); none is lost.
  A caller that leaves the loop early (``break``, an exception) puts its current batch
  back for a later claim, for the same reason.

``flock`` is what makes the claim safe between processes: use a local filesystem (NFS
emulates ``flock`` with per-process locks). POSIX only.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import struct
import time
import uuid
import zlib
from collections.abc import Iterator

from ..contract import LOGGER_NAME

logger = logging.getLogger(LOGGER_NAME)

# File layout: MAGIC, record count (u32), then per record its length (u32) and bytes,
# then the CRC-32 (u32) of everything before it.
MAGIC = b"OTAS-SPOOL-1\n"
_U32 = struct.Struct(">I")
FILE_OVERHEAD = len(MAGIC) + 2 * _U32.size
RECORD_OVERHEAD = _U32.size

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
            _remove(temp)
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
                    _remove(entry.path)  # left by a writer that died mid-write
                    continue
                used += info.st_size
        return used

    # -- reading -------------------------------------------------------------------------

    def claim(self) -> Iterator[list[bytes]]:
        """Claim each spooled file in turn, oldest first, and yield its records.

        A file is deleted when the caller asks for the next batch (or the loop ends);
        leaving the loop early puts the current batch back. Files other processes hold are
        skipped; files of processes that died holding them are recovered.
        """
        try:
            names = sorted(name for name in os.listdir(self.directory) if _is_spooled(name))
        except OSError as error:
            logger.error("otas-capture: cannot list the spool %s: %s", self.directory, error)
            return
        for name in names:
            claimed = self._claim_one(name)
            if claimed is None:
                continue
            fd, path, original = claimed
            consumed = False
            try:
                records = self._read(fd, path)
                if records is None:
                    consumed = True  # damaged: nothing to give back
                    continue
                yield records
                consumed = True
            finally:
                if consumed:
                    _remove(path)
                else:
                    _rename_quietly(path, original)  # back in the spool for a later claim
                os.close(fd)  # releases the lock, after the file is gone or back

    def _claim_one(self, name: str) -> tuple[int, str, str] | None:
        """Lock and rename one file to this claim's own name, or None if not ours to take."""
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
        original = _original_name(name)
        mine = os.path.join(self.directory, f"{original}.{os.getpid()}-{_unique()}{CLAIMED_SUFFIX}")
        try:
            if not os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False)):
                raise FileNotFoundError(path)
            os.rename(path, mine)
        except OSError:
            os.close(fd)
            return None
        return fd, mine, os.path.join(self.directory, original)

    def _read(self, fd: int, path: str) -> list[bytes] | None:
        try:
            info = os.fstat(fd)
            if info.st_uid != os.geteuid():
                raise ValueError("written by another user")
            chunks = []
            while True:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
            return _decode(b"".join(chunks))
        except (OSError, ValueError) as error:
            self.corrupt_files += 1
            logger.warning("otas-capture: skipped damaged spool file %s: %s", path, error)
            return None


# -- the file format ---------------------------------------------------------------------


def _encode(records: list[bytes]) -> bytes:
    parts = [MAGIC, _U32.pack(len(records))]
    for record in records:
        parts.append(_U32.pack(len(record)))
        parts.append(bytes(record))
    body = b"".join(parts)
    return body + _U32.pack(zlib.crc32(body))


def _decode(data: bytes) -> list[bytes]:
    """The records of a spool file; ValueError if it is not one, or is damaged."""
    if len(data) < FILE_OVERHEAD or not data.startswith(MAGIC):
        raise ValueError("not a spool file, or cut short")
    body, (checksum,) = data[: -_U32.size], _U32.unpack(data[-_U32.size :])
    if zlib.crc32(body) != checksum:
        raise ValueError("checksum mismatch")
    offset = len(MAGIC)
    (count,) = _U32.unpack_from(body, offset)
    offset += _U32.size
    records = []
    for _ in range(count):
        if offset + _U32.size > len(body):
            raise ValueError("cut short")
        (length,) = _U32.unpack_from(body, offset)
        offset += _U32.size
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


def _original_name(name: str) -> str:
    """``<time>-<id>.spool`` for a ready file or for any claim of it."""
    if name.endswith(CLAIMED_SUFFIX):
        return name[: name.index(READY_SUFFIX) + len(READY_SUFFIX)]
    return name


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as error:
        logger.warning("otas-capture: cannot remove spool file %s: %s", path, error)


def _rename_quietly(source: str, target: str) -> None:
    try:
        os.rename(source, target)
    except OSError as error:
        # Still recoverable: a claimed file whose lock is released is claimed again.
        logger.warning("otas-capture: cannot return spool file %s: %s", source, error)


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
