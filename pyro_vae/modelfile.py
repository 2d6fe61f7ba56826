"""Your own model file: ``pyro-vae train --model FILE.py[:NAME]``.

Write the model (and, if you like, its guide) the way Pyro's documentation writes them; the door
(:mod:`pyro_vae.program`) learns the rest by running them. Any of these is taken as it is:

- a class whose instances have ``model`` and ``guide``: ``PyroModule`` objects, plain functions,
  or methods of an ``nn.Module`` that owns the networks (Pyro's VAE tutorial class, with
  ``pyro.module("decoder", self.decoder)`` inside ``model(x)``) -- ``FILE.py:VAE``;
- a module-level pair of functions ``model`` and ``guide`` -- ``FILE.py`` finds them,
  ``FILE.py:my_model,my_guide`` names them;
- a factory function returning ``(model, guide)`` -- ``FILE.py:make``;
- a model alone (a class instance that is callable, a function, or a file without ``guide``): it
  is then trained by variational EM with a per-image guide (:class:`~pyro_vae.guides.LocalGuide`)
  and everything works except what needs an encoder.

A class or factory is called with whichever of ``x_shape``, ``z_dim``, ``hidden_dims``,
``num_classes`` and ``condition`` its signature accepts (``--z-dim``, ``--hidden-dims``, the
data's image shape and number of classes, ``--condition``); the others keep their defaults. A
size the command line leaves unset is not passed where the signature has a default for it
(``VAE(z_dim=20)`` keeps its 20), and is pyro_vae's default (50, 400) where it has none.

The model samples its image site with ``obs=x`` inside a plate over the images (any names, with
or without a size: ``pyro.plate("data")`` as Pyro's examples write it); it may take the images
as ``(B, C, H, W)`` or flattened. A second input follows Pyro's convention, ``model(xs,
ys=None)`` with ``None`` for "not observed": a model file is called with ``ys=None``, and the
door records what ``ys`` would be (class labels at the site it observes, one-hot or indices; an
image) in ``model.structure.y``. With ``--labels N`` (a program that observes a class site),
labelled images are passed their ``ys`` in that site's form and the others ``ys=None``, each in a
call of its own (:class:`pyro_vae.semi.SemiSupervisedLoss`); a class that also defines
``model_classify(xs, ys)`` and ``guide_classify(xs, ys)`` (Pyro's SS-VAE example) gets them
called on the labelled images as the classification term ``--alpha`` weighs. With
``--condition label`` every call passes ``ys``, the labels in the form the program takes
(indices, else one-hot); with ``--condition quadrants:N`` the image to complete, in pyro_vae's
form (``model(x, y)``, ``y`` the whole image) or Pyro's CVAE example's (``model(xs, ys)``, the
hidden pixels of ``xs`` and the observed ones of ``ys`` set to -1), whichever the program runs
in (:data:`pyro_vae.program.IMAGE_FORMS`); a program that reads neither is refused.
Optional extras buy more: ``idx`` and ``size`` parameters (``pyro_vae.data_plate(x, idx, size)``)
let the program subsample its own plate; ``model.x_dist(z)``/``guide.z_dist(x)`` as in the
built-in model are used where present. ``examples/`` holds complete files;
:func:`check_protocol` runs a model and guide on a few images and names what is wrong.
"""

import contextlib
import importlib.util
import inspect
import os
import sys
from unittest import mock

import torch
from pyro import poutine

from .errors import ModelFileError

CONSTRUCTOR_ARGS = ("x_shape", "z_dim", "hidden_dims", "num_classes", "condition")
#: What a constructor that needs a size the run leaves unset is given (the built-in VAE's).
UNSET_SIZES = {"z_dim": 50, "hidden_dims": (400,)}


def split_spec(spec):
    """``(path, names)`` of ``FILE.py``, ``FILE.py:NAME`` or ``FILE.py:MODEL,GUIDE``."""
    if spec.endswith(".py"):
        return spec, ()
    path, _, names = spec.rpartition(":")
    return path, tuple(n for n in names.split(",") if n)


def load_module(path):
    """Import the file ``path`` as a module of its own."""
    if not os.path.isfile(path):
        raise ModelFileError(f"model file {path} does not exist")
    module_name = f"pyro_vae_user_{abs(hash(os.path.abspath(path)))}"
    loader = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(loader)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up by name
    cwd, dtype = os.getcwd(), torch.get_default_dtype()
    try:
        loader.loader.exec_module(module)
    except SystemExit as e:
        raise ModelFileError(f"{path} called sys.exit({e.code!r}) while loading") from None
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            raise
        raise ModelFileError(
            f"{path} failed to load: {type(e).__name__}: {_first_line(e)}"
        ) from None
    finally:
        # A file that changes the working directory as it loads would move every relative path
        # of the run (its --out, its lock) somewhere else.
        if os.getcwd() != cwd:
            os.chdir(cwd)
    if torch.get_default_dtype() != dtype:
        changed = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        raise ModelFileError(
            f"{path} changed torch's default dtype to {str(changed).replace('torch.', '')} as it "
            f"loaded; pyro_vae trains in {str(dtype).replace('torch.', '')}: remove "
            "torch.set_default_dtype from the file"
        )
    return module


def _get(module, path, name):
    if not hasattr(module, name):
        found = sorted(
            n
            for n, v in vars(module).items()
            if callable(v)
            and not n.startswith("_")
            and getattr(v, "__module__", None) == module.__name__
        )
        raise ModelFileError(
            f"{path} defines no {name!r} (it defines: {', '.join(found) or 'nothing'})"
        )
    return getattr(module, name)


def load_program(spec, x_shape, z_dim, hidden_dims, num_classes=10, condition="none"):
    """``(model, guide, owner)`` from a model file; ``guide`` is ``None`` for a model alone and
    ``owner`` the ``nn.Module`` that holds both halves' networks, if any. ``condition`` is the
    run's ``--condition`` (``"none"``, ``"label"``, ``"quadrants:N"``)."""
    path, names = split_spec(spec)
    module = load_module(path)
    # Sizes left unset (None) are passed only to a constructor without a default of its own for
    # them, as pyro_vae's defaults: one with a default keeps it.
    unset = {
        name for name, value in (("z_dim", z_dim), ("hidden_dims", hidden_dims)) if value is None
    }
    kwargs = {
        "x_shape": tuple(x_shape),
        "z_dim": UNSET_SIZES["z_dim"] if z_dim is None else z_dim,
        "hidden_dims": tuple(UNSET_SIZES["hidden_dims"] if hidden_dims is None else hidden_dims),
        "num_classes": num_classes,
        "condition": condition,
    }
    if not names:
        if not callable(getattr(module, "model", None)):
            raise ModelFileError(
                f"{path} defines no function 'model'; name what to use: {path}:NAME "
                f"(a class or factory) or {path}:MODEL,GUIDE"
            )
        return module.model, getattr(module, "guide", None), None
    if len(names) == 2:
        return _get(module, path, names[0]), _get(module, path, names[1]), None
    name = names[0]
    obj = _get(module, path, name)
    if isinstance(obj, type) or _is_factory(obj):
        obj = _construct(obj, name, kwargs, unset)
        if isinstance(obj, tuple):
            if len(obj) != 2:
                raise ModelFileError(f"{name}(...) returned {len(obj)} things, not (model, guide)")
            return obj[0], obj[1], None
    if hasattr(obj, "model"):
        owner = obj if isinstance(obj, torch.nn.Module) else None
        return obj.model, getattr(obj, "guide", None), owner
    if callable(obj):
        return obj, None, None
    raise ModelFileError(
        f"{path}:{name} is neither a model, a class or factory of one, nor has .model and .guide"
    )


def _is_factory(fn):
    """A function whose parameters are all constructor arguments or optional: a factory."""
    if not inspect.isfunction(fn):
        return False
    params = inspect.signature(fn).parameters.values()
    return all(
        p.name in CONSTRUCTOR_ARGS
        or p.default is not inspect.Parameter.empty
        or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        for p in params
    )


def _construct(cls, name, kwargs, unset=()):
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        params = {}
    takes_all = any(p.kind == p.VAR_KEYWORD for p in params.values())
    own_default = {
        k for k in unset if k not in params or params[k].default is not inspect.Parameter.empty
    }
    given = {k: v for k, v in kwargs.items() if (takes_all or k in params) and k not in own_default}
    required = [
        p.name
        for p in params.values()
        if p.default is inspect.Parameter.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and p.name not in given
    ]
    if required:
        raise ModelFileError(
            f"{name}(...) needs {', '.join(required)}, which pyro_vae cannot give: it calls it "
            f"with whichever of {', '.join(CONSTRUCTOR_ARGS)} its signature accepts"
        )
    try:
        with _run_seed_mixed_in(name):
            return cls(**given)
    except Exception as e:
        shown = ", ".join(given) or "no arguments"
        raise ModelFileError(f"{name}({shown}) failed: {_first_line(e)}") from None


@contextlib.contextmanager
def _run_seed_mixed_in(name):
    """A constructor that seeds torch's global generator itself (``torch.manual_seed(1)``, as
    some libraries' classes do) would start every run from the same weights, whatever its
    ``--seed``: while it runs, each seed it sets is combined with the run's (torch's seed when
    construction started), so a run's seed still chooses the weights and the same seed gives the
    same ones; a line on stderr says so."""
    run_seed, original, asked = torch.initial_seed(), torch.random.manual_seed, []

    def mixed(seed):
        asked.append(int(seed))
        return original((int(seed) * 1_000_003 + run_seed) % 2**63)

    with (
        mock.patch.object(torch, "manual_seed", mixed),
        mock.patch.object(torch.random, "manual_seed", mixed),
    ):
        yield
    if asked:
        print(
            f"pyro_vae: {name}(...) seeds torch's random generator itself "
            f"(torch.manual_seed({asked[0]})); its seed is combined with the run's, so --seed "
            "still chooses the initial weights",
            file=sys.stderr,
            flush=True,
        )


def _first_line(e):
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


@torch.no_grad()
def check_protocol(model, guide, x, y=None):
    """Run ``model`` and ``guide`` on images ``x`` and raise :class:`ModelFileError` naming the first
    thing pyro_vae cannot work with; return the model and guide traces (the model replayed on the
    guide). ``model`` and ``guide`` may be anything :mod:`pyro_vae.modelfile` accepts, or the
    halves of a :class:`~pyro_vae.program.Program`."""
    from .program import Half, Program  # the door imports this module's errors

    if not isinstance(model, Half):
        model = Program(model, guide, x, y).model
        guide = model.program.guide
    with torch.random.fork_rng():
        guide_trace = poutine.trace(guide).get_trace(x, y)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, y)
    return model_trace, guide_trace
