"""Making a change to a directory's names survive a crash (its own fsync).

A new, removed or renamed file is durable only once its directory is synced too;
every writer that renames a file into place (images, zdb's data files) uses this.
Nothing else here: the zdb server imports it and stays small.
"""

from __future__ import annotations

import os
from pathlib import Path


def sync_dir(path: Path) -> None:
    """Make the names in a directory (a new, removed or renamed file) survive a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
