"""What counts as a full disk, wherever it is said: a write's ENOSPC, a quota, or SQLite failing a write."""

import errno
import sqlite3

from sqlalchemy.exc import OperationalError

from ofedrepo.errors import disk_full, disk_full_message


def test_a_full_disk_is_told_apart_from_a_busy_database() -> None:
    assert disk_full(OSError(errno.ENOSPC, "No space left on device", "/var/x"))
    assert disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    full = OperationalError("INSERT INTO builds ...", {}, sqlite3.OperationalError("database or disk is full"))
    assert disk_full(full) and "no space left on the disk" in disk_full_message(full)
    locked = OperationalError("INSERT INTO builds ...", {}, sqlite3.OperationalError("database is locked"))
    assert not disk_full(locked) and not disk_full(OSError(errno.EIO, "I/O error"))
    written = disk_full_message(OSError(errno.ENOSPC, "x", "/var/x"))
    assert written.startswith("no space left on the disk writing /var/x")
