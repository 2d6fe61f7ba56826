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


def holder(path):
    """The live writer of run directory ``path`` (a dict: ``pid``, ``host``, ``command``,
    ``since``), or ``None`` when there is none or its lock is stale."""
    try:
        with open(os.path.join(path, LOCK)) as f:
            owner = json.load(f)
        pid = int(owner["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no lock, or one its writer did not finish writing: not a live one
    if owner.get("host") != socket.gethostname():
        return owner  # another machine's process: it cannot be checked from here
    return owner if _alive(pid, owner.get("start")) else None


def _refuse(path, owner):
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("since", 0)))
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
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return me
    raise RunDirError(f"cannot take the lock {file}; another process keeps taking it")


def _release(path, me):
    file = os.path.join(path, LOCK)
    try:
        with open(file) as f:
            mine = json.load(f).get("pid") == me["pid"]
    except (OSError, ValueError, AttributeError):
        return
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
