"""Command trials: run a user's own training script as a child process, one per trial.

``objective: {command: ["python", "train.py", "--lr", "{lr}"]}`` runs without a shell; ``{name}``
in an argument after the script is replaced by the trial's value, and every parameter is also
in one JSON file named by ``RNNTUNE_PARAMS_FILE``. The child reports each step through a pipe
(``from rnntune import report; report(step, value)``: it blocks until the pruner has decided) or
by printing ``RNNTUNE_REPORT step=N value=X`` lines (any language); its value is the last
``final(value)`` / ``RNNTUNE_FINAL value=X``, else its last report.

A command is code execution by whoever may submit a spec, so (design.md §7):

- the spec validation here refuses an argument list that could run anything but a script file:
  the program is either the script itself or an interpreter from :data:`INTERPRETERS` whose
  first argument is the script (no ``-c``, no options before it); no ``..`` in the script's path;
- a worker runs command trials only when its operator allowed it (``--allow-commands DIR`` or
  ``RNNTUNE_COMMAND_DIRS``), and only a script whose real path lies inside an allowed directory;
  otherwise it never claims the study.

The child process itself (start, report protocol, time limit, stop) is
:mod:`rnntune.service.trials.command_run`; its names are importable from here.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from rnntune.service.trials.child import parse_patterns
from rnntune.service.trials.command_run import CommandFailed, CommandResult, CommandStopped, cuda_visible, run

__all__ = [
    "INTERPRETERS",
    "MAX_ARGS",
    "PLACEHOLDER_RE",
    "CommandFailed",
    "CommandOptions",
    "CommandResult",
    "CommandStopped",
    "build_argv",
    "check_allowed",
    "check_command",
    "cuda_visible",
    "escape_reason",
    "parse_dirs",
    "resolve_script",
    "run",
    "script_of",
    "spec_errors",
]

# Bare program names that run the script given as their first argument. "python" and "python3"
# are the worker's own interpreter (so ``from rnntune import report`` works in the child).
INTERPRETERS = ("python", "python3", "Rscript", "julia", "node", "bash", "sh")
PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
MAX_ARGS = 256

# --- the spec -----------------------------------------------------------------------------------


def script_of(argv: list[str]) -> str:
    """The script a command runs: argv[0], or argv[1] after an interpreter."""
    return argv[1] if argv[0] in INTERPRETERS else argv[0]


def check_command(argv: Any, names: Iterable[str]) -> list[str]:
    """Validate a spec's ``objective.command`` (raise ValueError naming the problem); ``names``
    are the parameters a ``{name}`` placeholder may refer to."""
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise ValueError("command must be a non-empty list of strings (the program and its arguments; no shell)")
    if len(argv) > MAX_ARGS:
        raise ValueError(f"command has {len(argv)} arguments, more than {MAX_ARGS}")
    if argv[0] in INTERPRETERS and (len(argv) < 2 or argv[1].startswith("-")):
        raise ValueError(
            f"command: after the interpreter {argv[0]!r} comes the script, with no options before it "
            f"(such as -c or -m), but got {argv[1:2]}"
        )
    script = script_of(argv)
    if not script or "\x00" in script or PLACEHOLDER_RE.search(script):
        raise ValueError(f"command: the script must be a plain file name, but got {script!r}")
    if ".." in PurePosixPath(script).parts:
        raise ValueError(f"command: the script's path must not contain '..', but got {script!r}")
    start = 2 if argv[0] in INTERPRETERS else 1
    known = set(names)
    for arg in argv[start:]:
        for name in PLACEHOLDER_RE.findall(arg):
            if name not in known:
                raise ValueError(f"command: {{{name}}} is not a parameter of this study; known: {sorted(known)}")
    return argv


def check_allowed(argv: list[str], command_dirs: list[Path]) -> str | None:
    """The API's check of an absolute script against its own ``RNNTUNE_COMMAND_DIRS``: a reason
    to refuse the spec, or None. A relative script is resolved by each worker in its directories."""
    script = script_of(argv)
    if not os.path.isabs(script):
        # where this server sees the directories too: a name that is there but leads out of
        # them (a symlink) could never be run by a worker, so it would wait for ever
        return escape_reason(script, command_dirs)
    if resolve_script(script, command_dirs) is None:
        return (
            "an absolute script must lie inside the allowed command directories (RNNTUNE_COMMAND_DIRS); "
            "name it relative to them instead"
        )
    return None


def spec_errors(spec: Any, settings: Any) -> list[tuple[str, str]]:
    """This server's checks of a command spec (HTTP 422): an absolute script inside its
    ``RNNTUNE_COMMAND_DIRS``, a time limit within ``RNNTUNE_MAX_COMMAND_TIMEOUT_S``."""
    objective = spec.objective
    if objective is None or objective.command is None:
        return []
    errors = []
    reason = check_allowed(objective.command, parse_dirs(settings.command_dirs))
    if reason:
        errors.append(("objective.command", reason))
    if objective.timeout_s is not None and objective.timeout_s > settings.max_command_timeout_s:
        errors.append(
            (
                "objective.timeout_s",
                f"{objective.timeout_s:g} exceeds this server's limit "
                f"RNNTUNE_MAX_COMMAND_TIMEOUT_S={settings.max_command_timeout_s:g}",
            )
        )
    return errors


# --- a worker's side ----------------------------------------------------------------------------


def parse_dirs(value: str | None) -> list[Path]:
    """``RNNTUNE_COMMAND_DIRS`` (os.pathsep- or comma-separated) -> real directory paths."""
    if not value:
        return []
    parts = [p for chunk in value.split(os.pathsep) for p in chunk.split(",")]
    return [Path(os.path.realpath(p.strip())) for p in parts if p.strip()]


def resolve_script(script: str, command_dirs: list[Path]) -> Path | None:
    """The script's real path when it lies inside an allowed directory (symlinks followed), else
    None. A relative script is looked up in each directory in turn."""
    candidates = [Path(script)] if os.path.isabs(script) else [d / script for d in command_dirs]
    for candidate in candidates:
        real = Path(os.path.realpath(candidate))
        for d in command_dirs:
            base = Path(os.path.realpath(d))
            if (real == base or base in real.parents) and real.is_file():
                return real
    return None


def escape_reason(script: str, command_dirs: list[Path]) -> str | None:
    """Why a relative ``script`` that is present in an allowed directory may not run there: it
    leads out of them (a symlink, to a file or through a directory); None when it runs, or is
    not there at all (another worker may have it)."""
    if os.path.isabs(script) or not any(os.path.lexists(d / script) for d in command_dirs):
        return None
    if resolve_script(script, command_dirs) is not None:
        return None
    return (
        f"{script!r} leads out of the allowed command directories (RNNTUNE_COMMAND_DIRS), "
        "through a symlink or '..': no worker may run it"
    )


def build_argv(argv: list[str], params: dict[str, Any], script: Path) -> list[str]:
    """The child's argv: the resolved script and interpreter, ``{name}`` replaced by values."""

    def fill(arg: str) -> str:
        return PLACEHOLDER_RE.sub(lambda m: _text(params.get(m.group(1))), arg)

    if argv[0] in INTERPRETERS:
        program = sys.executable if argv[0] in ("python", "python3") else shutil.which(argv[0])
        if program is None:
            raise CommandFailed(f"interpreter {argv[0]!r} is not installed on this worker")
        return [program, str(script), *(fill(a) for a in argv[2:])]
    return [str(script), *(fill(a) for a in argv[1:])]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


@dataclass(frozen=True)
class CommandOptions:
    """What a worker's operator allowed: the directories, the default time limit, the grace
    period, the environment variables a child gets beyond the defaults (``service.child``)."""

    dirs: tuple[Path, ...] = ()
    timeout_s: float = 86400.0
    grace_s: float = 10.0
    env: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Any, extra_dirs: Iterable[str] = ()) -> CommandOptions:
        dirs = [*parse_dirs(settings.command_dirs), *(Path(os.path.realpath(d)) for d in extra_dirs)]
        return cls(
            tuple(dict.fromkeys(dirs)),
            settings.max_command_timeout_s,
            settings.command_grace_s,
            parse_patterns(settings.command_env),
        )

    def can_run(self, script: str) -> bool:
        """Whether this worker takes the study's trials: it runs the script, or the script is in
        its directories but leads out of them, and the trial fails the study saying so (rather
        than leave it waiting for a worker that never comes)."""
        dirs = list(self.dirs)
        return resolve_script(script, dirs) is not None or escape_reason(script, dirs) is not None
