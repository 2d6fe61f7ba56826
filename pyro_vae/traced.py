"""The training loss recorded once and replayed: a Pyro ELBO without Pyro's per-step Python.

Every step of :func:`pyro_vae.fit` runs the same program on a minibatch of the same shape: Pyro
builds the model's and guide's traces through its effect handlers, validates every site, looks
parameters up in the program's store and computes log-densities, of which the ELBO keeps a few
tensor operations. :class:`TracedLoss` records those operations once per minibatch shape with
``torch.jit.trace``, the parameters and buffers of model and guide as the recording's inputs (as
Pyro's own ``JitTrace_ELBO`` passes ``pyro.param`` values, but for every tensor the program
reads, so modules under ``module_local_params`` are included), and replays the recording on each
new minibatch. The random draws are recorded as operations, so every replay draws afresh from
torch's generator, the same numbers the eager step would draw.

The replay runs without TorchScript's graph optimizations: the operations, their order and
autograd's backward are then the eager step's, so losses and gradients are those of the eager
Pyro step bit for bit (``tests/test_traced.py`` checks every model, guide and ELBO), and resuming
a run gives the same result whether or not a recording was made before the interruption.

What the recording leaves out, and who does it instead:

- Pyro's validation of the data against the image site's support: :func:`data_in_support` checks
  the whole training set once, before training (data binarized per minibatch needs none). The
  program's own checks and Pyro's validation still run in full on the first minibatch of each
  shape, so a broken program fails with the eager step's error.
- Pyro's checks of distribution parameters: a parameter gone non-finite makes the loss
  non-finite, which the trainer checks every step.

The discrete strategy that sums a finite site's values out (``--discrete enumerate``, Pyro's
``TraceEnum_ELBO``) is recorded as the continuous ELBOs are: the sum over the values is tensor
operations on the enumerated values, the same for every minibatch of a shape (the built-in M2
computes its classification term on every minibatch with labels, a labelled image or not, so
that the recording of one holds for all).

Where a recording cannot be trusted it is not used (:class:`NotTraceable`, and the trainer falls
back to the eager step with a one-line notice): an ELBO other than the ones in :data:`LOSSES`
(a subclass may change the loss; the score-function and relaxed estimators are not recorded
yet), a loss that calls the program more than once per minibatch (a model file trained with
``--labels``: :class:`pyro_vae.semi.SemiSupervisedLoss`), a guide site without a
reparameterized sampler under ``Trace_ELBO`` (its score-function surrogate is not its loss), a program that branches on a tensor's value
(the recording would freeze the branch), or a tensor that needs a gradient and is neither a
parameter nor a buffer of model or guide.
"""

import contextlib
import logging
import os
import sys
import warnings
from unittest import mock

import pyro
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.elbo import ELBOModule
from pyro.infer.traceenum_elbo import _compute_dice_elbo
from pyro.infer.util import is_identically_zero

from .discrete import Enumerate, enumerated
from .objectives import IWAE


class NotTraceable(Exception):
    """The loss cannot be recorded faithfully; the message says why."""


def _differentiable_loss(elbo, model, guide, args):
    """The ELBO's own differentiable loss, where it computes the loss as one tensor (IWAE)."""
    return elbo.differentiable_loss(model, guide, *args)


def _surrogate_loss(elbo, model, guide, args):
    """``Trace_ELBO``'s (and ``TraceMeanField_ELBO``'s) loss as its surrogate, summed over
    particles in the order ``Trace_ELBO.differentiable_loss`` sums them. That method returns ``loss + (surrogate -
    surrogate.item())``, whose ``.item()`` a recording would freeze; the surrogate alone has the
    same gradient, and the same value where every guide site is reparameterized (checked)."""
    total = 0.0
    for model_trace, guide_trace in elbo._get_traces(model, guide, args, {}):
        for site in guide_trace.nodes.values():
            if site["type"] == "sample" and not site["is_observed"] and not site["fn"].has_rsample:
                raise NotTraceable(
                    f"the guide's site {site['name']!r} has no reparameterized sampler, so "
                    "Trace_ELBO's gradient estimate is a surrogate whose value is not the loss"
                )
        _, surrogate = elbo._differentiable_loss_particle(model_trace, guide_trace)
        total = total + surrogate / elbo.num_particles
    return total


def _enumerated_loss(objective, model, guide, args):
    """``TraceEnum_ELBO``'s loss for the :class:`~pyro_vae.discrete.Enumerate` strategy (the
    finite discrete sites summed out), computed as its ``differentiable_loss`` computes it but
    for its check that the loss requires a gradient: a recording's inputs are traced, not
    differentiated, while it records."""
    elbo = objective.elbo
    total = 0.0
    guide = enumerated(guide, objective.names)
    for model_trace, guide_trace in elbo._get_traces(model, guide, args, {}):
        particle = _compute_dice_elbo(model_trace, guide_trace)
        if not is_identically_zero(particle):
            total = total + particle
    return -(total / elbo.num_particles)


#: How each ELBO's loss is recorded, by exact type (a subclass may compute another loss).
#: ``TraceMeanField_ELBO`` inherits ``Trace_ELBO.differentiable_loss`` and its ``.item()``.
LOSSES = {
    TraceMeanField_ELBO: _surrogate_loss,
    IWAE: _differentiable_loss,
    Trace_ELBO: _surrogate_loss,
    Enumerate: _enumerated_loss,
}

# Source files whose conversions of tensors to Python values during a recording are bookkeeping
# or branches on sizes (Pyro's ELBOs log float losses; torch reads sizes; the program door
# compares a minibatch's size with the data set's), never on data: a recording is made per
# minibatch shape. A user's program is not trusted so.
_LIBRARIES = tuple(
    os.path.dirname(m.__file__) + os.sep for m in (pyro, torch, sys.modules[__package__])
)


class TracedLoss:
    """``loss_fn(x, y, idx, n)`` for ``loss_fn = elbo(model, guide)`` (Pyro's ``ELBOModule``),
    recorded per minibatch shape and replayed.

    :param loss_fn: the ELBO as a loss module.
    :raises NotTraceable: for an ELBO not in :data:`LOSSES`.
    """

    def __init__(self, loss_fn):
        self.loss_fn = loss_fn
        if not isinstance(loss_fn, ELBOModule):
            raise NotTraceable(
                f"the loss {type(loss_fn).__name__} is not the ELBO of one call of the program "
                "on the minibatch (it splits labelled and unlabelled images)"
            )
        elbo = loss_fn.elbo
        self.how = LOSSES.get(type(elbo))
        if self.how is None:
            raise NotTraceable(
                f"{type(elbo).__name__} is not one of the ELBOs pyro_vae records "
                f"({', '.join(t.__name__ for t in LOSSES)})"
            )
        seen = {}  # every tensor once (a tied weight has several names), by its first name
        for name, t in (*loss_fn.named_parameters(), *loss_fn.named_buffers()):
            seen.setdefault(id(t), (name, t))
        self.names = [name for name, _ in seen.values()]
        self.inputs = [t for _, t in seen.values()]
        self.buffers = list(loss_fn.buffers())
        self._recordings = {}
        self.failed = None  # why the recording cannot apply, once found
        self.notify = None

    def give_up(self, reason):
        """Stop recording for good; tell ``notify`` (a callable taking one line) why."""
        self.failed = reason
        self._recordings.clear()
        if self.notify is not None:
            self.notify(reason)

    def reset(self):
        """Forget the recordings (the program's Python state may have changed, e.g. by a
        per-epoch hook)."""
        self._recordings.clear()

    def _key(self, x, y, idx, n):
        model, guide = self.loss_fn.model, self.loss_fn.guide
        return (
            tuple(x.shape),
            x.dtype,
            x.device,
            None if y is None else "x" if y is x else (tuple(y.shape), y.dtype),
            None if idx is None else tuple(idx.shape),
            n,
            _scales(model),
            _scales(guide),
            model.training,
            guide.training,
            torch.is_grad_enabled(),
            tuple(t.requires_grad for t in self.inputs),
        )

    def __call__(self, x, y, idx, n):
        key = self._key(x, y, idx, n)
        recording = self._recordings.get(key)
        if recording is None:
            recording = self._recordings[key] = self._record(x, y, idx, n)
        with torch.jit.optimized_execution(False):
            return recording(*_args(x, y), idx, *self.inputs)

    def _record(self, x, y, idx, n):
        """Run the eager loss once with validation on (a broken program or minibatch fails as
        it would without recording), then record it; neither touches torch's generator nor
        leaves a trace in the buffers (a batch norm's running statistics)."""
        saved = [b.clone() for b in self.buffers]
        try:
            with torch.random.fork_rng(devices=_devices(x)), torch.no_grad():
                loss_fn = self.loss_fn
                self.how(loss_fn.elbo, loss_fn.model, loss_fn.guide, (x, y, idx, n))
            if idx is None:
                raise NotTraceable("the minibatch has no positions in the data set")
            return self._make(x, y, idx, n)
        finally:
            with torch.no_grad():
                for b, value in zip(self.buffers, saved):
                    b.copy_(value)

    def _make(self, x, y, idx, n):
        """The recording of the loss on this minibatch's shape (``torch.jit.trace``)."""
        surrogate = _Surrogate(self.loss_fn, self.how, n, y)
        args = _args(x, y)

        def loss(*tensors):  # the parameters follow, found by identity
            return surrogate.forward(*tensors[: len(args) + 1])

        with (
            torch.random.fork_rng(devices=_devices(x)),
            pyro.validation_enabled(False),
            warnings.catch_warnings(record=True) as caught,
        ):
            warnings.simplefilter("always")
            try:
                recording = torch.jit.trace(
                    loss, (*args, idx, *self.inputs), check_trace=False, strict=False
                )
            except NotTraceable:
                raise
            except Exception as e:
                raise NotTraceable(f"torch.jit.trace failed: {_first_line(e)}") from None
        for w in caught:
            if issubclass(w.category, torch.jit.TracerWarning) and not w.filename.startswith(
                _LIBRARIES
            ):
                raise NotTraceable(
                    f"the program turns a tensor into a Python value at "
                    f"{os.path.basename(w.filename)}:{w.lineno} (a branch on data, which a "
                    "recording would freeze)"
                )
        return recording


def _args(x, y):
    """The minibatch's tensors as a recording takes them, before ``idx``."""
    return (x,) if y is None or y is x else (x, y)


def _devices(x):
    """The CUDA devices whose generators ``fork_rng`` must keep, for tensors like ``x``."""
    return [x.device] if x.device.type == "cuda" else []


def _first_line(e):
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class CompiledLoss(TracedLoss):
    """A :class:`TracedLoss` whose full minibatches run a compiled loss: the ELBO's tensor
    operations captured once as a graph of ATen operations (``make_fx``, the parameters and
    buffers as inputs through ``torch.func.functional_call``) and compiled by ``torch.compile``
    (TorchInductor: the elementwise operations of the loss and of its backward pass fused into
    a few kernels). Random numbers come from torch's generator as in the eager step
    (``fallback_random``), so the draws are the eager step's; losses and gradients equal the eager
    step's to float rounding (the fused kernels sum in another order), and a resumed run compiles
    the same graph, so resuming stays bit-identical.

    Compiling costs seconds once per program and batch size (for the default MLP on two CPU
    cores, a few seconds with torch's compilation cache warm, about half a minute cold), so it
    pays on long runs only.
    Minibatches of other sizes (an epoch's last, smaller one) replay the recording of
    :class:`TracedLoss`; where the capture or the compiler fails, so do full ones (``notify`` is
    told why, through ``announce``).

    :param int batch_size: the size of the minibatches to compile for.
    :param compiler: turns the captured ``torch.fx.GraphModule`` into a callable (default
        :func:`inductor`).
    :param announce: told, in one line, when a compilation starts.
    """

    def __init__(self, loss_fn, batch_size, compiler=None, announce=None):
        super().__init__(loss_fn)
        self.batch_size = batch_size
        self.compiler = inductor if compiler is None else compiler
        self.announce = announce
        self.compile_failed = None  # why full minibatches are recorded instead, once found

    def _make(self, x, y, idx, n):
        if x.shape[0] != self.batch_size or self.compile_failed is not None:
            return super()._make(x, y, idx, n)
        try:
            return self._capture_and_compile(x, y, idx, n)
        except NotTraceable as e:
            self.compile_failed = str(e)
            if self.announce is not None:
                self.announce(f"the training step is recorded, not compiled: {e}")
        return super()._make(x, y, idx, n)

    def _capture_and_compile(self, x, y, idx, n):
        from torch.fx.experimental.proxy_tensor import make_fx

        loss = _Surrogate(self.loss_fn, self.how, n, y)
        args = _args(x, y)
        names, k = [f"loss_fn.{name}" for name in self.names], len(args) + 1

        def captured(*tensors):
            inputs = dict(zip(names, tensors[k:]))
            return torch.func.functional_call(loss, inputs, tensors[:k])

        with (
            torch.random.fork_rng(devices=_devices(x)),
            pyro.validation_enabled(False),
            _loss_values_unread(),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            try:
                graph = make_fx(captured)(*args, idx, *self.inputs)
            except NotTraceable:
                raise
            except Exception as e:
                raise NotTraceable(f"the loss could not be captured: {_first_line(e)}") from None
        for name, t in (*graph.named_parameters(), *graph.named_buffers()):
            if t.requires_grad:
                raise NotTraceable(f"the loss reads a tensor that needs a gradient ({name})")
        for name in dir(graph):
            if name.startswith("_tensor_constant") and getattr(graph, name).requires_grad:
                raise NotTraceable(
                    "the loss reads a tensor that needs a gradient and is no "
                    "parameter of the program"
                )
        if self.announce is not None:
            self.announce(
                f"compiling the training step for minibatches of {self.batch_size} "
                "(once per run; seconds to a minute)"
            )
        # Compile now, forward and backward, on the example (its draws and gradients unused),
        # so that a compiler that fails falls back here rather than in the middle of a step.
        params = [t for t in self.inputs if t.requires_grad]
        try:
            with torch.random.fork_rng(devices=_devices(x)), _compiler_logs_quiet():
                compiled = self.compiler(graph)
                value = compiled(*args, idx, *self.inputs)
                if params and value.requires_grad:
                    torch.autograd.grad(value, params, allow_unused=True)
        except Exception as e:
            raise NotTraceable(f"torch.compile failed: {_first_line(e)}") from None
        return compiled


class _Surrogate(torch.nn.Module):
    """The ELBO's recorded loss as a module around the loss module, for ``functional_call``."""

    def __init__(self, loss_fn, how, n, y):
        super().__init__()
        self.loss_fn, self.how, self.n, self.y = loss_fn, how, n, y

    def forward(self, x, *rest):
        y = x if self.y is x else (rest[0] if self.y is not None else None)
        idx = rest[-1]
        elbo, loss_fn = self.loss_fn.elbo, self.loss_fn
        value = self.how(elbo, loss_fn.model, loss_fn.guide, (x, y, idx, self.n))
        if not torch.is_tensor(value):
            raise NotTraceable("the loss is not a tensor")
        return value


@contextlib.contextmanager
def _loss_values_unread():
    """Pyro's ELBOs read the loss's value as a Python float beside the differentiable loss (for
    logging); a capture cannot, and the recorded loss never uses it. Only those reads are
    replaced; any other conversion of a tensor to a number (a branch on data) still fails."""
    import pyro.infer.trace_elbo as trace_elbo
    import pyro.infer.trace_mean_field_elbo as trace_mean_field_elbo

    def unread(x):
        return x if not torch.is_tensor(x) else 0.0

    with (
        mock.patch.object(trace_elbo, "torch_item", unread),
        mock.patch.object(trace_mean_field_elbo, "torch_item", unread),
    ):
        yield


@contextlib.contextmanager
def _compiler_logs_quiet():
    """torch's C++ toolchain logs a warning when it finds no CUDA runtime; on a CPU it means
    nothing to the user."""
    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def inductor(graph):
    """``torch.compile`` with TorchInductor, drawing random numbers from torch's generator."""
    return torch.compile(graph, dynamic=False, options={"fallback_random": True})


#: How :func:`pyro_vae.fit` runs each training step (``fit(step=...)``, ``--step``): ``recorded``,
#: the ELBO's operations recorded and replayed (bit for bit the eager step); ``compiled``, full
#: minibatches through a compiled loss (:class:`CompiledLoss`: faster per step, seconds to
#: compile); ``eager``, Pyro's eager step with every check on every step.
STEPS = {
    "recorded": lambda loss_fn, batch_size, announce: TracedLoss(loss_fn),
    "compiled": lambda loss_fn, batch_size, announce: CompiledLoss(
        loss_fn, batch_size, announce=announce
    ),
    "eager": None,
}


def lean_loss(loss_fn, model, data, notify=None, step="recorded", batch_size=None, announce=None):
    """The loss :func:`pyro_vae.fit` steps on, by ``step`` (a name in :data:`STEPS`): a
    :class:`TracedLoss` (or :class:`CompiledLoss`) for ``loss_fn`` on the training set of
    ``data``, or ``None`` for the eager step: where ``step`` is ``"eager"`` or a recording
    cannot apply (``notify`` is told why, in one line). Training images outside the image
    site's support also get ``None``, silently: the eager step's validation then stops training
    at the first minibatch holding one, with the error it always gave. ``announce`` is told when
    a compilation starts."""
    make = STEPS[step]
    if make is None:
        return None
    try:
        traced = make(loss_fn, batch_size, announce)
    except NotTraceable as e:
        if notify is not None:
            notify(str(e))
        return None
    if not data_in_support(model, data):
        return None
    traced.notify = notify
    return traced


def data_in_support(model, data, chunk=4096):
    """Whether every training image lies in the support of the model's image site, as Pyro's
    validation would check minibatch by minibatch; minibatches binarized afresh (``dynamic``)
    are binary whatever the stored images are."""
    from pyro import poutine

    if data.binarize == "dynamic":
        return True
    structure = model.structure
    x, y = data.example_batch()
    with torch.no_grad(), pyro.validation_enabled(False):
        site = poutine.trace(model).get_trace(x, y).nodes[structure.image]
        support = site["fn"].support
        for start in range(0, data.train_x.shape[0], chunk):
            images = structure.to_model(data.train_x[start : start + chunk])
            if not bool(support.check(images).all()):
                return False
    return True


def _scales(half):
    """The factors a program's latent sites are scaled by: the program's (``half.z_scale``) and a
    wrapped built-in module's own (``poutine.scale`` by its ``z_scale``, for a module used
    outside the door)."""
    return (getattr(half, "z_scale", None), getattr(getattr(half, "target", None), "z_scale", None))
