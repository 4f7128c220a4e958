"""Run folders: a unique name for each run, one live run per folder, files written whole."""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from metalab.errors import RunError

LOCK_NAME = ".lock"


def unique_suffix() -> str:
    """Ends each run folder's name, so that runs started in the same second never share one.
    Processes that a launcher started together for one run (srun, torchrun) get its job id."""
    for var in ("SLURM_JOB_ID", "TORCHELASTIC_RUN_ID"):
        if os.environ.get(var) and (var != "SLURM_JOB_ID" or "SLURM_STEP_ID" in os.environ):
            return os.environ[var]
    return secrets.token_hex(3)


@contextlib.contextmanager
def locked(run_dir: Path):
    """Hold ``<run>/.lock`` while the run lives. The kernel releases the lock when the process
    dies, however it dies (a killed run's lock is taken over, saying so); the file keeps the
    holder's PID and host for the message a second run gets."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        holder = os.read(fd, 200).decode(errors="replace").strip()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(
                f"{run_dir} is in use by another run ({holder or 'starting'}): wait "
                "for it to end, or give this run its own folder (hydra.run.dir)"
            ) from None
        if holder:
            print(
                f"metalab: {path}: the run that held this folder ({holder}) is gone; taking "
                "the folder over",
                file=sys.stderr,
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"PID {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # empty: ended normally (the file stays: no unlink race)
    finally:
        os.close(fd)


class _Writes:
    """A file's writes, keeping the OSError (a full disk: ENOSPC) that a writer may rename."""

    def __init__(self, file: BinaryIO):
        self.file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as err:
            self.error = err
            raise

    def __getattr__(self, name: str):
        return getattr(self.file, name)


def write_atomic(path: Path, data: bytes | Callable[[BinaryIO], object]) -> None:
    """Write ``path`` whole or not at all: a temporary file in the same folder, flushed to the
    disk, then renamed over ``path``. A full disk or a kill leaves the old file intact. ``data``
    is the bytes, or a function that writes them into the open file (``torch.save``)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            out = _Writes(f)
            try:
                data(out) if callable(data) else out.write(data)
            except Exception as err:  # torch.save reports a full disk as a RuntimeError
                if out.error is None:
                    raise
                raise out.error from err
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and err.filename is None:  # name the file
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise
    with contextlib.suppress(OSError):  # the rename itself survives a crash once the folder is
        folder = os.open(path.parent, os.O_RDONLY)  # synced (not possible on every filesystem)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
