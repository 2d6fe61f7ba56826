"""What a user installs: every import of the library is declared, optional ones stay optional.

The install itself (a wheel into a clean virtual environment, every command from it) is checked
by ``.ci/wheel-check``, which CI runs; these tests keep the declarations honest on every run.
"""

import ast
import configparser
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "pyro_vae")

#: Import names whose distribution on PyPI has another name.
DISTRIBUTIONS = {"PIL": "pillow", "pyro": "pyro-ppl"}

#: Modules of the package that are maintenance scripts, not library code: what they import is a
#: developer's (the ``dev`` extra), never a user's.
SCRIPTS = {os.path.join("_embedded", "make_mnist_small.py")}


def _requirements():
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))

    def names(text):
        return {
            re.split(r"[<>=!~\[; ]", line.strip(), maxsplit=1)[0].lower()
            for line in text.splitlines()
            if line.strip() and not line.strip().startswith("#")
        }

    extras = {name: names(text) for name, text in cfg["options.extras_require"].items()}
    return names(cfg["options"]["install_requires"]), extras


def _imports(path):
    """``{top-level module: how}`` of the third-party imports in ``path``: ``"top"`` (run when
    the module is imported), ``"guarded"`` (at module level in a ``try`` that turns the
    ImportError into an error of ours) or ``"lazy"`` (inside a function)."""
    tree = ast.parse(open(path).read())
    how = {id(node): "top" for node in tree.body}
    for node in tree.body:  # imports inside a module-level try/if still run at import time
        if isinstance(node, ast.If):
            how.update({id(n): "top" for n in ast.walk(node)})
        elif isinstance(node, ast.Try):
            guarded = any(
                isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                for h in node.handlers
            )
            for stmt in node.body:
                how.update({id(n): "guarded" if guarded else "top" for n in ast.walk(stmt)})
    rank = {"lazy": 0, "guarded": 1, "top": 2}
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            mods = [node.module]
        else:
            continue
        for mod in mods:
            name = mod.split(".")[0]
            if name not in sys.stdlib_module_names:
                new = how.get(id(node), "lazy")
                old = found.get(name, "lazy")
                found[name] = new if rank[new] > rank[old] else old
    return found


def _library_imports():
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for f in files:
            path = os.path.join(folder, f)
            if f.endswith(".py") and os.path.relpath(path, PACKAGE) not in SCRIPTS:
                for name, how in _imports(path).items():
                    found.setdefault(name, []).append((os.path.relpath(path, ROOT), how))
    return found


def test_every_import_of_the_library_is_a_declared_dependency():
    required, extras = _requirements()
    optional = set().union(*extras.values())
    for name, places in _library_imports().items():
        dist = DISTRIBUTIONS.get(name, name).lower()
        assert dist in required | optional, f"{name} ({places[0][0]}) is not in setup.cfg"
        if dist in required:
            continue
        # An extra: imported where the one feature needing it runs, or at the top of that
        # feature's own module behind a one-line error that names the extra to install.
        owners = [e for e, names in extras.items() if dist in names and e not in ("dev", "test")]
        for path, how in places:
            assert how != "top", f"{name} is optional but imported when {path} is imported"
            if how == "guarded":
                text = open(os.path.join(ROOT, path)).read()
                assert any(f"pip install 'pyro_vae[{e}]'" in text for e in owners), path


def test_the_maintenance_script_imports_only_what_the_dev_extra_installs():
    required, extras = _requirements()
    for path in SCRIPTS:
        for name in _imports(os.path.join(PACKAGE, path)):
            dist = DISTRIBUTIONS.get(name, name).lower()
            assert dist in required | extras["dev"], f"{name} ({path}) is not in the dev extra"


def test_the_embedded_data_is_package_data():
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    patterns = cfg["options.package_data"]["pyro_vae._embedded"].replace(",", " ").split()
    embedded = [f for f in os.listdir(os.path.join(PACKAGE, "_embedded")) if not f.endswith(".py")]
    assert embedded
    for f in embedded:
        assert any(re.fullmatch(p.replace(".", r"\.").replace("*", ".*"), f) for p in patterns), f


#: Not imported by any command's help. (graphviz is missing here: Pyro itself imports it where it
#: is installed, for ``pyro.render_model``, and goes on without it where it is not.)
OPTIONAL = ("lightning", "scipy", "mlxtend", "torchvision", "matplotlib")


def imports_of(argvs, modules=OPTIONAL):
    """Which of ``modules`` a fresh process has imported after running ``pyro_vae.cli.main`` on
    each argv of ``argvs`` (a Python expression, in which ``commands`` is the list of
    subcommands), and those subcommands. A usage error (exit != 0) fails the test."""
    code = (
        "import sys\n"
        "from pyro_vae.cli import main, make_parser\n"
        "commands = list(make_parser()._subparsers._group_actions[0].choices)\n"
        f"for argv in {argvs}:\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, (argv, e.code)\n"
        f"print(sorted(m for m in {tuple(modules)!r} if m in sys.modules), ','.join(commands))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": ROOT},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    imported, commands = result.stdout.strip().splitlines()[-1].rsplit(" ", 1)
    return imported, commands.split(",")


@pytest.mark.parametrize("first", ["--help", "--version"])
def test_no_command_help_imports_an_optional_or_slow_dependency(first):
    """Every subcommand's ``--help`` (and ``--version``) runs without the extras: a user
    without ``pyro_vae[distributed]`` or Graphviz still reads every command's help."""
    imported, commands = imports_of(f"[[{first!r}]] + [[c, '--help'] for c in commands]")
    assert imported == "[]", imported
    assert {"train", "evaluate", "sample", "semi"} <= set(commands), commands


def test_the_version_is_the_package_metadata():
    import importlib.metadata

    import pyro_vae
    from pyro_vae.checkpoints import versions

    assert pyro_vae.__version__ == importlib.metadata.version("pyro_vae")
    assert versions()["pyro_vae"] == pyro_vae.__version__
