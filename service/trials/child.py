"""What a command trial's child inherits from its worker, and how it ends with it.

The child runs whoever submitted the spec's script, so it gets only what a training script needs:

- **environment**: the worker's variables whose names match :data:`DEFAULT_ENV` or the operator's
  ``RNNTUNE_COMMAND_ENV`` (names or ``fnmatch`` patterns such as ``AWS_*``), never one of
  :data:`NEVER_ENV` (the database URL and the API tokens) whatever the patterns say, plus the
  variables the reporting protocol sets (``rnntune.reporting``);
- **lifetime**: the script runs under a small reaper (:mod:`rnntune.service.trials.reaper`), its direct
  parent and the leader of its process group, which the worker signals on every way out (cancel,
  prune, time limit, shutdown). The reaper learns of the worker's death from the kernel
  (``prctl(PR_SET_PDEATHSIG)``, Linux; elsewhere by polling) and is a child subreaper, so a ``kill
  -9`` of the worker ends the script and everything it started (``cmd &``, subprocesses, even a
  ``setsid`` daemon); so does the script's own exit.
"""

from __future__ import annotations

import fnmatch
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

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

REAPER = Path(__file__).with_name("reaper.py")  # run by path: a standalone standard-library script


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


def reaped(argv: list[str], fds: Iterable[int]) -> list[str]:
    """``argv`` run under :mod:`rnntune.service.trials.reaper` (the worker's own interpreter, isolated):
    the script's direct parent, which passes ``fds`` on to it and ends every process it starts
    when it exits or when the worker (this process) dies."""
    return [sys.executable, "-I", "-S", str(REAPER), str(os.getpid()), ",".join(map(str, fds)), "--", *argv]
