"""Process hygiene for indexing: one writer per home, and workers that end with their parent."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator

from filelock import FileLock, Timeout

from docteller.settings import Settings

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


class IndexBusy(Exception):
    """Another indexing run holds this home's write lock."""


@contextlib.contextmanager
def index_write_lock(settings: Settings, wait_s: float | None = None) -> Iterator[None]:
    """Hold `<home>/index/.write.lock` while writing the index.

    A second `docteller index` (or a staff upload in the web app) on the same home waits for the
    first, saying so, instead of racing it; `wait_s` bounds the wait (0: refuse at once).
    The lock is a kernel file lock: it is released when its holder exits, even by `kill -9`.
    """
    settings.index_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(settings.index_dir / ".write.lock"), thread_local=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if wait_s is not None and wait_s <= 0:
            raise IndexBusy(f"{settings.home}: another indexing run is writing to this knowledge base") from None
        log.warning("%s: another indexing run is writing to this knowledge base; waiting for it", settings.home)
        try:
            lock.acquire(timeout=-1 if wait_s is None else wait_s)
        except Timeout:
            raise IndexBusy(f"{settings.home}: still busy after {wait_s:.0f} s; try again later") from None
    try:
        yield
    finally:
        lock.release()


def end_with_parent(parent_pid: int) -> None:
    """Worker-process initializer: exit when the parent dies, even by `kill -9`.

    On Linux the kernel delivers SIGKILL when the parent goes (prctl PR_SET_PDEATHSIG); a watcher
    thread also notices re-parenting, for other systems and for a parent that died before prctl.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            log.debug("prctl unavailable; relying on the parent watcher")
    if os.getppid() != parent_pid:
        os._exit(1)

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(1.0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
