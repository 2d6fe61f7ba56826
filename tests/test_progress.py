import io

import pytest

from pyro_vae import progress
from pyro_vae.progress import Progress, duration


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize(
    "seconds, said",
    [
        (0.4, "0 s"),
        (45, "45 s"),
        (60, "1 min"),
        (390, "6 min 30 s"),
        (7500, "2 h 5 min"),
        (float("inf"), "?"),
    ],
)
def test_duration(seconds, said):
    assert duration(seconds) == said


def test_a_stream_that_is_no_terminal_gets_a_line_with_the_estimate_of_the_rest(monkeypatch):
    monkeypatch.setattr(progress, "EVERY", 0.0)
    stream = io.StringIO()
    with Progress(10, initial=2, epochs=5, stream=stream) as bar:
        for step in range(4):
            bar.step(epoch=2, elbo=-100.0 - step)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4
    assert lines[-1].startswith("train: epoch 2/5, step 6/10, ELBO -103.00, ")
    assert "elapsed, about " in lines[-1] and lines[-1].endswith(" left")


def test_lines_come_every_few_seconds_not_every_step(monkeypatch):
    monkeypatch.setattr(progress, "EVERY", 10.0)
    stream = io.StringIO()
    with Progress(1000, epochs=1, stream=stream) as bar:
        for _ in range(1000):
            bar.step(epoch=1, elbo=-1.0)
    assert stream.getvalue() == ""  # far less than EVERY seconds


@pytest.mark.parametrize("stream, quiet", [(Terminal(), False), (io.StringIO(), True)])
def test_no_lines_on_a_terminal_or_when_quiet(monkeypatch, stream, quiet):
    monkeypatch.setattr(progress, "EVERY", 0.0)
    with Progress(3, epochs=1, quiet=quiet, stream=stream) as bar:
        for _ in range(3):
            bar.step(epoch=1, elbo=-1.0)
    assert "train: epoch" not in stream.getvalue()
