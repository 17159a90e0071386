"""One command trial's child process (:mod:`rnntune.service.trials.command` says what a command is and
which may run): start it under the reaper (``service.child``, ``service.reaper``) with the
trial's parameters file and the report pipe, read its reports from the pipe and its stdout
protocol, answer ``prune`` / ``continue``, enforce the time limit, and end it (SIGTERM to its
process group, SIGKILL after the grace period)."""

from __future__ import annotations

import collections
import contextlib
import json
import math
import os
import queue
import re
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnntune.reporting import (
    FINAL_PREFIX,
    PARAMS_ENV,
    REPLY_FD_ENV,
    REPORT_FD_ENV,
    REPORT_PREFIX,
)
from rnntune.service.trials.child import child_env, reaped

STDERR_TAIL_CHARS = 2000
_REPORT_LINE = re.compile(rf"^{REPORT_PREFIX}\s+step=(\S+)\s+value=(\S+)\s*$")
_FINAL_LINE = re.compile(rf"^{FINAL_PREFIX}\s+value=(\S+)\s*$")


class CommandFailed(Exception):
    """The child exited non-zero, timed out, or broke the report protocol: the trial fails."""


class CommandStopped(Exception):
    """The worker stopped the child (shutdown, cancel, pause, lost lease)."""


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
    sees the worker's environment only as far as :func:`~rnntune.service.trials.child.child_env` allows
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
    env = _env(params_file, report_w, reply_r, device, env_extra)
    try:
        child = _start(argv, cwd, env, report_w, reply_r)
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


def _env(params_file: str, report_w: int, reply_r: int, device: str, env_extra: Iterable[str]) -> dict[str, str]:
    """The child's environment: the allowed part of the worker's (``child_env``), the parameters
    file, the report pipe's ends and the worker's device."""
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
    return env


def _start(argv: list[str], cwd: Path, env: dict[str, str], report_w: int, reply_r: int) -> subprocess.Popen:
    """Start the child under the reaper, handing it the pipe's ends ``report_w`` and ``reply_r``,
    which this process then closes (started or not)."""
    try:
        return subprocess.Popen(
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
