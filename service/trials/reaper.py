"""The command child's direct parent: starts the script and ends everything it started.

``python -I -S reaper.py PARENT_PID FD,FD -- ARGV...``, started by the worker
(``service.command.run``) as the leader of a new process group. The kernel signals the parent's
death to the direct child only (``PR_SET_PDEATHSIG``), so a process the script starts (``sleep
1000 &``, a ``subprocess`` of its own, a daemon that called ``setsid``) would outlive a ``kill
-9``ed worker. This process is the one that notices:

- the script runs in this process's group (the worker stops a trial by signalling that group,
  SIGTERM then SIGKILL; this process waits through a SIGTERM), and this process is a *child
  subreaper* (``PR_SET_CHILD_SUBREAPER``): the script's orphans, even those that left the group,
  are re-parented to it rather than to init;
- when the worker dies (``PR_SET_PDEATHSIG`` delivers SIGUSR1 here; where there is none, a
  thread polls the parent's pid) it SIGKILLs the rest of its group and every process re-parented
  to it, until it has no child left;
- when the script exits on its own, whatever it left running is ended the same way (a trial is
  over when its script is), and this process exits with the script's status (a signal's death is
  passed on as the same signal).

Standard library only, and run with ``-I -S``: it must start fast and import nothing of the
user's (``PYTHONPATH``, site-packages); the script gets the environment it was given unchanged.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PR_SET_CHILD_SUBREAPER = 36
CLEANUP_S = 5.0  # the longest it keeps killing re-parented processes (a fork loop cannot hold it)


class ParentDied(Exception):
    """The worker that started this process is gone."""


def _prctl(option: int, value: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0) == 0


_dying = False


def _on_parent_death(signum: int, frame: object) -> None:
    # Once only: the signal comes again when the worker's other threads exit after the one that
    # started this process (each re-parenting sends it), and the cleanup must not be cut short.
    global _dying
    if not _dying:
        _dying = True
        raise ParentDied


def _watch_parent(parent: int) -> None:
    """Where the kernel has no parent-death signal: look every half second."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGUSR1)


def _others(group: int) -> list[int]:
    """Pids of the script's process group (but this process) and of this process's children
    (the script, and orphans re-parented here, which may have left the group)."""
    me = os.getpid()
    out: list[int] = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for name in names:
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rpartition(b")")[2].split()  # state ppid pgrp ...
        except OSError:
            continue
        if len(fields) > 2 and (int(fields[1]) == me or int(fields[2]) == group):
            out.append(int(name))
    return out


def end_all(group: int) -> None:
    """SIGKILL every other process of the group and every child (re-parented orphans included),
    reaping them, until no child is left or CLEANUP_S has passed. The group is this process's
    own, so it is killed member by member (``killpg`` would end this process first)."""
    deadline = time.monotonic() + CLEANUP_S
    while time.monotonic() < deadline:
        for pid in _others(group):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            return  # no child left: everything the script started is gone
        time.sleep(0.01)


def _exit_like(returncode: int) -> None:
    """Exit with the script's status; a script killed by a signal: die of the same signal."""
    if returncode < 0:
        signal.signal(-returncode, signal.SIG_DFL)
        os.kill(os.getpid(), -returncode)
        time.sleep(1)  # (a signal that does not end a process by default)
        os._exit(128 - returncode)
    os._exit(returncode)


def main(argv: list[str]) -> None:
    parent, fds, _, *command = argv
    signal.signal(signal.SIGUSR1, _on_parent_death)
    # the worker's SIGTERM reaches the script through the group: this process waits for it to end
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    signal.signal(signal.SIGINT, lambda signum, frame: None)
    if not _prctl(PR_SET_PDEATHSIG, signal.SIGUSR1):
        threading.Thread(target=_watch_parent, args=(int(parent),), daemon=True).start()
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    group = os.getpgrp()
    try:
        if os.getppid() != int(parent):  # the worker died before the signal was armed
            raise ParentDied
        pass_fds = tuple(int(fd) for fd in fds.split(",") if fd)
        try:
            child = subprocess.Popen(command, pass_fds=pass_fds, stdin=subprocess.DEVNULL)
        except OSError as exc:
            print(f"could not start {command[0]!r}: {exc.strerror or exc}", file=sys.stderr, flush=True)
            os._exit(127)
        for fd in pass_fds:  # the script's ends of the pipes are the script's alone
            os.close(fd)
        returncode = child.wait()
    except ParentDied:
        end_all(group)
        os._exit(128 + signal.SIGKILL)
    end_all(group)  # what the script left behind; the worker's SIGTERM / SIGKILL also ends here
    _exit_like(returncode)


if __name__ == "__main__":
    main(sys.argv[1:])
