"""The durable spool: bounded, atomic, private, and each file claimed by one process once.

The concurrency tests run real processes (``subprocess``) on one directory, as worker
processes sharing ``OTAS_SPOOL_DIR`` do.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from otas_capture.delivery.spool import (
    FILE_OVERHEAD,
    MAGIC,
    RECORD_OVERHEAD,
    STALE_TEMP_SECONDS,
    Spool,
    SpoolError,
)

ROOT = Path(__file__).resolve().parent.parent
BIG = 10 * 1024 * 1024


def spooled(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name != ".lock")


def disk_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in spooled(directory))


def claim_all(spool: Spool) -> list[bytes]:
    """Every record not done yet, each claimed file taken and done in full."""
    records = []
    for claim in spool.claims():
        for index in list(claim.pending):
            records.append(claim.records[index])
            claim.done(index)
    return records


def run_python(code: str, *args: str, **kwargs) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


# -- round trip --------------------------------------------------------------------------


def test_saved_records_come_back_exactly_as_given(tmp_path):
    spool = Spool(str(tmp_path / "spool"), BIG)
    records = [b'{"path": "/a"}', b"", b"\x00\xff binary \r\n", "caf\u00e9".encode()]
    assert spool.save(records) == 4
    assert claim_all(spool) == records


def test_each_save_is_one_file_and_older_files_are_claimed_first(tmp_path):
    spool = Spool(str(tmp_path), BIG)
    for number in range(5):
        assert spool.save([b"%d-a" % number, b"%d-b" % number]) == 2
    claims = list(spool.claims())
    assert [claim.records for claim in claims] == [[b"%d-a" % n, b"%d-b" % n] for n in range(5)]
    assert all(claim.pending == [0, 1] for claim in claims)
    for claim in claims:
        claim.release()


def test_a_claimed_file_leaves_the_disk_only_once_every_record_is_done(tmp_path):
    spool = Spool(str(tmp_path), BIG)
    spool.save([b"one", b"two", b"three"])
    [claim] = spool.claims()
    claim.done(0)
    claim.done(2)
    assert claim.open and len([p for p in spooled(tmp_path) if p.suffix == ".claimed"]) == 1
    claim.done(1)
    assert not claim.open
    assert spooled(tmp_path) == []


def test_a_released_claim_keeps_the_records_not_done_for_a_later_claim(tmp_path):
    spool = Spool(str(tmp_path), BIG)
    spool.save([b"delivered", b"kept", b"kept too"])
    [claim] = spool.claims()
    claim.done(0)
    claim.release()
    [again] = Spool(str(tmp_path), BIG).claims()
    assert again.pending == [1, 2]
    assert [again.records[i] for i in again.pending] == [b"kept", b"kept too"]
    again.done(1)
    again.done(2)
    assert spooled(tmp_path) == []


def test_a_claim_not_released_stays_locked_until_the_process_ends(tmp_path):
    spool = Spool(str(tmp_path), BIG)
    spool.save([b"kept"])
    [claim] = spool.claims()
    assert list(Spool(str(tmp_path), BIG).claims()) == []
    claim.release()
    assert claim_all(spool) == [b"kept"]
    assert claim_all(spool) == []


def test_an_empty_spool_yields_nothing(tmp_path):
    assert claim_all(Spool(str(tmp_path / "new"), BIG)) == []


def test_saving_nothing_writes_nothing(tmp_path):
    spool = Spool(str(tmp_path), BIG)
    assert spool.save([]) == 0
    assert spooled(tmp_path) == []


def test_a_second_spool_on_the_same_directory_sees_the_first_ones_files(tmp_path):
    Spool(str(tmp_path), BIG).save([b"from before the restart"])
    assert claim_all(Spool(str(tmp_path), BIG)) == [b"from before the restart"]


# -- bounded -----------------------------------------------------------------------------


def test_save_keeps_the_prefix_that_fits_and_says_how_many(tmp_path):
    record = b"x" * 100
    max_bytes = FILE_OVERHEAD + 3 * (RECORD_OVERHEAD + len(record))
    spool = Spool(str(tmp_path), max_bytes)
    assert spool.save([record] * 5) == 3
    assert disk_bytes(tmp_path) == max_bytes
    assert spool.save([b"y"]) == 0  # full
    assert claim_all(spool) == [record] * 3


def test_the_whole_directory_stays_within_max_bytes_over_many_saves(tmp_path):
    max_bytes = 4096
    spool = Spool(str(tmp_path), max_bytes)
    saved = 0
    for size in range(1, 200, 7):
        saved += spool.save([b"r" * size, b"s" * (size // 2)])
        assert disk_bytes(tmp_path) <= max_bytes
    assert len(claim_all(spool)) == saved
    assert saved > 0


def test_a_record_larger_than_the_spool_is_not_saved(tmp_path):
    spool = Spool(str(tmp_path), 1024)
    assert spool.save([b"x" * 2048, b"small"]) == 0
    assert spooled(tmp_path) == []


def test_space_is_freed_once_the_records_are_done(tmp_path):
    spool = Spool(str(tmp_path), 1024)
    assert spool.save([b"x" * 900]) == 1
    assert spool.save([b"x" * 900]) == 0
    claim_all(spool)
    assert spool.save([b"x" * 900]) == 1


def test_a_spool_too_small_for_any_record_is_refused(tmp_path):
    with pytest.raises(ValueError, match="max_bytes"):
        Spool(str(tmp_path), 8)


# -- private -----------------------------------------------------------------------------


def test_the_directory_is_created_0700_and_files_0600_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        spool = Spool(str(tmp_path / "a" / "spool"), BIG)
        spool.save([b"secret-ish"])
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a" / "spool").stat().st_mode) == 0o700
    [file] = spooled(tmp_path / "a" / "spool")
    assert stat.S_IMODE(file.stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o722, 0o1777])
def test_a_directory_other_users_can_write_to_is_refused(tmp_path, mode):
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(mode)
    with pytest.raises(SpoolError, match="written by other users"):
        Spool(str(directory), BIG)


def test_an_existing_directory_others_can_only_read_is_accepted(tmp_path):
    tmp_path.chmod(0o755)
    Spool(str(tmp_path), BIG).save([b"x"])


def test_a_path_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(SpoolError):
        Spool(str(tmp_path / "file"), BIG)


def test_spool_error_is_an_os_error():
    assert issubclass(SpoolError, OSError)


# -- atomic, and damage never crashes --------------------------------------------------


def test_no_temporary_file_is_left_after_saves(tmp_path):
    spool = Spool(str(tmp_path), BIG)
    for _ in range(5):
        spool.save([b"x"])
    assert all(p.name.endswith(".spool") for p in spooled(tmp_path))


def test_a_file_still_being_written_is_never_claimed(tmp_path):
    spool = Spool(str(tmp_path), BIG)
    spool.save([b"whole"])
    [file] = spooled(tmp_path)
    partial = tmp_path / ".writer-in-progress.tmp"
    partial.write_bytes(file.read_bytes()[:-3])
    assert claim_all(spool) == [b"whole"]
    assert partial.exists() and spool.corrupt_files == 0


def test_a_stale_temporary_file_of_a_dead_writer_is_removed_on_save(tmp_path):
    spool = Spool(str(tmp_path), 2048)
    stale = tmp_path / ".dead-writer.tmp"
    stale.write_bytes(b"x" * 1500)
    long_ago = time.time() - STALE_TEMP_SECONDS - 60
    os.utime(stale, (long_ago, long_ago))
    assert spool.save([b"y" * 1000]) == 1
    assert not stale.exists()


def damaged_files(good: bytes) -> dict[str, bytes]:
    flipped = bytearray(good)
    flipped[len(MAGIC) + 6] ^= 0xFF
    return {
        "empty": b"",
        "magic only": MAGIC,
        "cut short": good[:-5],
        "a byte flipped": bytes(flipped),
        "garbage": b"\x00garbage that is no spool file at all" * 3,
        "trailing bytes": good + b"extra",
    }


def test_damaged_files_are_skipped_counted_and_removed(tmp_path, caplog):
    spool = Spool(str(tmp_path), BIG)
    spool.save([b"first", b"second"])
    [good_file] = spooled(tmp_path)
    good = good_file.read_bytes()
    damaged = damaged_files(good)
    for number, data in enumerate(damaged.values()):
        (tmp_path / f"{number:020d}-damaged.spool").write_bytes(data)
    spool.save([b"third"])
    assert claim_all(spool) == [b"first", b"second", b"third"]
    assert spool.corrupt_files == len(damaged)
    assert spooled(tmp_path) == []
    assert "damaged spool file" in caplog.text


def test_files_that_are_not_the_spools_are_left_alone(tmp_path):
    spool = Spool(str(tmp_path), BIG)
    (tmp_path / "README").write_text("not ours")
    (tmp_path / "notes.claimed").write_text("not ours either")
    assert claim_all(spool) == []
    assert (tmp_path / "README").exists() and (tmp_path / "notes.claimed").exists()
    assert spool.corrupt_files == 0


# -- claimed once ------------------------------------------------------------------------


def test_a_file_held_by_a_live_claim_is_not_claimed_again(tmp_path):
    spool = Spool(str(tmp_path), BIG)
    spool.save([b"held"])
    [first] = spool.claims()
    assert claim_all(Spool(str(tmp_path), BIG)) == []
    first.done(0)
    assert spooled(tmp_path) == []


CLAIM_AND_DIE = """
    import os, sys
    from otas_capture.delivery.spool import Spool
    for claim in Spool(sys.argv[1], 10 * 1024 * 1024).claims():
        claim.done(0)
        print(claim.records[0].decode(), flush=True)
        os._exit(3)  # dies holding the claim, one record done and two not
"""


def test_the_claim_of_a_process_that_died_is_taken_over_where_its_journal_stopped(tmp_path):
    spool = Spool(str(tmp_path), BIG)
    spool.save([b"delivered before the crash", b"survives a crash", b"too"])
    child = run_python(CLAIM_AND_DIE, str(tmp_path))
    out, err = child.communicate(timeout=60)
    assert child.returncode == 3, err
    assert out.strip() == "delivered before the crash"
    names = sorted(path.name for path in spooled(tmp_path))
    assert [name.rsplit(".", 1)[-1] for name in names] == ["claimed", "done"]
    assert claim_all(spool) == [b"survives a crash", b"too"]
    assert spooled(tmp_path) == []


def test_a_journal_whose_file_is_gone_is_removed(tmp_path):
    spool = Spool(str(tmp_path), BIG)
    orphan = tmp_path / "00000000000000000001-x.spool.1-y.claimed.done"
    orphan.write_bytes(b"\x00\x00\x00\x00")
    assert claim_all(spool) == []
    assert not orphan.exists()


CLAIMER = """
    import json, os, sys, time
    from otas_capture.delivery.spool import Spool
    directory, go = sys.argv[1], sys.argv[2]
    spool = Spool(directory, 1 << 30)
    while not os.path.exists(go):  # start together with the other process
        time.sleep(0.001)
    got = []
    # Pass after pass until the directory is empty: a process that runs out of files
    # keeps meeting the other one's claims in flight, which it must leave alone.
    while any(name.endswith((".spool", ".claimed")) for name in os.listdir(directory)):
        for claim in spool.claims():
            for index in list(claim.pending):
                got.append(claim.records[index].decode())
                claim.done(index)
            time.sleep(0.0005)  # hold the claim a moment, as a delivery would
    print(json.dumps({"got": got, "corrupt": spool.corrupt_files}))
"""


def test_two_processes_claiming_at_once_get_every_record_exactly_once(tmp_path):
    spool = Spool(str(tmp_path / "spool"), 1 << 30)
    expected = []
    for number in range(300):
        batch = [f"{number}-{part}" for part in range(3)]
        assert spool.save([record.encode() for record in batch]) == 3
        expected.extend(batch)
    go = tmp_path / "go"
    children = [run_python(CLAIMER, str(tmp_path / "spool"), str(go)) for _ in range(2)]
    go.write_text("go")
    results = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        results.append(json.loads(out))
    claimed = results[0]["got"] + results[1]["got"]
    assert sorted(claimed) == sorted(expected)  # every record, none twice
    assert results[0]["got"] and results[1]["got"]  # both took part
    assert all(result["corrupt"] == 0 for result in results)
    assert spooled(tmp_path / "spool") == []


SAVER = """
    import os, sys, time
    from otas_capture.delivery.spool import Spool
    directory, go, max_bytes = sys.argv[1], sys.argv[2], int(sys.argv[3])
    spool = Spool(directory, max_bytes)
    while not os.path.exists(go):
        time.sleep(0.001)
    print(sum(spool.save([b"x" * 50, b"y" * 30]) for _ in range(200)))
"""


def test_processes_saving_at_once_stay_within_max_bytes_together(tmp_path):
    max_bytes = 20_000
    go = tmp_path / "go"
    directory = tmp_path / "spool"
    children = [run_python(SAVER, str(directory), str(go), str(max_bytes)) for _ in range(2)]
    go.write_text("go")
    saved = 0
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        saved += int(out)
    assert disk_bytes(directory) <= max_bytes
    assert len(claim_all(Spool(str(directory), max_bytes))) == saved > 0


def test_a_torn_last_journal_entry_is_ignored_and_its_record_kept(tmp_path):
    spool = Spool(str(tmp_path), BIG)
    spool.save([b"done", b"torn", b"kept"])
    [claim] = spool.claims()
    claim.done(0)
    claim.release()
    [journal] = [p for p in spooled(tmp_path) if p.name.endswith(".done")]
    with open(journal, "ab") as torn:
        torn.write(b"\x00\x00")  # half of "1 is done": a crash mid-write
    [again] = spool.claims()
    assert again.pending == [1, 2]
    again.release()


def test_a_claim_whose_journal_says_all_is_done_leaves_the_disk_at_once(tmp_path):
    spool = Spool(str(tmp_path), BIG)
    spool.save([b"a", b"b"])
    [claim] = spool.claims()
    claim.done(0)
    claim.release()
    [journal] = [p for p in spooled(tmp_path) if p.name.endswith(".done")]
    with open(journal, "ab") as more:
        more.write(b"\x00\x00\x00\x01")  # as if a process died right after delivering 1
    assert list(spool.claims())[0].pending == []
    assert spooled(tmp_path) == []
