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


def test_log_px_of_a_program_that_takes_one_sample_at_a_time_says_how_long(monkeypatch, capsys):
    """A program that cannot take its samples in a batch dimension (it reshapes z to one row
    per image) is scored one sample at a time: evaluation says so, and its lines estimate the
    rest."""
    import pyro
    import pyro.distributions as dist
    import torch

    from pyro_vae import evaluate
    from pyro_vae.program import Program

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(len(x), 2), 1.0).to_event(1))
            logits = z.reshape(len(x), 2).sum(-1, keepdim=True).expand(-1, x[0].numel())
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x.reshape(len(x), -1))

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros(len(x), 2), 1.0).to_event(1))

    x = torch.bernoulli(torch.full((6, 1, 2, 2), 0.5))
    program = Program(model, guide, x)
    assert not program.structure.vectorized
    monkeypatch.setattr(progress, "EVERY", 0.0)
    monkeypatch.setattr(progress, "_is_terminal", lambda stream: False)
    log_px = evaluate.log_px(
        program.model, program.guide, x, num_samples=4, max_rows=4, progress=True
    )
    assert log_px.shape == (6,)
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("pyro_vae: the program does not take its samples in a batch")
    assert any(line.startswith("log p(x): chunk ") and "left" in line for line in err[1:])
