"""The version, in one place: setup.cfg's, read back from the installed package's metadata."""

import importlib.metadata

try:
    __version__ = importlib.metadata.version("pyro_vae")
except importlib.metadata.PackageNotFoundError:  # a checkout on sys.path that was never installed
    __version__ = "0+unknown"
