"""M2 as Pyro's semi-supervised VAE example writes it, with its auxiliary classification pair:
``ss_vae.py``'s class (loaded from the file beside this one, as a user's helper module would be)
with ``model_classify(xs, ys)``, which observes ``ys`` under the guide's classifier scaled by
``aux_loss_multiplier``, and an empty ``guide_classify``. pyro_vae finds the pair by name and adds
it, weighted by ``--alpha``, on the labelled images (:class:`pyro_vae.semi.SemiSupervisedLoss`).
``calls`` records what each ``model_classify`` call received (the number of images, and the
shape of ``ys``).
"""

import importlib.util
import math
import os

import pyro

_spec = importlib.util.spec_from_file_location(
    "ss_vae_base", os.path.join(os.path.dirname(os.path.abspath(__file__)), "ss_vae.py")
)
ss_vae = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ss_vae)


class SSVAE(ss_vae.SSVAE):
    """The class one-hot, with the auxiliary pair."""

    aux_loss_multiplier = 1.0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    def model_classify(self, xs, ys=None):
        pyro.module("ss_vae", self)
        self.calls.append((xs.shape[0], None if ys is None else tuple(ys.shape)))
        with pyro.plate("data"):
            if ys is not None:
                alpha = self.encoder_y(xs)
                with pyro.poutine.scale(scale=self.aux_loss_multiplier):
                    pyro.sample("y_aux", self.class_dist(alpha), obs=ys)

    def guide_classify(self, xs, ys=None):
        pass


def make(x_shape, z_dim, hidden_dims, num_classes):
    return SSVAE(num_classes, math.prod(x_shape), z_dim, hidden_dims)
