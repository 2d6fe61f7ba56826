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

Where a recording cannot be trusted it is not used (:class:`NotTraceable`, and the trainer falls
back to the eager step with a one-line notice): an ELBO other than the ones in :data:`LOSSES`
(a subclass may change the loss), a guide site without a reparameterized sampler (its
score-function surrogate is not its loss), a program that branches on a tensor's value
(the recording would freeze the branch), or a tensor that needs a gradient and is neither a
parameter nor a buffer of model or guide.
"""

import os
import sys
import warnings

import pyro
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

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


#: How each ELBO's loss is recorded, by exact type (a subclass may compute another loss).
#: ``TraceMeanField_ELBO`` inherits ``Trace_ELBO.differentiable_loss`` and its ``.item()``.
LOSSES = {
    TraceMeanField_ELBO: _surrogate_loss,
    IWAE: _differentiable_loss,
    Trace_ELBO: _surrogate_loss,
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
        elbo = loss_fn.elbo
        self.how = LOSSES.get(type(elbo))
        if self.how is None:
            raise NotTraceable(
                f"{type(elbo).__name__} is not one of the ELBOs pyro_vae records "
                f"({', '.join(t.__name__ for t in LOSSES)})"
            )
        seen = {}
        for t in (*loss_fn.parameters(), *loss_fn.buffers()):
            seen.setdefault(id(t), t)
        self.inputs = list(seen.values())
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
            getattr(model, "z_scale", None),
            getattr(guide, "z_scale", None),
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
        args = (x,) if y is None or y is x else (x, y)
        with torch.jit.optimized_execution(False):
            return recording(*args, idx, *self.inputs)

    def _record(self, x, y, idx, n):
        """Run the eager loss once with validation on (a broken program or minibatch fails as
        it would without recording), then record it; neither touches torch's generator nor
        leaves a trace in the buffers (a batch norm's running statistics)."""
        saved = [b.clone() for b in self.buffers]
        try:
            return self._run_and_record(x, y, idx, n)
        finally:
            with torch.no_grad():
                for b, value in zip(self.buffers, saved):
                    b.copy_(value)

    def _run_and_record(self, x, y, idx, n):
        loss_fn, elbo = self.loss_fn, self.loss_fn.elbo
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            loss_fn(x, y, idx, n)
        if idx is None:
            raise NotTraceable("the minibatch has no positions in the data set")

        def loss(x, *rest):
            y_ = x if y is x else (rest[0] if y is not None else None)
            idx_ = rest[0 if y is None or y is x else 1]
            value = self.how(elbo, loss_fn.model, loss_fn.guide, (x, y_, idx_, n))
            if not torch.is_tensor(value):
                raise NotTraceable("the loss is not a tensor")
            return value

        args = (x,) if y is None or y is x else (x, y)
        with (
            torch.random.fork_rng(devices=devices),
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
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise NotTraceable(f"torch.jit.trace failed: {first}") from None
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


def lean_loss(loss_fn, model, data, notify=None):
    """A :class:`TracedLoss` for ``loss_fn`` on the training set of ``data``, or ``None`` where
    it cannot apply (``notify`` is told why, in one line). Training images outside the image
    site's support also get ``None``, silently: the eager step's validation then stops training
    at the first minibatch holding one, with the error it always gave."""
    try:
        traced = TracedLoss(loss_fn)
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
