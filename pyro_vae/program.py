"""The program door: what a Pyro model and guide are, learned by running them once.

A model file may be written any way Pyro code is written: a ``PyroModule``, an ``nn.Module`` whose
``model(x)`` and ``guide(x)`` methods call ``pyro.module(...)``, a pair of plain functions with
``pyro.param(...)``, a factory returning ``(model, guide)``. Nothing is assumed about names. As
Pyro's autoguides do (``AutoGuide._setup_prototype``), :func:`discover` runs the guide and the
model on a few images under ``poutine.trace`` and reads off a :class:`Structure`:

- the image site: the one observed with the images passed in (any name), its distribution, and
  whether that distribution reads the images beyond observing them (a ProdLDA-style
  ``Multinomial`` whose ``total_count`` is taken from ``x``): such a program generates on real
  images, never on placeholders;
- the latent sites: every other sample site, with its shape per image and support (any names,
  any number, any event shapes);
- the data plate: the plate over the images (any name, any dim), and whether the program
  subsamples it itself (``pyro_vae.data_plate(x, idx, size)``) or pyro_vae must scale minibatches
  to the data set;
- the layout the model wants its images in: ``(B, C, H, W)`` or flattened ``(B, C*H*W)``;
- what a second input ``y`` is (:class:`Condition`): class labels, one-hot or indices as the site
  they feed says; an image to complete; or nothing the program reads. Pyro's convention holds:
  ``y=None`` means "not observed", and a program is called with ``y=None`` unless the run
  observes something there (a run with labels for some images, ``labelled=True``, passes the
  labelled images' labels in the class site's form and ``y=None`` for the others). A run that
  conditions on something (``condition=``, ``--condition``) finds the form the program takes it
  in: labels as indices or one-hot; an image to complete as the whole image (pyro_vae's form)
  or split as Pyro's CVAE example splits it (:data:`IMAGE_FORMS`);
- where the parameters live: module attributes, ``pyro.module(...)``, ``pyro.param(...)``.

:class:`Program` then calls the two halves the one way the rest of pyro_vae calls every model and
guide, ``model(x, y=None, idx=None, size=None)``, and everything downstream (training,
evaluation, sampling, the figures, ``compare``, ``inspect``) asks the structure instead of a site
name. The built-in models pass through the same door.
"""

import inspect
import math
from contextlib import ExitStack
from dataclasses import dataclass, field, replace

import pyro
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch import nn
from torch.distributions import constraints

from .errors import DataError, ModelFileError, ProgramError, PyroVAEError, first_line

PARAM_PREFIX = "pyro.param:"
LAYOUTS = ("image", "flat")


@dataclass(frozen=True)
class LatentSite:
    """A latent sample site: its name, the shape of one image's value, and its support;
    for a discrete site, ``cardinality`` is its number of values (``None``: infinitely many)."""

    name: str
    shape: tuple
    support: object = field(compare=False)
    discrete: bool = False
    cardinality: object = None

    @property
    def numel(self):
        return math.prod(self.shape)


@dataclass(frozen=True)
class DataPlate:
    """The plate over the images: its name and dim, and whether the program subsamples it itself
    (called with ``idx`` and ``size``). When it does not, pyro_vae scales every site inside it by
    ``size / batch`` so a minibatch's ELBO estimates the whole data set's. ``sized``: whether the
    program gives the plate its size (``pyro.plate("data")`` does not: Pyro records size -1 and
    the sites' shapes give the batch)."""

    name: str = "data"
    dim: int = -1
    subsampled: bool = True
    sized: bool = True

    def __call__(self, batch, idx=None, size=None):
        """The plate as a guide built for this program must open it, for ``batch`` images at
        positions ``idx`` of a data set of ``size``."""
        stack = ExitStack()
        if self.subsampled and idx is not None:
            stack.enter_context(pyro.plate(self.name, size, subsample=idx, dim=self.dim))
            return stack
        if idx is not None and size is not None and size != batch:
            # outside the plate, so the plate's frame is on a site when the scale looks for it
            stack.enter_context(DataScale(self.name, size / batch))
        # as the program opens it: a sized plate beside a size-less one would make Pyro warn
        stack.enter_context(pyro.plate(self.name, batch if self.sized else None, dim=self.dim))
        return stack


class DataScale(Messenger):
    """Scale the log-density of every sample site inside the plate ``name`` by ``factor``: the
    minibatch scaling of a program whose data plate is not subsampled."""

    def __init__(self, name, factor):
        super().__init__()
        self.name, self.factor = name, factor

    def _process_message(self, msg):
        if msg["type"] == "sample" and any(f.name == self.name for f in msg["cond_indep_stack"]):
            msg["scale"] = self.factor * msg["scale"]


class LatentScale(Messenger):
    """Scale the log-density of every latent sample site (every site not observed) by
    ``factor``, in the model and in the guide alike: the KL term of the ELBO weighed by
    ``factor``, a beta-VAE (Higgins et al. 2017) or one step of a KL warm-up (Bowman et al.
    2016), for any program: Pyro's ``poutine.scale`` on the latent sites, as its DMM example
    anneals its KL, without knowing their names."""

    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def _process_message(self, msg):
        if msg["type"] == "sample" and not msg["is_observed"] and not site_is_subsample(msg):
            msg["scale"] = self.factor * msg["scale"]


#: The two forms in which a program takes an image to complete (``--condition quadrants:N``),
#: found by running it. Either way what is scored is log p(hidden pixels | observed pixels).
IMAGE_FORMS = {
    "whole": "model(x, y) with y the whole image, of which it reads the observed part, and x "
    "observed at the image site (pyro_vae's form)",
    "split": "model(xs, ys) with the hidden pixels of xs and the observed ones of ys set to -1, "
    "ys[xs == -1] observed at a site (Pyro's CVAE form)",
}


@dataclass(frozen=True)
class Condition:
    """What a program's second argument ``y`` is (``model(xs, ys=None)``, as Pyro writes it), and
    whether this run passes it.

    :param str kind: ``"none"`` (no second argument, or one that changes nothing the door can
        see), ``"labels"`` (class labels) or ``"image"`` (an image of the data's shape, such as
        the observed part of an image to complete).
    :param bool one_hot: labels as one-hot rows ``(B, K)`` rather than indices ``(B,)``.
    :param int num_classes: K, where a class site says it (else ``None``).
    :param str site: the sample site ``y`` feeds, if any: observed there when ``y`` is given,
        sampled when it is ``None`` (Pyro's convention for "not observed").
    :param bool observed: whether this run passes ``y``; if not, the program is always called
        with ``y=None``: nothing is invented for it.
    :param bool model_reads: whether the model's image distribution changes with ``y``.
    :param bool guide_reads: whether the guide's distributions change with ``y``.
    :param bool partial: labels for some images only (a semi-supervised run, ``--labels N``):
        pyro_vae's labels are indices with ``-1`` for "no label"; a call whose images are all
        labelled passes them in the form the class site takes (:meth:`value`), a call whose
        images are all unlabelled passes ``ys=None`` (the class site is then a latent, sampled
        by the guide), and a call that mixes the two is refused (the trainer splits its
        minibatches: :class:`pyro_vae.semi.SemiSupervisedLoss`).
    :param str form: for an image to complete, how the program takes it (:data:`IMAGE_FORMS`):
        ``"whole"`` or ``"split"``.
    :param torch.Tensor given: for an image to complete, the observed pixels, a boolean mask of
        one image's shape ``(C, H, W)``; the others are the hidden ones, which the model scores.
    """

    kind: str = "none"
    one_hot: bool = False
    num_classes: object = None
    site: object = None
    observed: bool = False
    model_reads: bool = False
    guide_reads: bool = False
    partial: bool = False
    form: object = None
    given: object = field(default=None, compare=False, repr=False)

    def value(self, labels):
        """Labels ``(B,)`` (indices) as the class site takes them: one-hot rows ``(B, K)`` of
        the default float dtype, or indices."""
        if self.one_hot:
            return nn.functional.one_hot(labels.long(), self.num_classes).to(
                torch.get_default_dtype()
            )
        return labels.long()

    def passed(self, y):
        """What the program receives as its second argument when pyro_vae passes ``y``: labels
        (indices) in the form the program takes them (:meth:`value`)."""
        if not self.observed:
            return None  # the program's second argument is its own: never invented
        if y is None or y.is_floating_point():
            return y  # a floating ``y`` is in the site's form already
        if not self.partial:
            return self.value(y) if self.kind == "labels" and self.one_hot else y
        labelled = y >= 0
        if not bool(labelled.any()):
            return None
        if not bool(labelled.all()):
            raise ProgramError(
                f"a call mixes {int(labelled.sum())} labelled and {int((~labelled).sum())} "
                "unlabelled images, but a program takes its ys for all images or for none "
                "(ys=None); call it once per kind, as pyro_vae.semi.SemiSupervisedLoss does"
            )
        return self.value(y)

    def inputs(self, x, y):
        """pyro_vae's images ``x`` (in the program's layout) and ``y`` as the program takes them:
        as they are, or in Pyro's CVAE form (``form="split"``) ``xs``, the image ``y`` with its
        hidden pixels set to -1, and ``ys``, the image ``x`` with its observed pixels set to -1."""
        if self.form != "split" or y is None:
            return x, y
        given = self.given.to(x.device).reshape(x.shape[1:])
        return y.reshape(x.shape).to(x.dtype).masked_fill(~given, -1), x.masked_fill(given, -1)


class Given(Messenger):
    """What a conditional run scores, log p(x | y), whatever the program scores: the site that
    observes the condition ``site`` (a class site observed with the labels) is given, not
    scored; and an image site ``image`` that observes every pixel of an image to complete
    (pyro_vae's form, :data:`IMAGE_FORMS`) is scored at the ``hidden`` pixels alone (a mask of
    one image's shape), its per-pixel distribution masked under its ``.to_event(...)``."""

    def __init__(self, site=None, image=None, hidden=None):
        super().__init__()
        self.site, self.image, self.hidden = site, image, hidden

    def _process_message(self, msg):
        if msg["type"] != "sample":
            return
        if msg["name"] == self.site:
            msg["fn"] = msg["fn"].mask(False)
        elif msg["name"] == self.image and self.hidden is not None:
            msg["fn"] = _masked(msg["fn"], self.hidden)


def _given(structure, device):
    """The :class:`Given` of a conditional run of ``structure``."""
    hidden = structure.hidden
    if hidden is not None and not structure.gathered:  # it observes every pixel
        return Given(structure.y.site, structure.image, hidden.to(device))
    return Given(structure.y.site)


def _masked(fn, hidden):
    dims, base = 0, fn
    while isinstance(base, torch.distributions.Independent):
        dims, base = dims + base.reinterpreted_batch_ndims, base.base_dist
    if base.event_shape or not dims:
        raise ModelFileError(
            f"the image site's {_dist_name(fn)} scores an image as one event, so its hidden "
            "pixels cannot be scored alone; observe the pixels independently "
            "(dist.Bernoulli(...).to_event(...)), or observe only the hidden pixels in Pyro's "
            "CVAE form (ys[xs == -1])"
        )
    return base.mask(hidden.reshape(fn.event_shape)).to_event(dims)


@dataclass(frozen=True)
class Structure:
    """What :func:`discover` learned about a model and its guide (see the module docstring).

    ``image_dist`` names the image site's distribution (``"Bernoulli"``, ``"Multinomial"``: the
    innermost one, under ``Independent`` and masks); ``reads_x`` says whether that distribution
    depends on the images beyond observing them, the latents held fixed (a ProdLDA-style
    ``Multinomial(int(x.sum(-1).max()), ...)`` takes its ``total_count`` from ``x``): such a
    program generates only given images to read that from (:func:`generate`, :func:`decode`).
    ``gathered`` says that the image site observes the hidden pixels of an image to complete
    alone, ``(B, hidden pixels)`` (Pyro's CVAE form): its values become images by
    :meth:`to_images`."""

    image: str
    latents: tuple
    plate: DataPlate
    layout: str
    x_shape: tuple
    y: Condition = Condition()
    max_plate_nesting: int = 1
    vectorized: bool = True
    has_guide: bool = True
    discrete_images: bool = False
    image_dist: str = ""
    reads_x: bool = False
    gathered: bool = False

    @property
    def hidden(self):
        """The pixels an image-completion run scores (a mask of one image's shape; the others
        are given, :attr:`Condition.given`), or ``None``."""
        return None if self.y.given is None else ~self.y.given

    @property
    def conditional(self):
        """Whether the run conditions the model's images on ``y`` (it passes ``y`` for every
        image, and the image distribution reads it); a run with labels for some images only
        (:attr:`Condition.partial`) is not conditional: its log p(x) sums the class out."""
        return self.y.observed and self.y.model_reads and not self.y.partial

    @property
    def latent_names(self):
        return tuple(site.name for site in self.latents)

    @property
    def code(self):
        """The latent site the figures and latent tools show: the largest continuous one per
        image, the one nearest the image among equals (the last sampled)."""
        sites = [s for s in self.latents if not s.discrete] or list(self.latents)
        if not sites:
            return None
        return max(reversed(sites), key=lambda s: s.numel)

    def site(self, name):
        return next(s for s in self.latents if s.name == name)

    def to_model(self, x):
        """Images ``(B, *x_shape)`` in the layout the program takes them."""
        if x is None or self.layout == "image":
            return x
        return x.reshape(*x.shape[: x.dim() - len(self.x_shape)], -1)

    def to_images(self, value, n):
        """A value of the image site (or its mean) for ``n`` images, as ``(n, *x_shape)``; the
        hidden pixels of a :attr:`gathered` site are put in place, the given ones left 0."""
        if self.gathered:
            images = value.new_zeros(n, *self.x_shape)
            images[:, self.hidden.to(value.device)] = value.reshape(n, -1)
            return images
        return value.reshape(n, *self.x_shape)


class ParamScope:
    """A program's own ``pyro.param`` store. Pyro keeps ``pyro.param`` and ``pyro.module``
    values in one global store; a program runs with its own swapped in, so two programs in one
    process (two runs, a test after another) never share a parameter by name. ``shared=True``
    keeps Pyro's global store instead (what a user calling :func:`pyro_vae.fit` on their own
    functions expects to find afterwards)."""

    def __init__(self, shared=False):
        self.shared = shared
        self._own = {}, {}, {}
        self._saved = []

    @property
    def params(self):
        return pyro.get_param_store()._params if self.shared else self._own[0]

    @property
    def to_name(self):
        return pyro.get_param_store()._param_to_name if self.shared else self._own[1]

    def __enter__(self):
        if self.shared:
            return self
        store = pyro.get_param_store()
        self._saved.append((store._params, store._param_to_name, store._constraints))
        store._params, store._param_to_name, store._constraints = self._own
        return self

    def __exit__(self, *exc):
        if self.shared:
            return
        store = pyro.get_param_store()
        store._params, store._param_to_name, store._constraints = self._saved.pop()


class Call:
    """How pyro_vae's ``(x, y, idx, size)`` reach one half of a user's program, by its signature:
    the images go to the first parameter, ``y`` to the second (if there is one), ``idx`` and
    ``size`` only to a program that names them (it subsamples its data plate itself)."""

    def __init__(self, fn):
        try:
            target = fn.forward if isinstance(fn, nn.Module) else fn
            params = list(inspect.signature(target).parameters.values())
        except (TypeError, ValueError):
            params = []
        positional = [
            p
            for p in params
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in ("idx",)
        ]
        names = {p.name for p in params}
        varargs = any(p.kind == p.VAR_POSITIONAL for p in params)
        self.takes_y = len(positional) >= 2 or "y" in names or varargs
        # what messages call the two arguments: the program's own names (Pyro writes xs, ys)
        self.names = tuple(p.name for p in positional[:2]) + ("x", "y")[len(positional[:2]) :]
        self.takes_idx = {"idx", "size"} <= names

    def __call__(self, fn, x, y=None, idx=None, size=None):
        args = [x]
        kwargs = {}
        if self.takes_y and y is not None:
            args.append(y)
        if self.takes_idx:
            kwargs.update(idx=idx, size=size)
            if y is None and self.takes_y:
                args.append(None)
        return fn(*args, **kwargs)


class Half(nn.Module):
    """One half of a program (``"model"`` or ``"guide"``) called as pyro_vae calls every program:
    ``half(x=None, y=None, idx=None, size=None)``. ``x=None`` (generation) runs the model on
    placeholder images of the right number, so a model that reads ``x.shape[0]`` still generates;
    the image site's distribution is what generation uses. A model whose image distribution
    reads more of ``x`` (:attr:`Structure.reads_x`) is never generated from on placeholders:
    :func:`generate` and :func:`decode` run it on real images or refuse.

    Its ``parameters()`` are the ones this half uses (found by following the autograd graph of
    its log-density), so freezing the model freezes the decoder and not an encoder that lives in
    the same ``nn.Module``; its ``state_dict()`` holds the modules it is made of, under their own
    names, and every ``pyro.param`` of the program (as ``pyro.param:NAME``).
    """

    def __init__(self, program, role, fn):
        super().__init__()
        self.role = role
        self.fn = fn
        self.call = Call(fn)
        object.__setattr__(self, "program", program)  # not a submodule: no cycle
        self.owners = nn.ModuleList(_owners(fn, None, None) or program.owners)
        self.store = program.store_params
        self._own = None  # the parameters this half uses, set by discovery

    @property
    def structure(self):
        return self.program.structure

    def forward(self, x=None, y=None, idx=None, size=None):
        structure = self.program.structure
        if idx is None and x is not None and self.program._discovery_size:
            idx, size = torch.arange(x.shape[0]), self.program._discovery_size
        if x is None:
            n = size if size is not None else (y.shape[0] if y is not None else 1)
            device = y.device if y is not None else self.program.device
            x = torch.zeros(n, *self.program.x_shape, device=device)
            idx = size = None
        condition = structure.y if structure is not None else self.program.trying
        if structure is not None:
            y = condition.passed(y)
        stack = ExitStack()
        with stack:
            stack.enter_context(self.program.scope)
            if structure is not None and idx is not None and size is not None:
                if not structure.plate.subsampled and size != x.shape[0]:
                    stack.enter_context(DataScale(structure.plate.name, size / x.shape[0]))
            if self.program.latent_scale != 1:
                stack.enter_context(LatentScale(self.program.latent_scale))
            if self.role == "model" and structure is not None and structure.conditional:
                stack.enter_context(_given(structure, x.device))
            layout = structure.layout if structure is not None else self.program.layout
            xin = x if layout == "image" else x.reshape(x.shape[0], -1)
            xin, y = condition.inputs(xin, y)
            return self.call(self.fn, xin, y, idx, size)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            target = self.target
            if target is None or name.startswith("_"):
                raise
            return getattr(target, name)

    #: The attributes of the half itself; every other attribute is the wrapped object's.
    _OWN = ("role", "fn", "call", "program", "owners", "store", "_own")

    @property
    def z_scale(self):
        """The factor on every latent site's log-density, in both halves
        (:attr:`Program.latent_scale`): beta, or the KL warm-up's weight of this epoch."""
        return self.program.latent_scale

    def __setattr__(self, name, value):
        """Set ``name`` on the wrapped object, as reading it gets it there: ``model.prior =
        FlatPrior()`` on a built model changes the model (it used to land on this wrapper and
        change nothing). ``z_scale`` (beta, a KL warm-up) is the program's
        :attr:`Program.latent_scale`. The parameters of a module set this way are trained with
        the half's."""
        if name == "z_scale":
            self.program.latent_scale = value
            return
        target = None if name in self._OWN or name in self.__dict__ else self.target
        if target is None:
            super().__setattr__(name, value)
            return
        setattr(target, name, value)
        if isinstance(value, nn.Module) and self._own is not None:
            known = {id(p) for _, p in self._own}
            new = [p for p in value.parameters() if id(p) not in known]
            self._own = self._own + [
                (f"{self.role}.{len(known) + i}", p) for i, p in enumerate(new)
            ]

    @property
    def target(self):
        """The object this half wraps: the module, or the owner of a bound method."""
        fn = self.__dict__.get("fn", self._modules.get("fn"))
        return fn if isinstance(fn, nn.Module) else getattr(fn, "__self__", None)

    def parameters(self, recurse=True):
        for _, p in self.named_parameters():
            yield p

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        if self._own is None:
            yield from super().named_parameters(prefix, recurse, remove_duplicate)
            return
        yield from self._own

    def state_dict(self, *args, destination=None, prefix="", keep_vars=False):
        """The state of the modules this half is made of, under their own names, and every
        ``pyro.param`` (``pyro.param:NAME``). Inside another module (a ``DeltaGuide`` around
        it, say) it fills the parent's state under the parent's prefix."""
        state = {}
        for i, owner in enumerate(self.owners):
            first = "" if len(self.owners) == 1 else f"{i}."
            state.update({first + k: v for k, v in owner.state_dict(keep_vars=keep_vars).items()})
        state.update(self.program.param_state())
        if destination is None:
            return state
        destination.update({prefix + k: v for k, v in state.items()})
        return destination

    def load_state_dict(self, state, strict=True, assign=False):
        state = self.program.load_param_state(state)
        for i, owner in enumerate(self.owners):
            first = "" if len(self.owners) == 1 else f"{i}."
            owner.load_state_dict(
                {k[len(first) :]: v for k, v in state.items() if k.startswith(first)}
            )

    def _load_from_state_dict(self, state_dict, prefix, *args):
        """Loading as a part of another module: load this half's keys, then hand its registered
        children the same values under the names torch's recursion looks for."""
        own = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
        self.load_state_dict(own)
        for name, value in nn.Module.state_dict(self).items():
            state_dict[prefix + name] = value


class Program:
    """A model and its guide behind the door: ``program.model`` and ``program.guide`` are called
    as ``(x, y=None, idx=None, size=None)``, ``program.structure`` says what they are.

    :param model: the model: a ``PyroModule``/``nn.Module``, a plain function, or a bound method.
    :param guide: its guide, of any of the same kinds, or ``None`` (then ``program.guide`` is
        ``None`` and the model is fitted with a per-image guide,
        ``LocalGuide(n, structure=program.structure)``: variational EM).
    :param x: a few images ``(B, *x_shape)`` to run them on.
    :param y: what this run observes as their second argument (labels, or the images to
        complete), or ``None``: then the program is always called with ``y=None``, and the door
        learns what ``y`` would be from the program itself (:class:`Condition`).
    :param owner: an ``nn.Module`` that holds both halves' networks (the object whose methods
        ``model`` and ``guide`` are), if any.
    :param int train_size: images in the training set.
    :param bool shared_params: keep ``pyro.param`` values in Pyro's global param store rather
        than in the program's own (see :class:`ParamScope`).
    :param bool y_if_needed: pass ``y`` only if the program cannot run without it (``y`` is then
        what the data offers, not what the run observes: :func:`as_program`).
    :param bool labelled: the run has labels for some of its training images (``--labels N``,
        semi-supervised): the program must observe a class site with its second argument, and
        is passed the labels of labelled images, ``ys=None`` for the others
        (:attr:`Condition.partial`). ``y`` is then ``None``.
    :param float alpha: with ``labelled``, the weight of the classification term on each
        labelled image (:class:`pyro_vae.semi.SemiSupervisedLoss`; 0: none).
    :param Condition condition: what the run conditions the images on (``--condition``), whose
        value ``y`` is: ``Condition("labels", num_classes=K)`` (``y`` the labels, as indices) or
        ``Condition("image", given=mask)`` (``y`` the images to complete, ``mask`` their observed
        pixels). The door finds the form the program takes it in (labels as indices or one-hot;
        an image whole or split, :data:`IMAGE_FORMS`), and refuses a program whose image
        distribution does not read it.

    ``program.latent_scale`` (1 by default; ``model.z_scale`` and ``guide.z_scale`` set it) scales
    the log-density of every latent site of both halves (:class:`LatentScale`): ``--beta`` and
    ``--kl-warmup`` for any program.
    """

    def __init__(
        self,
        model,
        guide,
        x,
        y=None,
        owner=None,
        train_size=None,
        shared_params=False,
        y_if_needed=False,
        labelled=False,
        alpha=0.0,
        condition=None,
    ):
        self.x_shape = tuple(x.shape[1:])
        self.alpha = alpha
        self.latent_scale = 1.0
        self.device = x.device
        self.layout = "image"
        self.trying = Condition()  # while discovering: the form of the condition being tried
        self.structure = None
        self.scope = ParamScope(shared_params)
        self.owners = _owners(model, guide, owner)
        self.store_params = nn.ParameterDict()
        self._store_names = {}
        self.train_size = train_size
        self.model = Half(self, "model", model)
        user_guide = guide
        if guide is None:
            guide = _PriorGuide(self.model)
        self.guide = Half(self, "guide", guide)
        # While discovering, the example images stand at the start of the training set, so a
        # guide with parameters per training image (a LocalGuide) finds their rows.
        n = x.shape[0]
        self._discovery_size = train_size if train_size and train_size > n else None
        try:
            self.structure = discover(
                self, x, y, user_guide is not None, y_if_needed, labelled, condition
            )
            self._collect_params(x, y)
        finally:
            self._discovery_size = None
        if user_guide is None:
            self.guide = None  # the caller makes a per-image guide (LocalGuide) for the structure

    # -- parameters -----------------------------------------------------------------------
    def _collect_params(self, x, y):
        """Make every ``pyro.param`` the program uses a parameter of the program and split all
        of them between the halves by what each half's log-density depends on."""
        used = _used_params(self, x, y)
        used_ids = {id(t) for leaves in used.values() for t in leaves}
        known = {id(p): p for m in self.owners for p in m.parameters()}
        for name, value in list(self.scope.params.items()):
            if id(value) in known or id(value) not in used_ids:
                continue
            param = value if isinstance(value, nn.Parameter) else nn.Parameter(value.detach())
            self.scope.params[name] = param
            self.scope.to_name.pop(value, None)
            self.scope.to_name[param] = name
            key = f"p{len(self._store_names)}"
            self._store_names[key] = name
            self.store_params[key] = param
            known[id(value)] = param
        for role, leaves in used.items():
            unknown = [t for t in leaves if id(t) not in known]
            if unknown:
                shapes = ", ".join(str(tuple(t.shape)) for t in unknown[:3])
                raise ModelFileError(
                    f"the {role} uses tensors with requires_grad that pyro_vae cannot find "
                    f"(shapes {shapes}): register their module with pyro.module(name, module) "
                    "or make them pyro.param(...) or attributes of the model's nn.Module"
                )
        for role, half in (("model", self.model), ("guide", self.guide)):
            params = {id(known[id(t)]): known[id(t)] for t in used[role]}
            half._own = [(f"{role}.{i}", p) for i, p in enumerate(params.values())]

    def param_state(self):
        """Every ``pyro.param`` of the program, as ``{"pyro.param:NAME": tensor}``."""
        return {
            PARAM_PREFIX + name: self.store_params[key].detach()
            for key, name in self._store_names.items()
        }

    def load_param_state(self, state):
        """Load the ``pyro.param`` entries of ``state``; return the rest."""
        state = dict(state)
        names = {name: key for key, name in self._store_names.items()}
        with torch.no_grad():
            for k in [k for k in state if k.startswith(PARAM_PREFIX)]:
                name = k[len(PARAM_PREFIX) :]
                if name not in names:
                    raise RuntimeError(f"unexpected parameter {name!r} in the state")
                self.store_params[names.pop(name)].copy_(state.pop(k))
        if names:
            raise RuntimeError(f"missing parameter {next(iter(names))!r} in the state")
        return state


class _PriorGuide:
    """Stands in for a missing guide while the structure is discovered: it samples nothing, so
    the model draws its latents from their priors."""

    def __init__(self, model):
        self.model = model

    def __call__(self, x, *args, **kwargs):
        return None


def _owners(model, guide, owner):
    """The ``nn.Module`` objects that hold the program's networks, each once."""
    found = []
    for part in (owner, model, guide):
        for obj in (part, getattr(part, "__self__", None)):
            if isinstance(obj, nn.Module) and all(obj is not m for m in found):
                found.append(obj)
    # a module inside another one is saved with it
    return [m for m in found if not any(m is not o and _contains(o, m) for o in found)]


def _contains(outer, inner):
    return any(m is inner for m in outer.modules())


def _leaves(tensor):
    """The leaf tensors with ``requires_grad`` that ``tensor`` was computed from."""
    out, seen, stack = {}, set(), [tensor.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        variable = getattr(fn, "variable", None)
        if variable is not None:
            out[id(variable)] = variable
        stack.extend(f for f, _ in fn.next_functions)
    return list(out.values())


def _log_density(trace, latents_only=False):
    total = torch.zeros(())
    for site in trace.nodes.values():
        if site["type"] == "sample" and not site_is_subsample(site):
            total = total + site["fn"].log_prob(site["value"]).sum()
            if site["value"].requires_grad:
                total = total + site["value"].sum()
    return total


def _used_params(program, x, y):
    """The leaf tensors each half's log-density depends on (the guide's through its samples
    too, the model's with the guide's samples held fixed)."""
    with torch.random.fork_rng(), torch.enable_grad():
        guide_trace = poutine.trace(program.guide).get_trace(x, y)
        fixed = poutine.util.prune_subsample_sites(guide_trace)
        for site in fixed.nodes.values():
            if site["type"] == "sample":
                site["value"] = site["value"].detach()
        model_trace = poutine.trace(poutine.replay(program.model, trace=fixed)).get_trace(x, y)
        return {
            "guide": _leaves(_log_density(guide_trace)),
            "model": _leaves(_log_density(model_trace)),
        }


# -- discovery ------------------------------------------------------------------------------


def _latents(trace):
    return {
        name: site
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
    }


def _run(program, x, y, idx=None, size=None):
    """Trace the guide, then the model replayed on it."""
    guide_trace = poutine.trace(program.guide).get_trace(x, y, idx, size)
    model_trace = poutine.trace(poutine.replay(program.model, trace=guide_trace)).get_trace(
        x, y, idx, size
    )
    return model_trace, guide_trace


def _first_line(e):
    return first_line(e, 300)


@torch.no_grad()
def discover(program, x, y=None, has_guide=True, y_if_needed=False, labelled=False, condition=None):
    """Run ``program``'s guide and model on the images ``x`` and return their :class:`Structure`,
    or raise :class:`~pyro_vae.errors.ModelFileError` naming the fix. ``y`` is what the run
    observes as the second argument (``None``: nothing); with ``y_if_needed`` it is passed only
    if the program cannot run with ``y=None``; with ``labelled`` the run observes labels for
    some images (:attr:`Condition.partial`), and a program without a class site is refused;
    ``condition`` is what ``y`` is where the run conditions on it (:class:`Program`)."""
    with torch.random.fork_rng():  # parameters made on the first call draw from the caller's seed
        structure = _discover(program, x, y, has_guide, y_if_needed, condition)
    if labelled:
        structure = _with_labels(structure)
        program.structure = structure
    if condition is not None and not structure.conditional:
        raise ModelFileError(_unread(condition, structure.y))
    return structure


def _unread(condition, found):
    """Why a program cannot be conditioned as the run asks, and the fix."""
    does = (
        "reads no second argument"
        if found.kind == "none" or not found.observed
        else "does not read it (its images and latents are drawn alike whatever it is)"
    )
    if condition.kind == "labels":
        return (
            f"--condition label conditions each image on its class, but this program {does}; "
            "write model(xs, ys=None) whose networks read ys (the labels, as indices or "
            "one-hot), or train without --condition"
        )
    return (
        f"--condition quadrants:N conditions each image on its observed quadrants, but this "
        f"program {does}; write {IMAGE_FORMS['whole']} (a factory is given "
        f"condition='quadrants:N'), or {IMAGE_FORMS['split']}"
    )


def _with_labels(structure):
    """``structure`` for a run with labels for some images, or a refusal naming the fix."""
    y = structure.y
    if y.kind != "labels" or y.site is None or not y.num_classes:
        found = {
            "none": "reads no second argument",
            "image": "takes an image as its second argument",
            "labels": "takes labels but observes them at no class site",
        }[y.kind]
        raise ModelFileError(
            f"--labels needs a program that observes the class at a site of its own, but this "
            f"one {found}; write model(xs, ys=None) with pyro.sample('y', "
            "dist.OneHotCategorical(...) or dist.Categorical(...), obs=ys) inside the data plate "
            "and a guide that samples 'y' when ys is None (Pyro's SS-VAE convention), or train "
            "without --labels"
        )
    return Structure(**{**structure.__dict__, "y": replace(y, observed=True, partial=True)})


@dataclass(frozen=True)
class _Failure:
    """One attempt of the first run that failed: in which layout and with which ``y``, how far
    it got (``stage``: 0 in the guide, 1 in the model, 2 scoring them; ``sites``: the sample
    sites the failing half had drawn), and what it raised."""

    layout: str
    y: object
    stage: int
    sites: tuple
    error: Exception

    @property
    def progress(self):
        return self.stage, len(self.sites), _is_mismatch(self.error)


def _first_run(program, x, ys):
    """The first ``(layout, y)`` (images as ``(B, C, H, W)``, then flattened; each ``y`` of
    ``ys`` in turn) on which the guide and the model run and score, with their traces."""
    failures = []
    for i, y in enumerate(ys):
        for layout in LAYOUTS:
            # y=None tried first, before the y the data offers: one of our own errors there (a
            # built-in conditional model's "pass y") only means this program needs the y.
            tentative = i < len(ys) - 1
            traces = _attempt(program, x, y, layout, failures, tentative)
            if traces is not None:
                return layout, y, traces
    _refuse(program, x, failures)


def _attempt(program, x, y, layout, failures, tentative=False):
    program.layout = layout
    handlers = [poutine.trace(program.guide)]
    stage = 0
    try:
        guide_trace = handlers[0].get_trace(x, y)
        stage = 1
        handlers.append(poutine.trace(poutine.replay(program.model, trace=guide_trace)))
        model_trace = handlers[1].get_trace(x, y)
        stage = 2
        for trace in (model_trace, guide_trace):  # shapes are checked when log-densities are taken
            trace.log_prob_sum()
        return model_trace, guide_trace
    except PyroVAEError as e:
        if not tentative:
            raise
        failures.append(_Failure(layout, y, stage, (), e))
        return None
    except Exception as e:
        nodes = handlers[min(stage, 1)].msngr.trace.nodes.values()
        sites = tuple(
            s["name"] for s in nodes if s["type"] == "sample" and not site_is_subsample(s)
        )
        failures.append(_Failure(layout, y, stage, sites, e))
        return None


def _is_mismatch(e):
    return isinstance(e, ValueError) and "Shape mismatch inside plate" in str(e)


def _refuse(program, x, failures):
    """Raise the error of the attempt that got furthest, saying what it passed and the fix."""
    best = max(failures, key=lambda f: f.progress)
    program.layout = best.layout
    half = program.guide if best.stage == 0 else program.model
    where = ("the guide", "the model", "scoring the model and guide")[best.stage]
    call = _described_call(half, x, best)
    reached = f" after site(s) {', '.join(best.sites)}" if best.sites else ""
    if _is_mismatch(best.error):
        # the message's start is what users search for; what was passed follows the fix
        raise ModelFileError(
            f"{where} failed{reached}: {_first_line(best.error)}; only the data dimension may be "
            f"a batch dimension of a site: use .to_event(...) on its distribution (it was called "
            f"as {call})"
        ) from None
    others = [
        f"as {_described_call(program.guide if f.stage == 0 else program.model, x, f)} "
        f"it failed {'in the guide' if f.stage == 0 else 'in the model'}"
        for f in failures
        if f is not best and f.progress < best.progress
    ]
    tried = f" (tried too: {'; '.join(others)}, earlier)" if others else ""
    raise ModelFileError(
        f"{where} failed{reached} when called as {call}: {_first_line(best.error)}; "
        f"{_fix(half, x, best)}{tried}"
    ) from None


def _described_call(half, x, failure):
    """``guide(xs=(4, 784) flattened, ys=None)``: what one attempt passed to a half."""
    x_name, y_name = half.call.names
    if failure.layout == "image":
        shown = f"{x_name}={tuple(x.shape)}"
    else:
        shown = f"{x_name}={(x.shape[0], math.prod(x.shape[1:]))} flattened"
    if half.call.takes_y:
        y = failure.y
        shown += f", {y_name}=None" if y is None else f", {y_name}={tuple(y.shape)}"
    return f"{half.role}({shown})"


def _fix(half, x, failure):
    """The one change that lets the attempt that got furthest through."""
    _, y_name = half.call.names
    text = str(failure.error)
    if failure.y is None and half.call.takes_y and ("NoneType" in text or f"'{y_name}'" in text):
        return (
            f"pyro_vae calls a program with {y_name}=None unless the run observes something "
            f"there (Pyro's convention: None means not observed); let the {half.role} run with "
            f"{y_name}=None, as Pyro's examples do (a site observed with obs={y_name} is then "
            "sampled)"
        )
    image = f"({', '.join(map(str, x.shape[1:]))})"
    flat = f"({math.prod(x.shape[1:])},)"
    y = f"{y_name}=None" if failure.y is None else f"{y_name} of shape {tuple(failure.y.shape)}"
    given = f" and {y}" if half.call.takes_y else ""
    if failure.stage >= 1:
        taken = image if failure.layout == "image" else f"flattened to {flat}"
        return f"make the model run on the images {taken}{given}, as the guide did"
    return f"make the guide run on each image as {image} or flattened to {flat}{given}"


def _forms(condition):
    """The forms in which to try passing the run's condition, in order (:data:`IMAGE_FORMS`)."""
    if condition is None:
        return [Condition()]
    if condition.kind != "image":
        return [condition]
    return [replace(condition, form=form) for form in IMAGE_FORMS]


def _candidates(y, y_if_needed, condition):
    """The values of ``y`` to try, in order: labels as indices, then one-hot."""
    if y_if_needed and y is not None:
        return [None, y]
    if condition is not None and condition.kind == "labels" and not y.is_floating_point():
        return [y, replace(condition, one_hot=True).value(y)]
    return [y]


def _run_in_a_form(program, x, ys, condition):
    """The first form of the condition in which the program runs and observes the images:
    ``(layout, y, image site, whether it observes the hidden pixels alone, traces)``."""
    refusals = []
    for trying in _forms(condition):
        program.trying = trying
        try:
            layout, y, traces = _first_run(program, x, ys)
            image, gathered = _image_site(traces[0], x, trying.given)
            if trying.form == "whole" and _reads_hidden(program, x, y, image):
                raise ModelFileError(
                    f"the image site {image!r} reads the hidden pixels of y, the part it must "
                    "complete; read y's observed quadrants alone (y * observed)"
                )
            return layout, y, image, gathered, traces
        except ModelFileError as e:
            refusals.append(f"as {IMAGE_FORMS.get(trying.form, '')}: {e}")
            if len(_forms(condition)) == 1:
                raise
    raise ModelFileError(
        "--condition quadrants:N passes a program the image to complete in one of two forms, and "
        f"this program takes neither: {'; '.join(refusals)}"
    )


def _reads_hidden(program, x, y, image):
    """Whether the model's image distribution changes with the hidden pixels of the whole image
    ``y`` (the latents held fixed): a program that reads them sees what it must complete."""
    given = program.trying.given.to(y.device).reshape(y.shape[1:])
    return _reads_y(program, x, y, torch.where(given, y, 1 - y), image)


def _discover(program, x, y, has_guide, y_if_needed, condition=None):
    n = x.shape[0]
    ys = _candidates(y, y_if_needed, condition)
    layout, y, image, gathered, (model_trace, guide_trace) = _run_in_a_form(
        program, x, ys, condition
    )
    program.layout = layout
    site = model_trace.nodes[image]
    frame = _data_frame(site, n, image)
    fn = site["fn"]
    if len(fn.batch_shape) != -frame.dim or fn.batch_shape[frame.dim] != n:
        raise ModelFileError(
            f"the image site {image!r} has batch shape {tuple(fn.batch_shape)} and event shape "
            f"{tuple(fn.event_shape)}; one image must be one event: use .to_event(...) so its "
            f"batch shape is ({n},)"
        )
    model_latents, guide_latents = _latents(model_trace), _latents(guide_trace)
    if has_guide:
        _check_guide(model_latents, guide_latents, model_trace)
    latents = tuple(_latent_site(name, s, n, frame) for name, s in model_latents.items())
    discrete = [s.name for s in latents if s.discrete]
    if discrete and not has_guide:
        raise ModelFileError(
            f"latent site(s) {', '.join(discrete)} are discrete, and a model without a guide is "
            "fitted with a Gaussian per image; write a guide that samples them (q(y | x))"
        )
    subsampled = False
    if program.model.call.takes_idx:
        scaled, _ = _run(program, x, y, torch.arange(n), 4 * n)
        subsampled = float(scaled.nodes[image]["scale"]) == 4.0
    plate = DataPlate(frame.name, frame.dim, subsampled, sized=frame.size not in (-1, None))
    nesting = max(
        [
            -f.dim
            for s in model_trace.nodes.values()
            if s["type"] == "sample"
            for f in s["cond_indep_stack"]
            if f.vectorized
        ]
        + [1]
    )
    structure = Structure(
        image=image,
        latents=latents,
        plate=plate,
        layout=layout,
        x_shape=tuple(x.shape[1:]),
        y=_condition(program, x, y, model_trace, image, latents),
        max_plate_nesting=nesting,
        vectorized=True,
        has_guide=has_guide,
        discrete_images=bool(fn.support.is_discrete),
        image_dist=_dist_name(fn),
        gathered=gathered,
    )
    program.structure = structure
    _check_stateless(program, x, y)
    vectorized = _vectorizes(program, x, y, nesting)
    if not vectorized:
        structure = Structure(**{**structure.__dict__, "vectorized": False})
    if _reads_x(program, x, y, image):
        structure = Structure(**{**structure.__dict__, "reads_x": True})
    return structure


def _dist_name(fn):
    """The name of a site's distribution under its wrappers (``Independent``, a mask)."""
    while getattr(fn, "base_dist", None) is not None:
        fn = fn.base_dist
    return type(fn).__name__


def _reads_x(program, x, y, image):
    """Whether the image site's distribution (its mean) changes when the model is given the
    placeholder images of generation (zeros) instead of ``x``, the latents held fixed: the
    model reads the images beyond observing them; a model that fails on zeros reads them."""
    guide_trace = poutine.trace(program.guide).get_trace(x, y)
    means = []
    for images in (x, torch.zeros_like(x)):
        with torch.random.fork_rng():
            torch.manual_seed(0)
            try:
                trace = poutine.trace(poutine.replay(program.model, trace=guide_trace)).get_trace(
                    images, y
                )
                means.append(_mean(trace.nodes[image]["fn"]))
            except Exception:
                return True
    a, b = means
    return a.shape != b.shape or not torch.allclose(a, b, equal_nan=True)


def _image_site(trace, x, given=None):
    """The site observed with the images ``x``, and whether it observes their hidden pixels
    alone (those not ``given``, gathered: ``ys[xs == -1]`` in Pyro's CVAE form)."""
    flat = x.reshape(x.shape[0], -1)
    observed = [
        name
        for name, s in trace.nodes.items()
        if s["type"] == "sample" and s["is_observed"] and not site_is_subsample(s)
    ]
    for name in observed:
        if _holds(trace.nodes[name]["value"], flat):
            return name, False
    if given is not None:
        hidden = flat[:, ~given.to(x.device).reshape(-1)]
        for name in observed:
            if _holds(trace.nodes[name]["value"], hidden):
                return name, True
    found = f" (its observed sites: {', '.join(observed)})" if observed else ""
    what = " (or their hidden pixels)" if given is not None else ""
    raise ModelFileError(
        f"no sample site of the model observed the images{what}{found}; pass obs=x to the "
        "image site"
    )


def _holds(value, y):
    """Whether a site's value is ``y`` (in any layout)."""
    return (
        isinstance(value, torch.Tensor)
        and value.numel() == y.numel()
        and torch.equal(value.reshape(y.shape).to(y.dtype), y)
    )


def _data_frame(site, n, image):
    """The plate over the images: one of ``n``, or one without a size (``pyro.plate("data")``:
    Pyro records size -1 and the sites' shapes give the batch) at a dim where the image site's
    batch has ``n``."""
    batch = tuple(site["fn"].batch_shape)

    def over_images(f):
        if f.size == n:
            return True
        return f.size in (-1, None) and len(batch) >= -f.dim and batch[f.dim] == n

    frames = [f for f in site["cond_indep_stack"] if f.vectorized and over_images(f)]
    if not frames:
        raise ModelFileError(
            f"the image site {image!r} is not inside a plate over the images; sample it inside "
            "pyro.plate('data', x.shape[0]) (or pyro_vae.data_plate(x, idx, size))"
        )
    return frames[0]


def _latent_site(name, site, n, frame):
    fn = site["fn"]
    shape = tuple(site["value"].shape)
    batch = tuple(fn.batch_shape)
    in_plate = any(f.name == frame.name for f in site["cond_indep_stack"])
    pos = len(batch) + frame.dim
    if not in_plate or pos != 0 or batch[0] != n or any(b != 1 for b in batch[1:]):
        sized = (
            f"; a plate without a size takes its size from the sites in it: give {name!r} a "
            f"distribution of batch shape ({n},)"
            if in_plate and frame.size in (-1, None)
            else ""
        )
        raise ModelFileError(
            f"latent site {name!r} has batch shape {batch} in plate(s) "
            f"{[f.name for f in site['cond_indep_stack']]}; pyro_vae needs each latent to belong "
            f"to one image: sample it inside the data plate {frame.name!r} with batch shape "
            f"({n},) (global latents and plates inside the data plate are not supported yet)"
            f"{sized}"
        )
    discrete = bool(fn.support.is_discrete) or bool(getattr(fn, "has_enumerate_support", False))
    cardinality = None
    if discrete and fn.has_enumerate_support:
        cardinality = int(fn.enumerate_support(expand=False).shape[0])
    return LatentSite(name, shape[1:], fn.support, discrete, cardinality)


def _check_guide(model_latents, guide_latents, model_trace):
    missing = [name for name in model_latents if name not in guide_latents]
    if missing:
        raise ModelFileError(
            f"the guide does not sample the model's latent site(s) {', '.join(missing)}; "
            "sample each with the same name in the guide"
        )
    extra = [name for name in guide_latents if name not in model_trace.nodes]
    if extra:
        raise ModelFileError(
            f"the guide samples site(s) {', '.join(extra)} that the model does not have; "
            "name them as the model does"
        )
    for name, gsite in guide_latents.items():
        msite = model_trace.nodes[name]
        m, g = msite["fn"], gsite["fn"]
        if m.batch_shape != g.batch_shape or m.event_shape != g.event_shape:
            raise ModelFileError(
                f"site {name!r} has batch/event shapes {tuple(m.batch_shape)}/"
                f"{tuple(m.event_shape)} in the model but {tuple(g.batch_shape)}/"
                f"{tuple(g.event_shape)} in the guide; make them agree (.to_event(...))"
            )


# -- what the second argument is ----------------------------------------------------------------


def _condition(program, x, y, model_trace, image, latents):
    """The program's :class:`Condition`: read off the ``y`` the run observes, or, where it
    observes nothing, learned by offering ``y`` in each form it could take (the value of a class
    site; an image) and seeing what the program does with it."""
    if not (program.model.call.takes_y or program.guide.call.takes_y):
        return Condition()
    classes = [s for s in latents if _is_class(s)]
    if y is not None:
        return _observed(program, x, y, model_trace, image, classes)
    for site in classes:
        found = _offer_labels(program, x, model_trace.nodes[site.name]["value"], site, image)
        if found is not None:
            return found
    return _offer_image(program, x, image) or Condition()


def _is_class(site):
    """A class site: a categorical one, its value one-hot or an index."""
    return site.discrete and isinstance(
        site.support, (constraints._OneHot, constraints._IntegerInterval)
    )


def _observed(program, x, y, model_trace, image, classes):
    """The condition a run observes: an image if ``y`` has an image's size, else labels."""
    n = x.shape[0]
    is_image = y.is_floating_point() and y.shape[0] == n and y[0].numel() == x[0].numel()
    one_hot = not is_image and y.is_floating_point() and y.dim() == 2
    site = _fed_site(model_trace, y, image)
    if site is None and not is_image and classes:
        site = classes[0].name  # a class site the guide fills in from the labels (M2)
    found = next((s for s in classes if s.name == site), None)
    trying = program.trying  # what the run asked for, in the form that ran
    num_classes = found.cardinality if found else (y.shape[-1] if one_hot else trying.num_classes)
    kind = "image" if is_image else "labels"
    other = _other(y, kind, one_hot, num_classes)
    return Condition(
        kind,
        one_hot,
        num_classes,
        site,
        observed=True,
        # an image to complete is replaced by another: a split one withheld is no image at all
        model_reads=_reads_y(program, x, y, other if is_image else None, image),
        guide_reads=_guide_reads(program, x, y, other),
        form=trying.form if is_image else None,
        given=trying.given if is_image else None,
    )


def _offer_labels(program, x, value, site, image):
    """Labels for the class site ``site`` when the program, given its value as ``y``, observes
    it there (Pyro's ``pyro.sample("y", ..., obs=ys)``)."""
    try:
        model_trace, _ = _run(program, x, value)
    except Exception:
        return None
    node = model_trace.nodes.get(site.name)
    if node is None or not node["is_observed"] or not _holds(node["value"], value):
        return None
    one_hot = isinstance(site.support, constraints._OneHot)
    other = _other(value, "labels", one_hot, site.cardinality)
    return Condition(
        "labels",
        one_hot,
        site.cardinality,
        site.name,
        observed=False,
        model_reads=_reads_y(program, x, value, other, image),
        guide_reads=_guide_reads(program, x, value, other),
    )


def _offer_image(program, x, image):
    """An image condition when the program, given an image as ``y``, observes it at a site or
    its image distribution changes."""
    offered = x if program.layout == "image" else x.reshape(x.shape[0], -1)
    try:
        model_trace, _ = _run(program, x, offered)
        reads = _reads_y(program, x, offered, None, image)
    except Exception:
        return None
    site = _fed_site(model_trace, offered, image)
    if site is None and not reads:
        return None
    return Condition(
        "image",
        site=site,
        observed=False,
        model_reads=reads,
        guide_reads=_guide_reads(program, x, offered, 1 - offered),
    )


def _fed_site(trace, y, image):
    """The sample site other than the image site that is observed with the value ``y``."""
    return next(
        (
            name
            for name, s in trace.nodes.items()
            if s["type"] == "sample"
            and s["is_observed"]
            and name != image
            and not site_is_subsample(s)
            and s["value"].numel()  # not a pyro.factor, whose value is empty
            and (_holds(s["value"], y) or _holds(_index(s["value"], y), y))
        ),
        None,
    )


def _index(value, y):
    """A one-hot value as indices, where ``y`` holds indices (else ``value``)."""
    if value.is_floating_point() and not y.is_floating_point() and value.dim() == y.dim() + 1:
        return value.argmax(-1)
    return value


def _other(y, kind, one_hot, num_classes):
    """A different value of ``y`` of the same form, to see whether a half reads ``y``."""
    if kind == "image":
        return 1 - y
    if one_hot:
        return y.roll(1, -1)
    return (y + 1) % num_classes if num_classes else None


def _reads_y(program, x, y, other, image):
    """Whether the model's distribution of the images or of the latents changes when ``y`` is
    replaced by ``other`` (default: withheld), the latents held fixed (a CVAE may read ``y`` in
    its prior alone, as Pyro's does); a model that fails without it reads it."""
    if not program.model.call.takes_y:
        return False
    guide_trace = poutine.trace(program.guide).get_trace(x, y)
    try:
        changed = poutine.trace(poutine.replay(program.model, trace=guide_trace)).get_trace(
            x, other
        )
    except Exception:
        return True
    with_y = poutine.trace(poutine.replay(program.model, trace=guide_trace)).get_trace(x, y)
    for name in [image, *_latents(guide_trace)]:
        if name not in changed.nodes or name not in with_y.nodes:
            return True
        a = with_y.nodes[name]["fn"].log_prob(with_y.nodes[name]["value"])
        b = changed.nodes[name]["fn"].log_prob(changed.nodes[name]["value"])
        if a.shape != b.shape or not torch.allclose(a, b):
            return True
    return False


def _guide_reads(program, x, y, other):
    """Whether the guide draws other sites, or from other distributions, when ``y`` is replaced
    by ``other``."""
    if not program.guide.call.takes_y:
        return False
    first = poutine.trace(program.guide).get_trace(x, y)
    try:
        second = poutine.trace(poutine.replay(program.guide, trace=first)).get_trace(x, other)
    except Exception:
        return True
    a, b = _latents(first), _latents(second)
    if a.keys() != b.keys():
        return True
    return any(
        not torch.allclose(a[k]["fn"].log_prob(a[k]["value"]), b[k]["fn"].log_prob(b[k]["value"]))
        for k in a
    )


def _check_stateless(program, x, y):
    def log_joint():
        torch.manual_seed(1)
        model_trace, guide_trace = _run(program, x, y)
        return model_trace.log_prob_sum() - guide_trace.log_prob_sum()

    first, second = log_joint(), log_joint()
    if not torch.allclose(first, second, rtol=1e-4, atol=1e-3, equal_nan=True):
        raise ModelFileError(
            "the program gives different results for the same images and random numbers "
            f"({first.item():.4g} then {second.item():.4g}): it keeps state between calls; "
            "keep what changes in pyro.param(...) or module parameters, not in Python variables"
        )


def _vectorizes(program, x, y, nesting):
    """Whether the program runs with particles in a batch dimension left of its plates (as
    evaluation draws them); if not, evaluation draws them one at a time."""
    try:
        with pyro.plate("particles", 2, dim=-(nesting + 1)):
            model_trace, guide_trace = _run(program, x, y)
        total = 0.0
        for trace, sign in ((model_trace, 1), (guide_trace, -1)):
            for site in trace.nodes.values():
                if site["type"] == "sample" and not site_is_subsample(site):
                    total = total + sign * site["fn"].log_prob(site["value"])
        return tuple(torch.as_tensor(total).shape) == (2, x.shape[0])
    except Exception:
        return False


def as_program(model, guide, x, y=None, train_size=None):
    """``(model, guide)`` through the door, unless the model has been through it already (then
    both are returned as they are: a guide made for a program, such as a per-image guide, needs
    no wrapping). Parameters stay in Pyro's global param store, where a user who calls
    :func:`pyro_vae.fit` on their own functions looks for them. ``y`` is what the data offers
    (its labels, say): the program is called with it only if it cannot run with ``y=None``."""
    if isinstance(model, Half):
        return model, guide
    program = Program(
        model, guide, x, y, train_size=train_size, shared_params=True, y_if_needed=True
    )
    return program.model, program.guide


# -- what the rest of pyro_vae asks a program ---------------------------------------------------


def _mean(fn):
    try:
        return fn.mean
    except NotImplementedError:  # e.g. a transformed distribution: its median, by sampling
        return fn.sample((64,)).median(0).values


@torch.no_grad()
def generate(model, n, y=None, x=None):
    """``n`` images ``(n, *x_shape)``: the image site's mean for latents drawn from the prior
    (its sample, where the distribution has no mean).

    :param x: ``n`` images, for a program whose image distribution reads them
        (:attr:`Structure.reads_x`): the model runs on each of them, its latents drawn from the
        prior, so what it reads from an image (a Multinomial's ``total_count``) is that image's.
        Such a program has no prior sample without them, and is refused; ``x`` is unused for
        any other."""
    structure = model.structure
    x = _read_images(
        structure,
        x,
        n,
        "a sample from the prior",
        "the run's samples.png draws z ~ p(z) given test images, and "
        "pyro_vae.program.generate(run.model, n, x=images) given yours",
    )
    if x is not None:
        return _means_on(model, {}, x, y)
    trace = poutine.trace(model).get_trace(None, y, None, n)
    return structure.to_images(_mean(trace.nodes[structure.image]["fn"]), n)


@torch.no_grad()
def decode(model, latents, y=None, x=None):
    """The image site's mean for given latents: ``latents`` is ``{site: (n, *shape)}`` or a
    tensor for the code site (:attr:`Structure.code`); sites not given are drawn from the prior
    given the others. ``x``: ``n`` images for a program that reads them (as :func:`generate`);
    a reconstruction passes the images it reconstructs."""
    structure = model.structure
    if torch.is_tensor(latents):
        latents = {structure.code.name: latents}
    n = next(iter(latents.values())).shape[0]
    x = _read_images(structure, x, n, "decoding latents", "pass images: Run.decode(z, x=images)")
    if x is not None:
        return _means_on(model, latents, x, y)
    trace = poutine.trace(poutine.condition(model, data=latents)).get_trace(None, y, None, n)
    return structure.to_images(_mean(trace.nodes[structure.image]["fn"]), n)


def _means_on(model, latents, x, y):
    """The image site's mean with the model run on each image of ``x`` by itself (the latents
    given, the others drawn from the prior): what it reads from an image, such as a total count
    (ProdLDA takes the batch's largest), is that image's alone, whatever images share its call."""
    structure = model.structure
    means = []
    for i in range(x.shape[0]):
        one = {name: value[i : i + 1] for name, value in latents.items()}
        trace = poutine.trace(poutine.condition(model, data=one)).get_trace(
            x[i : i + 1], None if y is None else y[i : i + 1]
        )
        means.append(structure.to_images(_mean(trace.nodes[structure.image]["fn"]), 1))
    return torch.cat(means)


def _read_images(structure, x, n, what, fix):
    """``x`` where the program's image distribution reads the images, else ``None`` (generation
    runs on placeholder images); a refusal where it reads them and none are given."""
    if not structure.reads_x:
        return None
    if x is None:
        raise DataError(
            f"{what} is not defined for this program without images: its image site "
            f"{structure.image!r} ({structure.image_dist}) reads the images beyond observing "
            f"them (a total count taken from x, say); {fix}"
        )
    if x.shape[0] != n:
        raise DataError(f"{what} for {n} images was given {x.shape[0]} images to read")
    return x


@torch.no_grad()
def site_moments(guide, x, y=None, site=None, idx=None, size=None):
    """The mean and standard deviation of q at one latent site (default: the code site) for the
    images ``x``, each ``(N, *shape)``; estimated from 64 draws where q has no closed form.
    Without ``site``, the guide's ``structure`` names the code site: a guide of a program, or a
    per-image guide made for one."""
    name = site or guide.structure.code.name
    fn = poutine.trace(guide).get_trace(x, y, idx, size).nodes[name]["fn"]
    try:
        return fn.mean, fn.stddev
    except NotImplementedError:
        draws = fn.sample((64,))
        return draws.mean(0), draws.std(0)


@torch.no_grad()
def site_values(guide, x, y=None, idx=None, size=None):
    """``{site: mean of q}`` for every latent site (the mode of a discrete one): the point a
    reconstruction decodes."""
    trace = poutine.trace(guide).get_trace(x, y, idx, size)
    out = {}
    for name, site in _latents(trace).items():
        # a discrete site's most probable value: a value it can take
        out[name] = site["fn"].mode if site["fn"].support.is_discrete else _mean(site["fn"])
    return out


def class_site(structure):
    """The name of the class site: the one ``y`` feeds, else the first categorical latent."""
    if structure.y.site is not None:
        return structure.y.site
    return next((s.name for s in structure.latents if _is_class(s)), None)


def class_value(structure, labels):
    """Class indices ``(N,)`` as the class site's values: one-hot rows where its values are
    (a ``OneHotCategorical``), the indices otherwise."""
    site = structure.site(class_site(structure))
    if site.support is constraints.one_hot:
        return nn.functional.one_hot(labels.long(), site.cardinality).to(torch.get_default_dtype())
    return labels.long()


def class_log_probs(guide, x, idx=None, size=None):
    """log q(y = k | x) ``(N, K)`` at the guide's class site (:func:`class_site`), the guide
    run with ``y=None`` (so it infers the class); the class ``k`` is the ``k``-th value of the
    site's support, its index."""
    structure = guide.structure
    fn = poutine.trace(guide).get_trace(x, None, idx, size).nodes[class_site(structure)]["fn"]
    values = fn.enumerate_support(expand=False)  # (K, 1, ...): every class, broadcast
    return fn.log_prob(values).reshape(values.shape[0], x.shape[0]).T


@torch.no_grad()
def classify(guide, x):
    """The most probable class of q(y | x) for each image ``(N,)``: the argmax over the values
    of the guide's class site (an index)."""
    return class_log_probs(guide, x).argmax(-1)


@torch.no_grad()
def log_likelihood_at(model, latents, x, y=None):
    """``log p(x | latents)`` per image: the image site's log-density with every latent site
    given (``{site: (N, *shape)}``)."""
    structure = model.structure
    trace = poutine.trace(poutine.condition(model, data=latents)).get_trace(x, y)
    site = trace.nodes[structure.image]
    lp = site["fn"].log_prob(site["value"])
    return lp.reshape(x.shape[0], -1).sum(-1)


@torch.no_grad()
def kl_to_prior(model, guide, x, y=None, num_samples=16):
    """KL(q(latents | x) || p(latents)) per image, summed over the latent sites: in closed form
    where torch has it for a site's pair of distributions, else by ``num_samples`` draws."""
    structure = model.structure
    total = torch.zeros(x.shape[0])
    guide_trace = poutine.trace(guide).get_trace(x, y)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, y)
    for name in structure.latent_names:
        q, p = guide_trace.nodes[name]["fn"], model_trace.nodes[name]["fn"]
        try:
            kl = torch.distributions.kl_divergence(q, p)
        except NotImplementedError:
            kl = None
        if kl is None or len(structure.latents) > 1:
            # dependent sites (p of one given another) need the joint: estimate it
            with pyro.plate("particles", num_samples, dim=-(structure.max_plate_nesting + 1)):
                g = poutine.trace(guide).get_trace(x, y)
                m = poutine.trace(poutine.replay(model, trace=g)).get_trace(x, y)
            total = total + (
                g.nodes[name]["fn"].log_prob(g.nodes[name]["value"])
                - m.nodes[name]["fn"].log_prob(g.nodes[name]["value"])
            ).mean(0)
        else:
            total = total + kl.reshape(x.shape[0], -1).sum(-1)
    return total


def prior_moments(model, n=1):
    """The mean and standard deviation of the code site's prior (unconditioned), ``(*shape)``."""
    structure = model.structure
    trace = poutine.trace(model).get_trace(None, None, None, n)
    fn = trace.nodes[structure.code.name]["fn"]
    try:
        return fn.mean[0], fn.stddev[0]
    except NotImplementedError:
        draws = fn.sample((256,))
        return draws.mean((0, 1)), draws.std((0, 1))


#: What log p(x) is for an image site of each distribution (:func:`measures`); others are
#: named by the distribution, as a log-probability (discrete pixels) or a log-density.
MEASURES = {
    "Bernoulli": "log p(x) of binary images",
    "Multinomial": (
        "log p(x | its total): the log-probability of the pixel counts under a Multinomial given "
        "their total (an image's number of on-pixels)"
    ),
}


def measures(structure):
    """What the program's log p(x) measures, in one line: read off its image site's
    distribution (``metrics.json``'s ``measures``)."""
    name = structure.image_dist
    if name in MEASURES:
        return MEASURES[name]
    if structure.discrete_images:
        text = f"log p(x), the log-probability of the pixel values under a {name}"
    else:
        text = (
            f"log p(x), a {name} density of pixels in [0, 1]^D: not comparable with "
            "binarized numbers"
        )
    if structure.reads_x:
        text += ", given what the model reads from the images besides observing them"
    return text


def describe(structure):
    """What the door learned, as lines of text (``pyro-vae inspect`` prints them)."""
    plate = structure.plate
    how = (
        "subsampled by the program itself (idx, size)"
        if plate.subsampled
        else "not subsampled: pyro_vae scales each minibatch to the data set"
    )
    layout = (
        f"(B, {', '.join(map(str, structure.x_shape))})"
        if structure.layout == "image"
        else f"flattened (B, {math.prod(structure.x_shape)})"
    )
    latents = ", ".join(
        f"{s.name} {tuple(s.shape)}" + ("" if _real(s.support) else f" on {s.support}")
        for s in structure.latents
    )
    lines = [
        f"image site: {structure.image!r} ({structure.image_dist}), images taken as {layout}"
        + (", discrete pixels" if structure.discrete_images else ", continuous pixels")
        + (
            "; its distribution reads the images beyond observing them: it generates only "
            "given images"
            if structure.reads_x
            else ""
        ),
        f"latent sites (per image): {latents or 'none'}; figures show {structure.code.name!r}"
        if structure.latents
        else "latent sites: none",
        f"data plate: {plate.name!r} at dim {plate.dim}, {how}",
        _describe_y(structure.y),
        "guide: the file's own"
        if structure.has_guide
        else "guide: none in the file; a per-image guide (variational EM) is used",
    ]
    discrete = [site for site in structure.latents if site.discrete]
    if discrete:
        from .discrete import default_strategy

        values = ", ".join(
            f"{site.name} ({site.cardinality} values)"
            if site.cardinality
            else f"{site.name} (infinitely many values)"
            for site in discrete
        )
        lines.append(
            f"discrete sites: {values}; trained by --discrete {default_strategy(structure)} "
            "unless chosen, summed out exactly by evaluation where finite"
        )
    if not structure.vectorized:
        lines.append("evaluation draws one particle at a time (the program does not vectorize)")
    return lines


def _describe_y(y):
    if y.kind == "none":
        return "condition: none (the program reads no second argument y)"
    if y.kind == "labels":
        what = "class labels, " + ("one-hot" if y.one_hot else "indices")
        if y.num_classes:
            what += f", {y.num_classes} classes"
    else:
        what = "an image"
        if y.form is not None:
            given = int(y.given.sum()) if y.given is not None else "some"
            what += (
                f" to complete from its {given} observed pixels, passed to {IMAGE_FORMS[y.form]}"
            )
    if y.site is not None:
        what += f", observed at site {y.site!r} when given"
    readers = [
        half for half, reads in (("model", y.model_reads), ("guide", y.guide_reads)) if reads
    ]
    if readers:
        what += f", read by the {' and the '.join(readers)}"
    if y.partial:
        run = "this run passes the labelled images' labels, and y=None for the others"
    elif y.observed:
        run = "this run passes it"
    else:
        run = "this run observes none: the program is called with y=None"
    return f"condition: y is {what}; {run}"


def _real(support):
    while hasattr(support, "base_constraint"):
        support = support.base_constraint
    return type(support) is type(torch.distributions.constraints.real)
