"""Guides q(z|x): variational families for the models in :mod:`pyro_vae.models`.

A guide takes the same arguments as the model and samples the same latent sites, so swapping
one guide for another changes neither the model nor the ELBO. Each guide's ``z_dist(x, y, idx)``
returns q(z|x) for the images ``x`` at dataset positions ``idx``, so guides compose: a
:class:`DeltaGuide` wraps any of the others.

- :class:`AmortizedGuide`: one encoder network for every image (Kingma & Welling 2014).
- :class:`LocalGuide`: free ``loc`` and ``scale`` per image, the variational EM of classical
  latent variable models; fitted to new images by an E-step (:func:`pyro_vae.inference.e_step`).
  Started from an encoder's output it is the semi-amortized guide (Kim et al. 2018).
- :class:`DeltaGuide`: zero posterior variance, the autoencoder / MAP limit.
- :class:`FamilyGuide`: any amortized guide's Gaussian turned into another family of
  :mod:`pyro_vae.families` (full covariance, a flow); :class:`LocalGuide` takes a ``family`` too.
"""

import math

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.nn import PyroModule
from pyro.poutine.messenger import Messenger
from torch import nn
from torch.distributions import biject_to

from .errors import ConfigError, DataError, ModelFileError
from .families import make_family
from .models import data_plate, features
from .nets import loc_scale
from .program import DataPlate, LatentSite, Structure


class Guide(PyroModule):
    """Base of the guides below: sample ``"z"`` from ``self.z_dist(x, y, idx)`` in the data plate.

    ``z_scale`` scales the site's log-density (beta-VAE, KL warm-up; set by
    :func:`pyro_vae.objectives.kl_warmup` together with the model's).
    """

    z_scale = 1.0

    def forward(self, x, y=None, idx=None, size=None):
        with data_plate(x, idx, size), poutine.scale(scale=self.z_scale):
            return pyro.sample("z", self.z_dist(x, y, idx))


class AmortizedGuide(Guide):
    """Amortized inference: one encoder network serves every image::

        loc, scale = enc(x, y)
        z  ~ Normal(loc, scale)          # diagonal Gaussian, per image
        z1 ~ Normal(top(z))              # only for the hierarchical model: q(z1 | z)

    The hierarchical guide runs bottom-up, as the IWAE paper's recognition model does:
    q(z, z1 | x) = q(z | x) q(z1 | z). With a ``condition`` (a conditional VAE) the encoder also
    reads ``y``, through the same condition module as the model's.

    :param encoder: a network ``encoder(x, c)`` returning ``(loc, scale)`` of shape ``(..., z_dim)``.
    :param condition: the model's condition module, or ``None``.
    :param top: a network mapping ``(..., z_dim)`` to ``(..., 2 * z1_dim)`` for the top layer of a
        hierarchical model, or ``None``.
    """

    def __init__(self, encoder, condition=None, top=None):
        super().__init__()
        self.encoder = encoder
        self.condition = condition
        self.top = top

    def z_dist(self, x, y=None, idx=None):
        return dist.Normal(*self.encoder(x, features(self.condition, y))).to_event(1)

    def forward(self, x, y=None, idx=None, size=None):
        with data_plate(x, idx, size), poutine.scale(scale=self.z_scale):
            z = pyro.sample("z", self.z_dist(x, y, idx))
            if self.top is not None:
                pyro.sample("z1", dist.Normal(*loc_scale(self.top(z))).to_event(1))
            return z


class LocalGuide(Guide):
    """Per-datapoint variational parameters: one free diagonal Gaussian per image and latent site::

        z_i ~ Normal(loc[i], scale[i])   # i = the image's position in the dataset (idx)

    This is variational EM's E-step family: ``size`` sets of parameters, nothing shared, so its
    optimum per image is the q* of Cremer, Li & Duvenaud (2018) against which the amortization
    gap is measured. Minibatches pick their rows through ``idx``; called without ``idx``, the
    guide needs all ``size`` images in order.

    For any program it covers every latent site the program's :class:`~pyro_vae.program.Structure`
    lists, each a Gaussian in the site's unconstrained space (mapped onto its support as Pyro's
    ``AutoNormal`` does), inside the program's own data plate. ``LocalGuide(size, z_dim)`` is the
    built-in models' case: one site ``"z"`` of ``z_dim`` numbers in :func:`pyro_vae.data_plate`.
    A finite discrete site (a class, a cluster: one-hot, Boolean or ``0..K-1``) gets a free
    categorical q per image instead, its ``logits`` held where a continuous site holds ``loc``
    (no scale, no family); the E-step and evaluation sum it out exactly. The sites' q are
    independent given the image (mean field: q(y) q(z), where an encoder may have q(z | y)).

    Trained by :func:`~pyro_vae.train.fit`, each image's parameters take one Adam step per epoch
    (when its minibatch comes), so ``fit``'s default ``lr=1e-3`` moves them by about 1e-3 per epoch
    and leaves q near the prior: train them with a learning rate of 0.01-0.1 (the tests train
    decoder and locals together with 0.03), or fit them with
    :func:`~pyro_vae.inference.e_step` (every image every step, ``lr=0.2``, four draws per
    step). ``fit``'s test ELBO for this guide comes from an E-step on the test images after the
    last epoch
    (:func:`~pyro_vae.train.mean_test_elbo`).

    :param int size: number of images (rows of ``loc`` and ``scale``).
    :param int z_dim: latent dimension of the single site ``"z"``, without ``structure``
        (:func:`one_site`).
    :param loc: initial locations ``(size, z_dim)`` (or, with several sites, a dict by site name,
        in unconstrained space); default zeros (the standard Normal prior's mean).
    :param scale: initial scales, likewise; default ones.
    :param structure: a program's :class:`~pyro_vae.program.Structure`.
    :param str family: the guide family of each site's q (:data:`pyro_vae.families.FAMILIES`):
        ``"diag"`` (the default, as above), ``"fullcov"`` (a free lower triangle per image) or
        ``"flow"`` (a flow shared by the images, with a free context per image).
    :param int flow_layers: flow steps for ``family="flow"``.
    :param extra: the family's initial numbers per image beyond ``loc`` and ``scale``
        ``(size, extra_dim)`` (or a dict by site name); default: the family's own start.
    """

    def __init__(
        self,
        size,
        z_dim=None,
        loc=None,
        scale=None,
        structure=None,
        family="diag",
        flow_layers=None,
        extra=None,
    ):
        super().__init__()
        structure = structure or one_site(z_dim)
        self.size, self.sites, self.plate = size, tuple(structure.latents), structure.plate
        self.structure = structure
        self.family, self.flow_layers = family, flow_layers
        self.z_dim = z_dim if z_dim is not None else (self.sites[0].numel if self.sites else 0)
        self.categoricals = [categorical_q(site) if site.discrete else None for site in self.sites]
        self.transforms = [
            None if _is_real(site.support) or c is not None else biject_to(_unmixed(site.support))
            for site, c in zip(self.sites, self.categoricals)
        ]
        self.locs = nn.ParameterDict()
        self.log_scales = nn.ParameterDict()
        self.extras = nn.ParameterDict()  # the family's numbers beyond the diagonal, per image
        self.families = nn.ModuleDict()
        for i, (site, t) in enumerate(zip(self.sites, self.transforms)):
            if self.categoricals[i] is not None:
                self.locs[str(i)] = nn.Parameter(self._init_logits(loc, site, i, size))
                continue
            shape = (size, *(site.shape if t is None else t.inv.forward_shape(site.shape)))
            init_loc, init_scale = _pick(loc, site.name, i), _pick(scale, site.name, i)
            init_loc = torch.zeros(shape) if init_loc is None else init_loc.detach().clone()
            init_scale = torch.ones(shape) if init_scale is None else init_scale.detach().clone()
            if init_loc.shape != shape or init_scale.shape != shape:
                raise DataError(
                    f"LocalGuide needs loc and scale of shape {tuple(shape)} for site "
                    f"{site.name!r}, got {tuple(init_loc.shape)} and {tuple(init_scale.shape)}"
                )
            self.locs[str(i)] = nn.Parameter(init_loc.float())
            self.log_scales[str(i)] = nn.Parameter(init_scale.float().log())
            fam = make_family(family, math.prod(shape[1:]), flow_layers, per_image=True)
            self.families[str(i)] = fam
            if fam.extra_dim:
                init_extra = _pick(extra, site.name, i)
                if init_extra is None:
                    flat = (size, fam.dim)
                    init_extra = fam.local_extra(
                        self.locs[str(i)].detach().reshape(flat),
                        self.log_scales[str(i)].detach().reshape(flat),
                    )
                self.extras[str(i)] = nn.Parameter(init_extra.detach().clone().float())

    def _init_logits(self, loc, site, i, size):
        shape = (size, *self.categoricals[i][0])
        logits = _pick(loc, site.name, i)
        if logits is None:
            return torch.zeros(shape)  # uniform: where a categorical q starts knowing nothing
        if logits.shape != shape:
            raise DataError(
                f"LocalGuide needs logits of shape {tuple(shape)} for the discrete site "
                f"{site.name!r}, got {tuple(logits.shape)}"
            )
        return logits.detach().clone().float()

    def fresh(self, size):
        """A guide of the same sites and family for ``size`` other images, at the prior (the
        flow, shared by the images, starts afresh too)."""
        return LocalGuide(
            size, structure=self.structure, family=self.family, flow_layers=self.flow_layers
        )

    @property
    def loc(self):
        """The first site's locations ``(size, ...)`` (``"z"`` for the built-in models)."""
        return self.locs["0"]

    @property
    def scale(self):
        """The first site's scales ``(size, ...)``."""
        return self.log_scales["0"].exp()

    @classmethod
    @torch.no_grad()
    def from_guide(cls, guide, x, y=None, structure=None, family="diag", flow_layers=None):
        """A local guide of ``family`` for the images ``x`` (with condition ``y``) that starts
        where ``guide`` stands on them.

        From a :class:`FamilyGuide` of the same family it starts *at* the guide's q, image for
        image (the same Gaussian, the same lower triangle or flow context, a copy of the flow),
        and so it does from one of a family that ``family`` contains (a per-image flow holds a
        full-covariance q with the flow at the identity); otherwise at each site's mean and
        standard deviation under ``guide`` (in its unconstrained space; estimated from 64 draws
        where the distribution has no closed form), which every family can represent.

        Refining it with a few E-steps is semi-amortized inference (Kim et al. 2018); with none,
        it is ``guide`` itself (up to the moments, for a family that cannot hold ``guide``'s q).

        ``structure`` defaults to the guide's: a guide of a program has one; a built-in guide on
        its own samples the one site of :func:`one_site`.
        """
        structure = (
            structure
            or getattr(guide, "structure", None)
            or one_site(guide.z_dist(x, y).event_shape[-1])
        )
        if isinstance(guide, FamilyGuide) and guide.family == family:
            parts = guide.parts(x, y)
            local = cls(
                x.shape[0],
                structure=structure,
                family=family,
                flow_layers=guide.flow_layers,
                loc={k: v[0] for k, v in parts.items()},
                scale={k: v[1].exp() for k, v in parts.items()},
                extra={
                    name: guide.families[str(guide.index[name])].local_from_amortized(v[2])
                    for name, v in parts.items()
                },
            )
            for i, fam in local.families.items():
                fam.copy_from(guide.families[i])
            return local
        if isinstance(guide, FamilyGuide):
            held = _held(guide, guide.parts(x, y), family, flow_layers)
            if held is not None:
                return cls(
                    x.shape[0], structure=structure, family=family, flow_layers=flow_layers, **held
                )
        trace = poutine.trace(guide).get_trace(x, y)
        modes = {s.name: trace.nodes[s.name]["fn"].mode for s in structure.latents if s.discrete}
        if modes:  # the continuous sites start at their q given each discrete site's mode
            trace = poutine.trace(poutine.condition(guide, data=modes)).get_trace(x, y)
        loc, scale = {}, {}
        for site in structure.latents:
            fn = trace.nodes[site.name]["fn"]
            if site.discrete:  # a categorical q starts at the guide's q(y|x)
                loc[site.name] = _logits(fn).expand(x.shape[0], *categorical_q(site)[0])
                continue
            loc[site.name], scale[site.name] = _moments(fn, site)
        return cls(
            x.shape[0],
            loc=loc,
            scale=scale,
            structure=structure,
            family=family,
            flow_layers=flow_layers,
        )

    def site_dists(self, x, y=None, idx=None):
        """``{site: q}`` for the images ``x`` at positions ``idx``: each a q of the guide's family
        in the site's unconstrained space, mapped onto its support."""
        if idx is None and x.shape[0] != self.size:
            raise DataError(
                f"this local guide holds parameters for {self.size} images, got "
                f"{x.shape[0]}; pass their positions idx, or fit a guide for these images"
            )
        out = {}
        for i, (site, t) in enumerate(zip(self.sites, self.transforms)):
            if self.categoricals[i] is not None:
                logits = self.locs[str(i)] if idx is None else self.locs[str(i)][idx]
                out[site.name] = self.categoricals[i][1](logits)
                continue
            loc, log_scale = self.locs[str(i)], self.log_scales[str(i)]
            extra = self.extras[str(i)] if str(i) in self.extras else None
            if idx is not None:
                loc, log_scale = loc[idx], log_scale[idx]
                extra = None if extra is None else extra[idx]
            fam = self.families[str(i)]
            out[site.name] = fam.site_dist(loc, log_scale, extra, loc.dim() - 1, t)
        return out

    def z_dist(self, x, y=None, idx=None):
        """q of the first latent site (``"z"`` for the built-in models)."""
        return next(iter(self.site_dists(x, y, idx).values()))

    def forward(self, x, y=None, idx=None, size=None):
        dists = self.site_dists(x, y, idx)
        with self.plate(x.shape[0], idx, size), poutine.scale(scale=self.z_scale):
            return {name: pyro.sample(name, fn) for name, fn in dists.items()}


def one_site(z_dim):
    """The structure of ``LocalGuide(size, z_dim)``, made without a program's: the built-in
    models' one latent site ``"z"`` of ``z_dim`` real numbers per image, in
    :func:`pyro_vae.data_plate` (their image site ``"x"``, of a shape the guide need not know).
    A guide for any other program takes that program's structure instead."""
    if z_dim is None:
        raise DataError("LocalGuide needs z_dim, or a program's structure")
    site = LatentSite("z", (z_dim,), constraints.real)
    return Structure(image="x", latents=(site,), plate=DataPlate(), layout="image", x_shape=())


def _held(guide, parts, family, flow_layers):
    """``loc``, ``scale`` and ``extra`` by site for a :class:`LocalGuide` of ``family`` that
    holds the q of the :class:`FamilyGuide` ``guide`` exactly (``parts`` from its
    :meth:`~FamilyGuide.parts`), or ``None`` if ``family`` does not contain the guide's."""
    loc, scale, extra = {}, {}, {}
    for name, (site_loc, log_scale, site_extra) in parts.items():
        source = guide.families[str(guide.index[name])]
        target = make_family(family, source.dim, flow_layers, per_image=True)
        extra[name] = target.local_holding(source, site_loc, log_scale, site_extra)
        if extra[name] is None:
            return None
        loc[name], scale[name] = site_loc, log_scale.exp()
    return {"loc": loc, "scale": scale, "extra": extra}


def categorical_q(site):
    """A free categorical q for the finite discrete ``site``: the shape of one image's logits,
    and the distribution they make (with the site's event dims)."""
    support, dims = site.support, 0
    while isinstance(support, constraints.independent):
        dims += support.reinterpreted_batch_ndims
        support = support.base_constraint
    shape = tuple(site.shape)
    if isinstance(support, type(constraints.one_hot)) and shape:
        events = len(shape) - 1
        return shape, lambda logits: dist.OneHotCategorical(logits=logits).to_event(events)
    if isinstance(support, type(constraints.boolean)):
        return shape, lambda logits: dist.Bernoulli(logits=logits).to_event(len(shape))
    lower = getattr(support, "lower_bound", None)
    upper = getattr(support, "upper_bound", None)
    if support.is_discrete and lower == 0 and isinstance(upper, int):
        return (*shape, upper + 1), lambda logits: dist.Categorical(logits=logits).to_event(
            len(shape)
        )
    raise ConfigError(
        f"a per-image guide holds a categorical q for one-hot, Boolean or 0..K-1 sites, but "
        f"the discrete site {site.name!r} lives on {site.support}"
    )


def _logits(fn):
    """The logits of a (possibly ``Independent``) categorical, one-hot or Bernoulli ``fn``."""
    while isinstance(fn, dist.Independent):
        fn = fn.base_dist
    return fn.logits


def _unmixed(support):
    """A mixture's support is its components' (torch maps onto the one, not the other)."""
    mixture = getattr(torch.distributions.constraints, "MixtureSameFamilyConstraint", ())
    while isinstance(support, mixture):
        support = support.base_constraint
    return support


def _is_real(support):
    """Whether ``support`` is all of R^n, so the site needs no transform."""
    support = _unmixed(support)
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support is constraints.real or type(support) is type(constraints.real)


def _pick(value, name, i):
    if value is None or isinstance(value, torch.Tensor):
        return value if i == 0 else None
    return value.get(name)


def _moments(fn, site):
    """Mean and standard deviation of ``fn`` in the site's unconstrained space."""
    base = fn
    while isinstance(base, dist.Independent):
        base = base.base_dist
    if isinstance(base, dist.Normal) and _is_real(site.support):
        return base.loc.expand(fn.shape()), base.scale.expand(fn.shape())
    if isinstance(fn, dist.MultivariateNormal) and _is_real(site.support):
        return fn.mean, fn.stddev
    draws = biject_to(_unmixed(site.support)).inv(fn.sample((64,)))
    return draws.mean(0), draws.std(0).clamp(min=1e-3)


class DeltaGuide(Guide):
    """The zero-variance limit of another guide: a point mass at its mean::

        z = mean of guide's q(z|x)
        z ~ Delta(z)                   # no posterior uncertainty

    Trained jointly with the decoder this is a (regularized) autoencoder; with the decoder held
    fixed and a :class:`LocalGuide` inside, its E-step finds each image's MAP latent. A discrete
    site of the :class:`LocalGuide` keeps its categorical q (summed out exactly): the point mass
    is on the continuous latents.

    Its "ELBO" is ``log p(x, z)`` at one point, because a Delta's density term is taken as 0.
    That is **not** a lower bound on log p(x): the entropy of a point mass is minus infinity, so
    the true ELBO of a Delta guide is minus infinity, and ``log p(x, z)`` is a density in z whose
    value changes when z is rescaled (it can exceed log p(x)). For the same reason a Delta guide
    cannot serve as an importance sampling proposal. Report its reconstruction error instead.

    :param guide: any pyro_vae guide with ``z_dist(x, y, idx)``.
    """

    def __init__(self, guide):
        super().__init__()
        self.guide = guide

    @property
    def structure(self):
        """The structure of the program the wrapped guide was made for, if any."""
        return getattr(self.guide, "structure", None)

    @property
    def size(self):
        return getattr(self.guide, "size", None)

    def site_dists(self, x, y=None, idx=None):
        """``{site: Delta}`` at the wrapped guide's location for each latent site (for a
        :class:`LocalGuide`, its ``loc`` mapped onto the site's support)."""
        if isinstance(self.guide, LocalGuide):
            out = {}
            for name, fn in self.guide.site_dists(x, y, idx).items():
                if fn.support.is_discrete:  # the class keeps its q, summed out exactly
                    out[name] = fn
                    continue
                point = (
                    fn.base_dist.mean if isinstance(fn, dist.TransformedDistribution) else fn.mean
                )
                for t in getattr(fn, "transforms", []):
                    point = t(point)
                out[name] = dist.Delta(point, event_dim=len(fn.event_shape))
            return out
        return {"z": self.z_dist(x, y, idx)}

    def z_dist(self, x, y=None, idx=None):
        if isinstance(self.guide, LocalGuide):
            return next(iter(self.site_dists(x, y, idx).values()))
        return dist.Delta(self.guide.z_dist(x, y, idx).mean, event_dim=1)

    def forward(self, x, y=None, idx=None, size=None):
        if not isinstance(self.guide, LocalGuide):
            return super().forward(x, y, idx, size)
        dists = self.site_dists(x, y, idx)
        with self.guide.plate(x.shape[0], idx, size), poutine.scale(scale=self.z_scale):
            return {name: pyro.sample(name, fn) for name, fn in dists.items()}


class FamilyGuide(Guide):
    """An amortized guide of another family (:mod:`pyro_vae.families`) made from any guide whose
    latent sites are Gaussian: ``guide`` runs as it is, and each latent site's
    ``Normal(loc, scale)`` becomes the family's q built on it::

        loc, scale = what guide samples each latent site from      # the encoder, as trained
        z ~ family(loc, scale, extra(loc, scale))                    # e.g. MVN, or a flow on top

    For ``fullcov`` the extra numbers are the lower triangle of the scale, from a network on the
    encoder's ``(loc, log scale)``; for ``flow`` the inverse autoregressive flow is conditioned on
    them (Kingma et al. 2016's context). Sites the guide samples later see the new values, so a
    guide whose sites depend on each other (the hierarchical model's) keeps its order.

    :param guide: an amortized guide behind the program door (``program.guide``).
    :param str family: a name from :data:`pyro_vae.families.FAMILIES`.
    :param structure: the program's structure (default ``guide.structure``).
    :param int flow_layers: flow steps for ``family="flow"``.
    """

    def __init__(self, guide, family="fullcov", structure=None, flow_layers=None):
        super().__init__()
        structure = structure or guide.structure
        self.guide = guide
        self.family, self.flow_layers = family, flow_layers
        self.index = {site.name: i for i, site in enumerate(structure.latents)}
        self.families = nn.ModuleDict()
        for i, site in enumerate(structure.latents):
            if not _is_real(site.support):
                raise ConfigError(
                    f"the amortized {family} family reshapes a Gaussian on the real line; latent "
                    f"site {site.name!r} lives on {site.support}: use --guide-family diag, or a "
                    "model file without a guide (its per-image guide takes every family)"
                )
            self.families[str(i)] = make_family(family, site.numel, flow_layers)
        self._recorded = None

    @property
    def structure(self):
        return self.guide.structure

    @property
    def z_scale(self):
        return getattr(self.guide, "z_scale", 1.0)

    @z_scale.setter
    def z_scale(self, value):  # beta and KL warm-up reach the guide that scales its sites
        if "guide" in self._modules:
            self.guide.z_scale = value

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        """The wrapped guide's own parameters (not those of modules it shares with the model)
        and the family's."""
        dot = prefix + "." if prefix else ""
        yield from self.guide.named_parameters(dot + "guide", recurse, remove_duplicate)
        yield from self.families.named_parameters(dot + "families", recurse, remove_duplicate)

    def forward(self, x, y=None, idx=None, size=None):
        with _FamilySwap(self):
            return self.guide(x, y, idx, size)

    def z_dist(self, x, y=None, idx=None):
        """q of the code site for the images ``x``."""
        name = self.structure.code.name
        return poutine.trace(self).get_trace(x, y, idx).nodes[name]["fn"]

    @torch.no_grad()
    def parts(self, x, y=None):
        """``{site: (loc, log_scale, extra)}`` for the images ``x``, each ``(N, D)`` or
        ``(N, extra_dim)``: what a :class:`LocalGuide` of this family needs to start at q."""
        swap = _FamilySwap(self)
        with swap:
            poutine.trace(self.guide).get_trace(x, y)
        return swap.parts


class _FamilySwap(Messenger):
    """Replaces each latent site's Gaussian by the family's q built on it (see
    :class:`FamilyGuide`), recording the parts."""

    def __init__(self, owner):
        super().__init__()
        self.owner = owner
        self.parts = {}

    def _pyro_sample(self, msg):
        i = self.owner.index.get(msg["name"])
        if i is None or msg["is_observed"]:
            return
        fn = msg["fn"]
        base = fn
        while isinstance(base, dist.Independent):
            base = base.base_dist
        if not isinstance(base, dist.Normal):
            raise ModelFileError(
                f"the {self.owner.family} guide family builds on the guide's Normal at each latent "
                f"site, but site {msg['name']!r} is a {type(base).__name__}; use --guide-family "
                "diag"
            )
        event_dims = len(fn.event_shape)
        shape = fn.batch_shape + fn.event_shape
        loc, log_scale = base.loc.expand(shape), base.scale.expand(shape).log()
        batch = shape[: len(shape) - event_dims]
        family = self.owner.families[str(i)]
        flat_loc, flat_log_scale = loc.reshape(*batch, -1), log_scale.reshape(*batch, -1)
        extra = family.amortized_extra(flat_loc, flat_log_scale)
        msg["fn"] = family.site_dist(loc, log_scale, extra, event_dims)
        self.parts[msg["name"]] = (flat_loc, flat_log_scale, extra)


#: A labelled image's q(y|x): logit 0 on its label, this on the others (mass exp(-30) each).
LABEL_LOGIT = -30.0


class ClassGuide(Guide):
    """The guide of :class:`~pyro_vae.models.ClassVAE` (M2 and the mixture VAE)::

        y ~ OneHotCategorical(softmax(cls(x)))    # the classifier q(y|x)
        z ~ Normal(enc(x, y))                     # the style given the class

    For a labelled image (``y >= 0``) q(y|x) is the point mass on its label (up to
    ``exp(LABEL_LOGIT)`` on each other class, which keeps every estimator's log-densities finite),
    so the ELBO is Kingma et al.'s labelled bound ``L(x, y)`` for it.

    With ``z_reads_y=False`` (the Gaussian-mixture VAE) the code's guide is q(z|x), as in Jiang
    et al.'s (2017) VaDE: the cluster must then be the one whose bump of the prior holds z, so
    q(y|x) learns which that is. Were it q(z|x, y), z could move into whichever bump y names and
    every cluster would explain every image equally well.

    :param classifier: a network from images to ``K`` logits.
    :param encoder: a network ``encoder(x, c)`` returning ``(loc, scale)`` of z.
    :param int num_classes: K.
    :param bool z_reads_y: whether q(z | x, y) reads the class (M2) or not (the mixture).
    """

    def __init__(self, classifier, encoder, num_classes, z_reads_y=True):
        super().__init__()
        self.classifier = classifier
        self.encoder = encoder
        self.num_classes = num_classes
        self.z_reads_y = z_reads_y

    def y_logits(self, x, y=None):
        logits = self.classifier(x)
        if y is None:
            return logits
        labelled = (y >= 0)[:, None]
        onehot = nn.functional.one_hot(y.clamp(min=0).long(), self.num_classes).to(logits)
        return torch.where(labelled, LABEL_LOGIT * (1 - onehot), logits)

    def forward(self, x, y=None, idx=None, size=None):
        with data_plate(x, idx, size):
            c = pyro.sample("y", dist.OneHotCategorical(logits=self.y_logits(x, y)))
            q_z = dist.Normal(*self.encoder(x, c if self.z_reads_y else None))
            return pyro.sample("z", q_z.to_event(1))

    @torch.no_grad()
    def classify(self, x):
        """The most probable class under q(y|x) for each image, ``(N,)``."""
        return self.classifier(x).argmax(-1)


def per_image(guide):
    """Whether ``guide`` holds parameters per training image, so that it has no q for any other
    image: a :class:`LocalGuide`, alone, inside a :class:`DeltaGuide` or behind the program door.
    The one answer every part of pyro_vae asks."""
    inner = getattr(guide, "fn", guide)  # a program's half: the guide it wraps
    return isinstance(getattr(inner, "guide", inner), LocalGuide)
