"""Your own model file: ``pyro-vae train --model path/to/file.py:MyVAE``.

The protocol. The file defines ``MyVAE``, called as ``MyVAE(x_shape=(C, H, W), z_dim=...,
hidden_dims=(...))`` (the run's ``--z-dim`` and ``--hidden-dims``); the object it returns has two
attributes:

- ``model``: a ``torch.nn.Module`` (a ``PyroModule``) called as ``model(x=None, y=None, idx=None,
  size=None)``. It samples the latent site ``"z"`` (and any others) and the image site ``"x"``,
  observed as ``obs=x``, inside :func:`pyro_vae.data_plate` (``with data_plate(x, idx, size):``),
  so minibatches are scaled to the dataset and per-datapoint guides get ``idx``. ``x`` is a batch
  ``(B, C, H, W)`` of pixels in [0, 1] (binarized unless ``--binarize none``); ``y`` holds the
  batch's integer labels ``(B,)`` (ignore it, or condition on it); with ``x=None`` the model
  generates ``size`` images (``"x"`` must then have a mean: its distribution's ``.mean``).
  The ``"x"`` site's distribution has batch shape ``(B,)`` and event shape ``(C, H, W)``.
- ``guide``: a ``torch.nn.Module`` with the same signature that samples every latent site of the
  model, with the same shapes, in the same ``"data"`` plate.

Optionally ``model.x_dist(z)`` and ``guide.z_dist(x)`` (distributions, as the built-in model has)
give the reconstruction and latent-space figures; with ``model.z_dim`` too, ``pyro-vae compare``
can compare inference strategies on the model. ``examples/gmm_prior_vae.py`` is a complete file.
:func:`check_protocol` runs the model and guide on a few images and names what is wrong.
"""

import importlib.util
import os
import sys

import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from .errors import ModelFileError

BUILT_IN_ONLY = {
    "likelihood": "bernoulli",
    "sigma": None,
    "net": "mlp",
    "condition": "none",
    "learned_prior": False,
    "z1_dim": None,
    "beta": 1.0,
    "kl_warmup": 0,
}


def load_class(spec):
    """The object ``CLASS`` that ``FILE.py:CLASS`` names, loaded from the file."""
    path, _, name = spec.rpartition(":")
    if not os.path.isfile(path):
        raise ModelFileError(f"model file {path} does not exist")
    module_name = f"pyro_vae_user_{abs(hash(os.path.abspath(path)))}"
    loader = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(loader)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up by name
    try:
        loader.loader.exec_module(module)
    except Exception as e:
        raise ModelFileError(
            f"{path} failed to load: {type(e).__name__}: {_first_line(e)}"
        ) from None
    if not hasattr(module, name):
        found = sorted(
            n for n, v in vars(module).items() if isinstance(v, type) and not n.startswith("_")
        )
        raise ModelFileError(
            f"{path} defines no {name!r} (it defines: {', '.join(found) or 'nothing'})"
        )
    return getattr(module, name)


def build_from_file(config, x_shape):
    """``(model, guide)`` from the file ``config.model`` names."""
    changed = [k for k, v in BUILT_IN_ONLY.items() if getattr(config, k) != v]
    if changed:
        raise ModelFileError(
            f"{', '.join(changed)} configure the built-in models; a model file defines its own "
            "(pass only --z-dim and --hidden-dims to it)"
        )
    cls = load_class(config.model)
    name = config.model.rpartition(":")[2]
    try:
        vae = cls(x_shape=tuple(x_shape), z_dim=config.z_dim, hidden_dims=tuple(config.hidden_dims))
    except Exception as e:
        raise ModelFileError(
            f"{name}(x_shape, z_dim, hidden_dims) failed: {_first_line(e)}"
        ) from None
    for part in ("model", "guide"):
        if not isinstance(getattr(vae, part, None), torch.nn.Module):
            raise ModelFileError(
                f"{name}(...).{part} must be a torch.nn.Module (a PyroModule) following "
                f"{part}(x, y=None, idx=None, size=None)"
            )
    return vae.model, vae.guide


def _first_line(e):
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


def _latents(trace):
    return {
        name: site
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
    }


@torch.no_grad()
def check_protocol(model, guide, x, y=None):
    """Run ``model`` and ``guide`` on images ``x`` and raise :class:`ModelFileError` naming the first
    way they break the protocol; return the model and guide traces."""
    n = x.shape[0]
    try:
        guide_trace = poutine.trace(guide).get_trace(x, y)
    except Exception as e:
        raise ModelFileError(
            f"the guide failed on a batch {tuple(x.shape)}: {_first_line(e)}"
        ) from None
    try:
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, y)
    except ValueError as e:
        if "Shape mismatch inside plate" not in str(e):
            raise ModelFileError(f"the model failed: {_first_line(e)}") from None
        raise ModelFileError(
            f"the model failed: {_first_line(e)}; only the data dimension may be a batch "
            f"dimension: use .to_event({x.dim() - 1}) on the image's distribution"
        ) from None
    except Exception as e:
        raise ModelFileError(
            f"the model failed on a batch {tuple(x.shape)}: {_first_line(e)}"
        ) from None
    for name in ("x", "z"):
        if name not in model_trace.nodes or model_trace.nodes[name]["type"] != "sample":
            raise ModelFileError(f"the model has no sample site {name!r}; see pyro_vae.modelfile")
    site = model_trace.nodes["x"]
    if not site["is_observed"]:
        raise ModelFileError("the model's site 'x' is not observed; sample it with obs=x")
    fn = site["fn"]
    if tuple(fn.batch_shape) != (n,) or tuple(fn.event_shape) != tuple(x.shape[1:]):
        raise ModelFileError(
            f"the model's site 'x' has batch shape {tuple(fn.batch_shape)} and event shape "
            f"{tuple(fn.event_shape)}, but images need ({n},) and {tuple(x.shape[1:])}; use "
            f".to_event({x.dim() - 1}) inside data_plate"
        )
    missing = sorted(set(_latents(model_trace)) - set(_latents(guide_trace)))
    if missing:
        raise ModelFileError(
            f"the guide does not sample the model's latent site(s) {', '.join(missing)}"
        )
    extra = sorted(set(_latents(guide_trace)) - set(model_trace.nodes))
    if extra:
        raise ModelFileError(
            f"the guide samples site(s) {', '.join(extra)} that the model does not have"
        )
    for name, gsite in _latents(guide_trace).items():
        msite = model_trace.nodes[name]
        if (
            msite["fn"].batch_shape != gsite["fn"].batch_shape
            or msite["fn"].event_shape != gsite["fn"].event_shape
        ):
            raise ModelFileError(
                f"site {name!r} has batch/event shapes {tuple(msite['fn'].batch_shape)}/"
                f"{tuple(msite['fn'].event_shape)} in the model but {tuple(gsite['fn'].batch_shape)}/"
                f"{tuple(gsite['fn'].event_shape)} in the guide"
            )
    scaled = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
        x, y, torch.arange(n), 4 * n
    )
    if scaled.nodes["x"]["scale"] != 4.0:
        raise ModelFileError(
            "the model ignores idx and size; sample inside pyro_vae.data_plate(x, idx, size) so "
            "minibatches are scaled to the dataset"
        )
    try:
        generated = poutine.trace(model).get_trace(None, y[:2] if y is not None else None, None, 2)
        shape = tuple(generated.nodes["x"]["fn"].mean.shape)
    except Exception as e:
        raise ModelFileError(
            f"the model cannot generate (model(size=2)): {_first_line(e)}"
        ) from None
    if shape != (2, *x.shape[1:]):
        raise ModelFileError(
            f"model(size=2) generates 'x' of shape {shape}, not {(2, *x.shape[1:])}"
        )
    return model_trace, guide_trace
