"""Model-writing aids: each sample site with its shapes, and the plate diagram."""

import os
import shutil

import torch
from pyro.poutine.util import site_is_subsample

from .errors import PyroVAEError
from .modelfile import check_protocol
from .program import Half, Program, describe


@torch.no_grad()
def site_table(model, guide, x, y=None):
    """A text table of every sample site of the guide and of the model (replayed on the guide),
    with its distribution, batch and event shapes, for the batch ``x``. Checks the protocol first,
    so a broken model file gets a clear message instead of a table."""
    if not isinstance(model, Half):  # through the door first: the table ends with what it learned
        program = Program(model, guide, x, y)
        model, guide = program.model, program.guide
    model_trace, guide_trace = check_protocol(model, guide, x, y)
    rows = [("site", "program", "kind", "distribution", "batch shape", "event shape")]
    for program, trace in (("guide", guide_trace), ("model", model_trace)):
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            fn = site["fn"]
            kind = "observed" if site["is_observed"] else "latent"
            rows.append(
                (
                    name,
                    program,
                    kind,
                    _describe(fn),
                    str(tuple(fn.batch_shape)),
                    str(tuple(fn.event_shape)),
                )
            )
    plates = [
        f'plate "{f.name}": {_plate_size(f)}, dim {f.dim}'
        for f in {
            f
            for s in model_trace.nodes.values()
            if s["type"] == "sample"
            for f in s["cond_indep_stack"]
        }
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines + sorted(plates) + [""] + describe(model.structure))


def _plate_size(frame):
    """``"4 of 4"``; a plate opened without a size (``pyro.plate("data")``, size -1 in Pyro's
    record) takes its size from the sites' shapes, and says so."""
    if frame.size is None or frame.size < 0:
        return "no size given (as the batch)"
    return f"{frame.size} of {frame.full_size or frame.size}"


def _describe(fn):
    names = []
    while True:
        names.append(type(fn).__name__)
        inner = getattr(fn, "base_dist", None)
        if inner is None:
            return "(".join(names) + ")" * (len(names) - 1)
        fn = inner


def render(model, x, y, path):
    """Write the model's plate diagram with ``pyro.render_model`` (graphviz) to ``path``."""
    try:
        import graphviz  # noqa: F401
    except ImportError:
        raise PyroVAEError(
            "the plate diagram needs the graphviz Python package (pip install 'pyro_vae[diagram]') and "
            "Graphviz itself (apt-get install graphviz); pass --diagram none to skip it"
        ) from None
    if shutil.which("dot") is None:
        raise PyroVAEError(
            "the plate diagram needs Graphviz's dot program (apt-get install graphviz, or brew "
            "install graphviz); pass --diagram none to skip it"
        )
    import pyro

    from .checkpoints import _atomic_write

    suffix = os.path.splitext(os.fspath(path))[1][1:]
    with torch.no_grad():
        graph = pyro.render_model(model, model_args=(x, y), render_distributions=True)
    # Piped, not graph.render(): that writes the DOT source beside the image, as PATH without its
    # suffix, replacing (then deleting) whatever file of that name the user had.
    try:
        image = graph.pipe(format=suffix)
    except ValueError as e:  # graphviz names the formats it knows
        raise PyroVAEError(f"--diagram {path}: {str(e).splitlines()[0]}") from None
    _atomic_write(path, lambda f: f.write(image))
