"""Naming a full disk as the cause when the SQLite store cannot be created or opened at start
(issue #14, finding 12)."""
from __future__ import annotations

import errno
import shutil
import sqlite3
from pathlib import Path

from cds_service.errors import CdsNoSpace


def no_space(database: str, exc: BaseException, min_free: int) -> CdsNoSpace | None:
    """The real cause when a SQLite store could not be created or opened for lack of disk space
    (issue #14, finding 12): SQLite says "database or disk is full" and the message used to
    blame the database file, sending the operator after the wrong problem."""
    if database == ":memory:" or "://" in database or not _out_of_space(exc):
        return None
    folder = Path(database).expanduser().parent
    try:
        free = f"{shutil.disk_usage(folder).free / (1 << 20):.1f} MiB free"
    except OSError:
        free = "free space unknown"
    return CdsNoSpace(f"no space left on the disk of {folder} ({free}); the database cannot be created or written "
                      "there. Free some space on that disk, or point SPINE_CDS_DATA_DIR (or SPINE_CDS_DATABASE) at a "
                      f"disk with room (at least {min_free >> 20} MiB).")


def _out_of_space(exc: BaseException | None) -> bool:
    """Whether ``exc`` or an error it came from is ENOSPC/EDQUOT or SQLite's SQLITE_FULL."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(exc, sqlite3.Error) and getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False

