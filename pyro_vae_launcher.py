"""The ``pyro-vae`` command's entry point, outside the package on purpose.

Importing ``pyro_vae`` imports torch and Pyro, which takes seconds; a Ctrl-C in those seconds
would end in a long KeyboardInterrupt traceback if the import ran in the generated script. Here it
runs inside a ``try``, and the command line proper (:func:`pyro_vae.cli.main`) handles Ctrl-C
from then on.
"""

import sys


def main():
    try:
        from pyro_vae.cli import main as command
    except KeyboardInterrupt:
        print("pyro-vae: interrupted", file=sys.stderr)
        return 130
    return command()


if __name__ == "__main__":
    sys.exit(main())
