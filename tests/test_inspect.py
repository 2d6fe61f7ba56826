import os

import torch

from pyro_vae.config import Config, build
from pyro_vae.inspect import site_table
from tests.bare import bare_vae
from tests.linear_gaussian import plain_functions

PROGRAMS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "programs")


def test_a_plate_without_a_size_is_shown_as_such():
    """``pyro.plate("data")``, as Pyro's SS-VAE writes it, was shown as ``-1 of -1``."""
    x = torch.bernoulli(torch.full((4, 1, 28, 28), 0.5))
    config = Config(model=os.path.join(PROGRAMS, "sizeless_plate.py"))
    model, guide = build(config, (1, 28, 28))
    table = site_table(model, guide, x)
    assert 'plate "data": no size given (as the batch), dim -1' in table
    assert "-1 of" not in table
    built = site_table(*build(Config(z_dim=2, hidden_dims=(8,)), (1, 28, 28)), x)
    assert 'plate "data": 4 of 4, dim -1' in built


def test_the_table_says_what_the_door_learned_of_a_program_not_yet_through_it():
    """Plain Pyro functions and a VAE(...) made by hand, never through the door: the table
    ends with what the door learned (their own site names)."""
    truth, model, guide = plain_functions()
    table = site_table(model, guide, truth(size=4).detach())
    assert 'plate "points": 4 of 4, dim -1' in table
    assert "latent sites (per image): h (2,); figures show 'h'" in table
    vae, amortized, x = bare_vae()
    assert "latent sites (per image): z (2,); figures show 'z'" in site_table(vae, amortized, x)
