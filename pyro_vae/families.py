"""Guide families: the shape of q over one latent site's numbers, for any guide.

A guide decides *where* q's parameters come from (an encoder, a free table per image); a family
decides *what shape* q has. Every family here starts from the same Gaussian, a ``loc`` and a
``log_scale`` over the site's D unconstrained numbers, and adds ``extra_dim`` numbers per image:

=========  ================================================================  ===============
family     q over the site's D numbers                                       extra per image
=========  ================================================================  ===============
diag       ``Normal(loc, scale)``: independent numbers (the usual guide)     0
fullcov    ``MultivariateNormal(loc, scale_tril=diag(scale) + L)``,          D(D-1)/2
           ``L`` strictly lower triangular: every correlation
flow       a Gaussian through K conditional inverse autoregressive           2D, per image
           flow steps (Kingma et al. 2016) conditioned on a context          also D(D-1)/2
=========  ================================================================  ===============

Every family is the diagonal Gaussian at initialization (``L = 0``; each flow step's output
layer is zero, so each step is the identity), so a guide of any family starts where a ``diag``
guide stands and can only improve on it.

Amortized (:class:`pyro_vae.guides.FamilyGuide`), the extra numbers come from the encoder's
output: for ``fullcov`` a network maps the encoder's ``(loc, log_scale)`` to ``L`` (the full
lower triangle, not a low-rank factor: at the latent sizes pyro_vae trains, a few hundred numbers
at most, its D(D-1)/2 outputs cost less than the decoder, and only the full triangle can hold an
arbitrary posterior covariance, which the linear-Gaussian tests check against the exact one);
for ``flow`` the flow's context *is* the encoder's ``(loc, log_scale)``. Per image
(:class:`pyro_vae.guides.LocalGuide`), ``L`` is a free table (its numbers times ``D ** -0.5``,
see :class:`FullCovariance`), and ``flow`` is one flow shared
by all images conditioned on a free context per image (initialized to the image's
``(loc, log_scale)``), on a full-covariance Gaussian per image (see :class:`Flow`): free flow
weights per image would cost O(D * hidden) numbers per image with nothing tying them, while the
shared flow with a per-image context is the amortized flow with its context looked up instead of
computed, so an E-step started from an amortized flow guide starts *at* its q
(:meth:`~pyro_vae.guides.LocalGuide.from_guide` copies the flow).

The flow is built from ``pyro.distributions.transforms`` (Pyro's own
``ConditionalAffineAutoregressive`` on a MADE network) rather than Zuko through
``pyro.contrib.zuko``: it is in Pyro's tree (no new dependency), it is a ``TransformedDistribution``
that Pyro's plates broadcast over the particles of evaluation, and its inverse is cached, so the
ELBO scores its own samples without inverting the flow.

Choosing a family is choosing an entry of :data:`FAMILIES`; the CLI's ``--guide-family`` choices
and help, the docs' table and the tests are made from it.
"""

from dataclasses import dataclass

import pyro.distributions as dist
import torch
from pyro.distributions.transforms import ConditionalAffineAutoregressive, ReshapeTransform
from pyro.nn import ConditionalAutoRegressiveNN
from torch import nn
from torch.nn.utils import parametrize

from .errors import ConfigError
from .nets import make_fc

#: Flow steps when none are asked for.
DEFAULT_FLOW_LAYERS = 2
#: How much slower a per-image flow's shared weights move than the per-image numbers under the
#: same optimizer (see :class:`Flow`).
SHARED_STEP = 0.1


class Family(nn.Module):
    """A guide family over one latent site of ``dim`` unconstrained numbers (see the module
    docstring). Subclasses set ``extra_dim`` and define :meth:`dist`."""

    extra_dim = 0

    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def dist(self, loc, log_scale, extra):
        """q over R^D (event shape ``(D,)``) from ``loc``, ``log_scale`` ``(..., D)`` and the
        family's ``extra`` ``(..., extra_dim)``."""
        raise NotImplementedError

    def amortized_extra(self, loc, log_scale):
        """The extra numbers an encoder's ``(loc, log_scale)`` give (amortized guides)."""
        return loc.new_zeros(*loc.shape[:-1], self.extra_dim)

    def local_extra(self, loc, log_scale):
        """The extra numbers a per-image guide starts from."""
        return loc.new_zeros(*loc.shape[:-1], self.extra_dim)

    def local_from_amortized(self, extra):
        """A per-image guide's extra numbers that give the amortized family's q (``extra`` from
        :meth:`amortized_extra`)."""
        return extra

    def local_holding(self, source, loc, log_scale, extra):
        """This per-image family's extra numbers that give exactly the q of ``source``, another
        family over the same numbers (amortized, its ``extra`` from :meth:`amortized_extra`), or
        ``None`` where this family does not contain it. Every family contains the diagonal one."""
        return self.local_extra(loc, log_scale) if isinstance(source, Diagonal) else None

    @torch.no_grad()
    def copy_from(self, other):
        """Take the shared weights of ``other``, a family of the same kind and size."""
        self.load_state_dict(other.state_dict())

    def site_dist(self, loc, log_scale, extra, event_dims, transform=None):
        """q of a site whose unconstrained value has shape ``loc.shape[-event_dims:]``, mapped
        onto its support by ``transform`` (``None``: the site is real)."""
        shape = loc.shape[loc.dim() - event_dims :]
        batch = loc.shape[: loc.dim() - event_dims]
        flat = self.dist(loc.reshape(*batch, self.dim), log_scale.reshape(*batch, self.dim), extra)
        transforms = []
        if tuple(shape) != (self.dim,):
            transforms.append(ReshapeTransform((self.dim,), shape, cache_size=1))
        if transform is not None:
            transforms.append(transform.with_cache(1))
        return dist.TransformedDistribution(flat, transforms) if transforms else flat


class Diagonal(Family):
    """``Normal(loc, exp(log_scale))`` on every number independently."""

    def dist(self, loc, log_scale, extra=None):
        return dist.Normal(loc, log_scale.exp()).to_event(1)

    def site_dist(self, loc, log_scale, extra, event_dims, transform=None):
        # the site's own shape, no reshape: the diagonal family as pyro_vae always built it
        base = dist.Normal(loc, log_scale.exp()).to_event(event_dims)
        return base if transform is None else dist.TransformedDistribution(base, transform)


class FullCovariance(Family):
    """``MultivariateNormal(loc, scale_tril)`` with ``scale_tril = diag(exp(log_scale)) + L``
    and ``L`` the strictly lower triangle in ``extra``. Amortized, ``L`` is
    ``head(loc, log_scale)``, a one-hidden-layer network whose output layer starts at zero.

    Per image (``per_image``), ``L`` is ``extra`` times ``D ** -0.5``, so that a row's D - 1
    free numbers together move about as far per optimizer step as one of the log-scales beside
    them. Adam moves every number by about its learning rate per step: with ``L`` the numbers
    themselves, an E-step at the default rate (0.1) diverged on a 50-D Fashion-MNIST posterior,
    whose scales are 0.05 to 0.2. (Numbers relative to the scales, ``(I + L) diag(scale)``, did
    not diverge but slowed the 2-D E-step: an elongated posterior needs entries many scales
    long.)"""

    def __init__(self, dim, hidden=None, per_image=False):
        super().__init__(dim)
        self.per_image = per_image
        self.extra_dim = dim * (dim - 1) // 2
        self.register_buffer("rows", torch.tril_indices(dim, dim, -1)[0], persistent=False)
        self.register_buffer("cols", torch.tril_indices(dim, dim, -1)[1], persistent=False)
        self.head = make_fc([2 * dim, hidden or max(2 * dim, 32), max(self.extra_dim, 1)])
        _zero_output(self.head[-1])

    def dist(self, loc, log_scale, extra):
        tril = _scale_tril(self, log_scale, extra, self.per_image)
        return dist.MultivariateNormal(loc, scale_tril=tril)

    def amortized_extra(self, loc, log_scale):
        return self.head(torch.cat([loc, log_scale], -1))[..., : self.extra_dim]

    def local_from_amortized(self, extra):
        return extra * self.dim**0.5  # the per-image numbers of the same L (see _scale_tril)


def _scale_tril(family, log_scale, tril, per_image=False):
    """``diag(exp(log_scale)) + L``, with L's strictly lower triangle from ``tril``, times
    ``D ** -0.5`` for a per-image family (see :class:`FullCovariance`)."""
    scale_tril = log_scale.new_zeros(*log_scale.shape, family.dim)
    if family.extra_dim:  # a site of one number has no correlations (and no ``tril``)
        scale_tril[..., family.rows, family.cols] = tril * family.dim**-0.5 if per_image else tril
    return scale_tril + torch.diag_embed(log_scale.exp())


class Flow(Family):
    """A Gaussian pushed through ``layers`` steps of an inverse autoregressive flow (Kingma et
    al. 2016), each a MADE network (Germain et al. 2015) with one hidden layer of ``4 D`` units
    that reads the sample so far and a context of ``2 D`` numbers. Successive steps read the
    numbers in opposite orders. Each step's output layer starts at zero, so the flow starts as
    the identity.

    Amortized, the Gaussian is the encoder's diagonal one, as in Kingma et al. Per image
    (``per_image=True``) it is a full-covariance Gaussian, its lower triangle free per image like
    ``fullcov``'s, and the context is free per image: a flow shared by the images learns the
    shapes they have in common, but it learned each image's own correlations slowly from a
    per-image context (on a 2-D VAE of mnist-small, 1,000 E-steps left its q* at the diagonal
    family's ELBO while fullcov's closed part of the gap), so the triangle carries them and the
    per-image flow family contains the full-covariance one.

    Per image, the flow's weights are shared by all the images an E-step fits at once, each
    image's numbers are its own; under one Adam learning rate the shared weights move
    :data:`SHARED_STEP` times as far as the per-image numbers (each weight is ``SHARED_STEP``
    times a parameter). At the same step, a move that helped most images wrecked a few (on the
    2-D VAE, one image of 500 ended 30 nats below its full-covariance q*).
    """

    def __init__(self, dim, layers=DEFAULT_FLOW_LAYERS, hidden=None, per_image=False):
        super().__init__(dim)
        if dim < 2:
            raise ConfigError(
                "the flow family needs latent sites of at least 2 numbers (on one number an "
                "autoregressive flow is one affine map: use diag)"
            )
        if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
            raise ConfigError(f"flow_layers must be a positive integer, got {layers!r}")
        self.per_image = per_image
        self.tril_dim = dim * (dim - 1) // 2 if per_image else 0
        self.extra_dim = self.tril_dim + 2 * dim
        self.register_buffer("rows", torch.tril_indices(dim, dim, -1)[0], persistent=False)
        self.register_buffer("cols", torch.tril_indices(dim, dim, -1)[1], persistent=False)
        order = torch.arange(dim)
        steps = []
        for k in range(layers):
            made = ConditionalAutoRegressiveNN(
                dim,
                2 * dim,
                [hidden or 4 * dim],
                permutation=order if k % 2 == 0 else order.flip(0),
            )
            _zero_output(made.layers[-1])
            if per_image:
                for layer in made.layers:
                    for name in ("weight", "bias"):
                        parametrize.register_parametrization(layer, name, _Scaled(SHARED_STEP))
            steps.append(ConditionalAffineAutoregressive(made))
        self.steps = nn.ModuleList(steps)

    @torch.no_grad()
    def copy_from(self, other):
        for mine, theirs in zip(self.steps, other.steps):
            for a, b in zip(mine.nn.layers, theirs.nn.layers):
                a.weight, a.bias = b.weight.detach().clone(), b.bias.detach().clone()

    def dist(self, loc, log_scale, extra):
        tril, context = extra[..., : self.tril_dim], extra[..., self.tril_dim :]
        if self.per_image:
            tril = _scale_tril(self, log_scale, tril, per_image=True)
            base = dist.MultivariateNormal(loc, scale_tril=tril)
        else:
            base = dist.Normal(loc, log_scale.exp()).to_event(1)
        return dist.TransformedDistribution(base, [step.condition(context) for step in self.steps])

    def amortized_extra(self, loc, log_scale):
        return torch.cat([loc, log_scale], -1)

    def local_extra(self, loc, log_scale):
        tril = loc.new_zeros(*loc.shape[:-1], self.tril_dim)
        return torch.cat([tril, loc, log_scale], -1)

    def local_from_amortized(self, extra):
        tril = extra.new_zeros(*extra.shape[:-1], self.dim * (self.dim - 1) // 2)
        return torch.cat([tril, extra], -1)

    def local_holding(self, source, loc, log_scale, extra):
        # per image, a full-covariance Gaussian through a flow that starts as the identity
        if self.per_image and isinstance(source, FullCovariance):
            return torch.cat([source.local_from_amortized(extra), loc, log_scale], -1)
        return super().local_holding(source, loc, log_scale, extra)


class _Scaled(nn.Module):
    """A parametrization: the tensor is ``factor`` times its parameter, so an optimizer step of
    a given size moves it ``factor`` times as far."""

    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, raw):
        return raw * self.factor

    def right_inverse(self, value):
        return value / self.factor


def _zero_output(layer):
    with torch.no_grad():
        layer.weight.zero_()
        if layer.bias is not None:
            layer.bias.zero_()


@dataclass(frozen=True)
class GuideFamily:
    """An entry of :data:`FAMILIES`: a name, the builder ``make(dim, flow_layers, per_image)``
    of the family's :class:`Family` for a site of ``dim`` numbers (for a per-image guide when
    ``per_image``), and what it is, in one line."""

    name: str
    make: object
    description: str


#: name -> :class:`GuideFamily`; the CLI's ``--guide-family`` choices, its help, the guide's table and
#: the tests read this table.
FAMILIES = {
    f.name: f
    for f in (
        GuideFamily(
            "diag",
            lambda dim, flow_layers=None, per_image=False: Diagonal(dim),
            "diagonal Gaussian: independent latent numbers (the usual VAE guide)",
        ),
        GuideFamily(
            "fullcov",
            lambda dim, flow_layers=None, per_image=False: FullCovariance(dim, per_image=per_image),
            "full-covariance Gaussian: a lower-triangular scale, every correlation",
        ),
        GuideFamily(
            "flow",
            lambda dim, flow_layers=None, per_image=False: Flow(
                dim, flow_layers or DEFAULT_FLOW_LAYERS, per_image=per_image
            ),
            "Gaussian through an inverse autoregressive flow (--flow-layers steps)",
        ),
    )
}


def check_family(name):
    """``name`` if it names an entry of :data:`FAMILIES`, else a :class:`ConfigError`."""
    if not isinstance(name, str) or name not in FAMILIES:
        raise ConfigError(f"unknown guide family {name!r}; choose one of {', '.join(FAMILIES)}")
    return name


def make_family(name, dim, flow_layers=None, per_image=False):
    """The :class:`Family` ``name`` for a site of ``dim`` unconstrained numbers, for a per-image
    guide when ``per_image``."""
    return FAMILIES[check_family(name)].make(dim, flow_layers, per_image)


def families_help():
    """The families as the CLI's ``--help`` lists them."""
    return "; ".join(f"{f.name}: {f.description}" for f in FAMILIES.values())
