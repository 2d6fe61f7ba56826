"""One writer per run directory, and nothing left behind by a run that fails before it starts.

``train`` and ``--resume`` write a run directory through :func:`writing`, which

- takes the directory's lock, a file ``.pyro-vae.lock`` holding the writer's process id, host,
  start time and command. A second writer is refused in one line naming the first; a lock whose
  process is gone (killed, or the machine restarted) is stale and is taken over;
- on an error before the run's first checkpoint, removes what this writer created (its
  ``config.json``, the directory itself if it made it), so the same command can simply be run
  again. Once a checkpoint exists everything stays, and ``--resume`` continues from it.
"""

import contextlib
import json
import os
import socket
import time

from .errors import RunDirError

LOCK = ".pyro-vae.lock"
CHECKPOINT = "checkpoint.pt"


def _start_time(pid):
    """The kernel's start time of process ``pid`` (clock ticks since boot), or ``None``: with the
    pid it names a process uniquely, so a recycled pid is not mistaken for the lock's owner."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid, start):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return start is None or _start_time(pid) in (None, start)


#: The largest process id a Linux kernel hands out (``/proc/sys/kernel/pid_max`` is at most this).
PID_MAX = 2**22


def _parse(text):
    """The lock's fields as :func:`_acquire` writes them, or ``None`` for anything else: the
    file is read like any other input a user or a crash may have left (a pid of -1 or 0 would
    name every process, one beyond the kernel's range overflows ``os.kill``)."""
    try:
        owner = json.loads(text)
    except ValueError:
        return None
    if not isinstance(owner, dict):
        return None
    pid, host, start = owner.get("pid"), owner.get("host"), owner.get("start")
    if type(pid) is not int or not 0 < pid <= PID_MAX or not isinstance(host, str):
        return None
    since = owner.get("since")
    numeric = isinstance(since, (int, float)) and not isinstance(since, bool)
    return {
        "pid": pid,
        "host": host,
        "start": start if type(start) is int and start >= 0 else None,
        "since": since if numeric and 0 <= since < 1e11 else None,
        "command": owner["command"] if isinstance(owner.get("command"), str) else "train",
    }


def holder(path):
    """The live writer of run directory ``path`` (a dict: ``pid``, ``host``, ``command``,
    ``since``), or ``None`` when there is none or its lock is stale (its process is gone, or
    the file is not a lock this library wrote: empty, half-written, edited)."""
    try:
        with open(os.path.join(path, LOCK), errors="replace") as f:
            owner = _parse(f.read(65536))
    except OSError:
        return None  # no lock
    if owner is None:
        return None
    if owner["host"] != socket.gethostname():
        return owner  # another machine's process: it cannot be checked from here
    return owner if _alive(owner["pid"], owner["start"]) else None


def _refuse(path, owner):
    when = owner.get("since")
    since = (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
        if when is not None
        else "an unknown time"
    )
    hint = (
        "wait for it to end or stop it, then try again"
        if owner.get("host") == socket.gethostname()
        else f"if that process is gone, delete {os.path.join(path, LOCK)}"
    )
    raise RunDirError(
        f"{path} is being written by process {owner['pid']} on {owner.get('host')} "
        f"(pyro-vae {owner.get('command', 'train')}, since {since}); {hint}"
    )


def _acquire(path, command):
    file = os.path.join(path, LOCK)
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "start": _start_time(os.getpid()),
        "since": time.time(),
        "command": command,
    }
    for _ in range(3):
        try:
            fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            owner = holder(path)
            if owner is not None:
                _refuse(path, owner)
            with contextlib.suppress(FileNotFoundError):  # stale: its process is gone
                os.unlink(file)
            continue
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
        except BaseException:  # a full disk, say: leave no empty lock behind
            with contextlib.suppress(OSError):
                os.unlink(file)
            raise
        return me
    raise RunDirError(f"cannot take the lock {file}; another process keeps taking it")


def _release(path, me):
    file = os.path.join(path, LOCK)
    try:
        with open(file, errors="replace") as f:
            owner = _parse(f.read(65536))
    except OSError:
        return
    mine = owner is not None and owner["pid"] == me["pid"]
    if mine:
        with contextlib.suppress(OSError):
            os.unlink(file)


def _contents(path):
    return set(os.listdir(path)) - {LOCK} if os.path.isdir(path) else set()


@contextlib.contextmanager
def writing(path, overwrite=False, resume=False, command="train"):
    """Make ``path`` ready for one writer and hold its lock while the body runs.

    Without ``resume``, ``path`` must be missing or empty (or ``overwrite`` given); with
    ``resume``, it must exist. On an exception before ``path`` holds a checkpoint, the files and
    folder this writer created are removed again.

    :raises RunDirError: another live process writes ``path``, or ``path`` would be overwritten.
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise RunDirError(f"{path} exists and is not a directory")
    owner = holder(path) if os.path.isdir(path) else None
    if owner is not None:
        _refuse(path, owner)
    before = _contents(path)
    if before and not (overwrite or resume):
        raise RunDirError(
            f"{path} exists and is not empty; pass --overwrite or choose another --out"
        )
    created = [] if os.path.isdir(path) else _missing_parents(path)
    os.makedirs(path, exist_ok=True)
    try:
        me = _acquire(path, command)
    except BaseException:
        _remove(path, before, created)
        raise
    try:
        yield path
    except BaseException:
        _release(path, me)
        if not os.path.exists(os.path.join(path, CHECKPOINT)):
            _remove(path, before, created)
        raise
    _release(path, me)


def _missing_parents(path):
    """``path`` and those of its parents that do not exist yet, deepest first."""
    missing, path = [], os.path.abspath(path)
    while path and not os.path.exists(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return missing


def _remove(path, before, created):
    """Remove what a failed writer made: the new names in ``path`` and the folders it created."""
    with contextlib.suppress(OSError):
        for name in _contents(path) - before:
            target = os.path.join(path, name)
            if os.path.isfile(target) or os.path.islink(target):
                os.unlink(target)
    for folder in created:
        with contextlib.suppress(OSError):
            os.rmdir(folder)  # only if empty: never what a user put there
