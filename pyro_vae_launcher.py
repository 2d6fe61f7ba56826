"""The ``pyro-vae`` command's entry point, outside the package on purpose.

Importing ``pyro_vae`` imports torch and Pyro, which takes seconds; a Ctrl-C in those seconds
would end in a long KeyboardInterrupt traceback if the import ran in the generated script. Here it
runs inside a ``try``, and the command line proper (:func:`pyro_vae.cli.main`) handles Ctrl-C
from then on.
"""

import os
import sys
import threading


def main():
    try:
        from pyro_vae.cli import main as command
    except KeyboardInterrupt:
        print("pyro-vae: interrupted", file=sys.stderr)
        return 130
    code = command()
    _end_if_held(code)
    return code


def _end_if_held(code):
    """End now if a thread that is not a daemon would keep the finished command alive (a model
    file that starts one, say): its run is written and its output flushed, so nothing is lost."""
    others = [t for t in threading.enumerate() if t is not threading.main_thread()]
    if any(not t.daemon and t.is_alive() for t in others):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
