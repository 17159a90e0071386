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
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from rnntune.reporting import (
    FINAL_PREFIX,
    PARAMS_ENV,
    REPLY_FD_ENV,
    REPORT_FD_ENV,
    REPORT_PREFIX,
)
from rnntune.service.child import child_env, parse_patterns, reaped

# Bare program names that run the script given as their first argument. "python" and "python3"
# are the worker's own interpreter (so ``from rnntune import report`` works in the child).
INTERPRETERS = ("python", "python3", "Rscript", "julia", "node", "bash", "sh")
PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
MAX_ARGS = 256
STDERR_TAIL_CHARS = 2000
_REPORT_LINE = re.compile(rf"^{REPORT_PREFIX}\s+step=(\S+)\s+value=(\S+)\s*$")
_FINAL_LINE = re.compile(rf"^{FINAL_PREFIX}\s+value=(\S+)\s*$")


class CommandFailed(Exception):
    """The child exited non-zero, timed out, or broke the report protocol: the trial fails."""


class CommandStopped(Exception):
    """The worker stopped the child (shutdown, cancel, pause, lost lease)."""


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


def cuda_visible(device: str, inherited: str | None = None) -> str | None:
    """``CUDA_VISIBLE_DEVICES`` for the child: the worker's device, in the ids the worker itself
    sees (``inherited``: its own ``CUDA_VISIBLE_DEVICES``; "cuda:1" under "4,5" is "5"); "cpu" ->
    "" (no GPU); "cuda" -> unchanged (None)."""
    if device == "cpu":
        return ""
    if not device.startswith("cuda:"):
        return None
    index = device.split(":", 1)[1]
    ids = [v.strip() for v in (inherited or "").split(",") if v.strip()]
    if ids and index.isdigit() and int(index) < len(ids):
        return ids[int(index)]
    return index


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


@dataclass
class CommandResult:
    state: str  # "COMPLETE" / "PRUNED"
    value: float | None
    steps: int
    seconds: float
    stderr_tail: str = field(default="", repr=False)


def run(
    argv: list[str],
    params: dict[str, Any],
    *,
    cwd: Path,
    device: str,
    on_report: Callable[[int, float], bool],
    stop: threading.Event,
    timeout_s: float,
    grace_s: float = 5.0,
    env_extra: Iterable[str] = (),
) -> CommandResult:
    """Run one trial's child to its end. ``on_report(step, value)`` records a step and answers
    whether to prune; pruning, ``stop`` and the time limit end the child (SIGTERM to its process
    group, SIGKILL after ``grace_s``); its exit, or the worker's death, ends whatever it started
    (``service.reaper``, the child's direct parent). The child
    sees the worker's environment only as far as :func:`~rnntune.service.child.child_env` allows
    (``env_extra``: the operator's ``RNNTUNE_COMMAND_ENV``). Raises :class:`CommandFailed` (non-zero exit, time limit,
    no value) or :class:`CommandStopped`; an exception from ``on_report`` propagates after the
    child is gone."""
    started = time.monotonic()
    events: queue.Queue = queue.Queue()
    stderr_tail: collections.deque[str] = collections.deque(maxlen=200)
    report_r, report_w = os.pipe()
    reply_r, reply_w = os.pipe()
    with tempfile.NamedTemporaryFile("w", prefix="rnntune-params-", suffix=".json", delete=False) as f:
        json.dump(params, f)
        params_file = f.name
    env = {
        **child_env(os.environ, env_extra),
        PARAMS_ENV: params_file,
        REPORT_FD_ENV: str(report_w),
        REPLY_FD_ENV: str(reply_r),
        "PYTHONUNBUFFERED": "1",
    }
    visible = cuda_visible(device, os.environ.get("CUDA_VISIBLE_DEVICES"))
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    try:
        try:
            child = subprocess.Popen(
                reaped(argv, (report_w, reply_r)),  # ends what the script starts, with the worker too
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(report_w, reply_r),
                start_new_session=True,  # its own process group: stopping it stops what it started
            )
        except OSError as exc:
            raise CommandFailed(f"could not start {argv[0]!r}: {exc.strerror or exc}") from exc
        finally:
            os.close(report_w)
            os.close(reply_r)
        readers = [
            threading.Thread(target=_read_pipe, args=(report_r, events), daemon=True),
            threading.Thread(target=_read_stdout, args=(child.stdout, events), daemon=True),
            threading.Thread(target=_read_stderr, args=(child.stderr, stderr_tail), daemon=True),
        ]
        for t in readers:
            t.start()
        try:
            return _supervise(child, events, readers, reply_w, stderr_tail, on_report, stop, timeout_s, started)
        finally:
            _terminate(child, grace_s)
            for t in readers:
                t.join(timeout=2)
    finally:
        os.close(reply_w)
        with contextlib.suppress(OSError):
            os.close(report_r)
        Path(params_file).unlink(missing_ok=True)


def _supervise(child, events, readers, reply_w, stderr_tail, on_report, stop, timeout_s, started) -> CommandResult:
    steps, last, final = 0, None, None
    deadline = started + timeout_s
    while True:
        if stop.is_set():
            raise CommandStopped("the worker stopped the command")
        if time.monotonic() > deadline:
            raise CommandFailed(f"the command ran past its time limit of {timeout_s:g} s (objective.timeout_s)")
        try:
            source, message = events.get(timeout=0.1)
        except queue.Empty:
            if child.poll() is not None and not any(t.is_alive() for t in readers[:2]) and events.empty():
                break  # exited, and every report it wrote has been read
            continue
        if "final" in message:
            final = message["final"]
            continue
        step, value = message["step"], message["value"]
        if not math.isfinite(value):
            raise CommandFailed(f"reported a non-finite value {value} at step {step}")
        steps, last = steps + 1, value
        prune = on_report(step, value)
        if source == "pipe":
            _reply(reply_w, "prune" if prune else "continue")
        if prune:
            return CommandResult("PRUNED", None, steps, time.monotonic() - started, "".join(stderr_tail))
    seconds = time.monotonic() - started
    code = child.wait()
    tail = "".join(stderr_tail)[-STDERR_TAIL_CHARS:]
    if code != 0:
        how = f"signal {-code}" if code < 0 else f"code {code}"
        raise CommandFailed(f"the command exited with {how}; stderr: {tail.strip() or '(empty)'}")
    value = final if final is not None else last
    if value is None:
        raise CommandFailed("the command exited without reporting a value (report(step, value) or final(value))")
    if not math.isfinite(value):
        raise CommandFailed(f"the command's final value is {value}")
    return CommandResult("COMPLETE", float(value), steps, seconds, tail)


def _reply(fd: int, answer: str) -> None:
    with contextlib.suppress(OSError):  # the child is gone; its exit code says the rest
        os.write(fd, (answer + "\n").encode())


def _read_pipe(fd: int, events: queue.Queue) -> None:
    with os.fdopen(fd, "r", encoding="utf-8", errors="replace", closefd=False) as f:
        for line in f:
            message = _parse_json(line)
            if message is not None:
                events.put(("pipe", message))


def _parse_json(line: str) -> dict | None:
    try:
        message = json.loads(line)
    except ValueError:
        return None
    if not isinstance(message, dict):
        return None
    try:
        if "final" in message:
            return {"final": float(message["final"])}
        return {"step": int(message["step"]), "value": float(message["value"])}
    except (KeyError, TypeError, ValueError):
        return None


def _read_stdout(stream, events: queue.Queue) -> None:
    for raw in stream:
        line = raw.decode("utf-8", errors="replace").strip()
        message = None
        if line.startswith(REPORT_PREFIX):
            m = _REPORT_LINE.match(line)
            if m:
                try:
                    message = {"step": int(m.group(1)), "value": float(m.group(2))}
                except ValueError:
                    message = None
        elif line.startswith(FINAL_PREFIX):
            m = _FINAL_LINE.match(line)
            if m:
                try:
                    message = {"final": float(m.group(1))}
                except ValueError:
                    message = None
        if message is not None:
            events.put(("stdout", message))


def _read_stderr(stream, tail: collections.deque) -> None:
    for raw in stream:
        tail.append(raw.decode("utf-8", errors="replace"))


def _terminate(child: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM the child's process group, SIGKILL it after ``grace_s`` (no-op once it exited)."""
    if child.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            return
        try:
            child.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue
