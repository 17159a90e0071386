"""What a command trial's child inherits from its worker, and how it ends with it.

The child runs whoever submitted the spec's script, so it gets only what a training script needs:

- **environment**: the worker's variables whose names match :data:`DEFAULT_ENV` or the operator's
  ``RNNTUNE_COMMAND_ENV`` (names or ``fnmatch`` patterns such as ``AWS_*``), never one of
  :data:`NEVER_ENV` (the database URL and the API tokens) whatever the patterns say, plus the
  variables the reporting protocol sets (``rnntune.reporting``);
- **lifetime**: on Linux the kernel sends the child SIGKILL when the worker thread that started it
  dies (``prctl(PR_SET_PDEATHSIG)``), so a ``kill -9`` of the worker takes its child too. Processes
  the child starts itself are in its process group, which the worker stops on every other way out
  (cancel, prune, time limit, shutdown); after a ``kill -9`` they are the child's to end.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fnmatch
import os
import signal
import sys
from collections.abc import Callable, Iterable, Mapping

# What a training script (Python, R, Julia, a shell) commonly needs of its environment: where
# programs and libraries are, the user and locale, temporary and cache directories, the GPU
# runtime's variables and thread counts. CUDA_VISIBLE_DEVICES is set by the worker itself.
DEFAULT_ENV = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TZ",
    "TMPDIR",
    "TERM",
    "PYTHONPATH",
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
    "LD_LIBRARY_PATH",
    "CUDA_*",
    "NVIDIA_*",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "XDG_CACHE_HOME",
    "TORCH_HOME",
    "HF_HOME",
)
# Secrets of the worker and the API: never passed, whatever RNNTUNE_COMMAND_ENV says.
NEVER_ENV = ("RNNTUNE_DATABASE_URL", "RNNTUNE_API_TOKENS", "RNNTUNE_API_TOKEN")

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def parse_patterns(value: str | None) -> tuple[str, ...]:
    """``RNNTUNE_COMMAND_ENV`` (comma- or whitespace-separated names / patterns) as a tuple;
    ValueError when it names a variable of :data:`NEVER_ENV` outright."""
    patterns = tuple(p for chunk in (value or "").split(",") for p in chunk.split() if p)
    named = sorted(set(patterns) & set(NEVER_ENV))
    if named:
        raise ValueError(f"a command child never gets {', '.join(named)}; remove it from RNNTUNE_COMMAND_ENV")
    return patterns


def child_env(environ: Mapping[str, str], extra: Iterable[str] = ()) -> dict[str, str]:
    """The variables of ``environ`` a command child gets: those matching :data:`DEFAULT_ENV` or
    ``extra`` (the operator's patterns), none of :data:`NEVER_ENV`."""
    patterns = (*DEFAULT_ENV, *extra)
    return {
        name: value
        for name, value in environ.items()
        if name not in NEVER_ENV and any(fnmatch.fnmatchcase(name, p) for p in patterns)
    }


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive SIGKILL when its parent (the worker) dies;
    None where the platform has no parent-death signal (not Linux).

    Everything is looked up before the fork: in the child, between fork and exec, it only makes
    one system call and compares two pids (no import, no allocation of note)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    prctl = libc.prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent, kill, getppid, sigkill = os.getpid(), os.kill, os.getppid, signal.SIGKILL

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, sigkill, 0, 0, 0)
        if getppid() != parent:  # the worker died before the signal was armed
            kill(os.getpid(), sigkill)

    return preexec
