"""Progress on stderr (training's, evaluation's), wherever stderr goes.

On a terminal it is tqdm's bar. Anywhere else (a log file, a pipe, a batch job's output, a
terminal multiplexer's capture) a bar redrawn with carriage returns is one unreadable line, and
tqdm draws none at all; a long run then says nothing until it ends. There :class:`Progress` prints
a plain line every :data:`EVERY` seconds instead::

    train: epoch 3/100, step 95/3200, ELBO -121.07, 12 s elapsed, about 6 min 30 s left
"""

import math
import sys
import time

from tqdm.auto import tqdm

#: Seconds between two progress lines when stderr is not a terminal.
EVERY = 10.0


def _is_terminal(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def duration(seconds):
    """``seconds`` the way a person says it: ``"45 s"``, ``"6 min 30 s"``, ``"2 h 5 min"``."""
    if not math.isfinite(seconds):
        return "?"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


class Progress:
    """The progress of ``total`` steps (``initial`` of them done before, by a resumed run) over
    ``epochs`` epochs: tqdm's bar on a terminal, a line every :data:`EVERY` seconds elsewhere,
    nothing when ``quiet``. The estimate of the rest is the steps left at this run's own pace."""

    def __init__(
        self, total, initial=0, epochs=None, quiet=False, desc="train", stream=None, unit="step"
    ):
        self.stream = sys.stderr if stream is None else stream
        self.lines = not quiet and not _is_terminal(self.stream)
        self.bar = tqdm(
            total=total,
            initial=initial,
            disable=True if quiet or self.lines else None,
            unit=unit,
            desc=desc,
            leave=unit == "step",  # training's bar stays; a part of a command's goes
        )
        self.unit = unit
        self.total, self.done, self.epochs, self.desc = total, initial, epochs, desc
        self.first = initial
        self.start = self.last = time.perf_counter()
        self.epoch, self.elbo = None, None

    def step(self, epoch=None, elbo=None):
        """One step (of ``epoch``) done; ``elbo`` its minibatch's ELBO per image."""
        self.done += 1
        self.epoch, self.elbo = epoch, elbo
        self.bar.update()
        if self.lines and time.perf_counter() - self.last >= EVERY:
            self.line()

    def set_postfix(self, **values):
        self.bar.set_postfix(**values)

    def line(self):
        """Print the progress line now."""
        now = self.last = time.perf_counter()
        elapsed = now - self.start
        pace = (self.done - self.first) / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / pace if pace > 0 else math.inf
        epochs = f"/{self.epochs}" if self.epochs is not None else ""
        epoch = f"epoch {self.epoch}{epochs}, " if self.epoch is not None else ""
        elbo = f", ELBO {self.elbo:.2f}" if self.elbo is not None else ""
        print(
            f"{self.desc}: {epoch}{self.unit} {self.done}/{self.total}{elbo}, "
            f"{duration(elapsed)} elapsed, about {duration(left)} left",
            file=self.stream,
            flush=True,
        )

    def close(self):
        self.bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
