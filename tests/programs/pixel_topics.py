"""A topic model of binary images in the manner of ProdLDA (Srivastava & Sutton 2017): each
image is a document whose words are its on-pixels, its topic proportions a logistic-normal
latent, and the image the counts of a Multinomial over the pixels. The Multinomial's
``total_count`` comes from the images themselves (the largest number of on-pixels in the batch),
so what the model generates depends on ``x`` beyond observing it::

    logtheta ~ Normal(0, I)                                  # "logtheta", K numbers per image
    x ~ Multinomial(max_n sum(x_n), logits=dec(softmax(logtheta)))  # "x", pixel counts
"""

import math

import pyro
import pyro.distributions as dist
from torch import nn


class PixelTopics(nn.Module):
    def __init__(self, num_pixels, num_topics=4, hidden=16):
        super().__init__()
        self.num_topics = num_topics
        self.encoder = nn.Sequential(
            nn.Linear(num_pixels, hidden), nn.Softplus(), nn.Linear(hidden, 2 * num_topics)
        )
        # each topic is a distribution over pixels; an image mixes them in logit space
        self.topics = nn.Linear(num_topics, num_pixels, bias=False)

    def model(self, docs):
        pyro.module("pixel_topics", self)
        total_count = int(docs.sum(-1).max())
        with pyro.plate("documents", docs.shape[0]):
            logtheta = pyro.sample(
                "logtheta",
                dist.Normal(docs.new_zeros(self.num_topics), 1.0).to_event(1),
            )
            logits = self.topics(logtheta.softmax(-1))
            pyro.sample("x", dist.Multinomial(total_count, logits=logits), obs=docs)

    def guide(self, docs):
        pyro.module("pixel_topics", self)
        with pyro.plate("documents", docs.shape[0]):
            loc, log_scale = self.encoder(docs).chunk(2, -1)
            pyro.sample("logtheta", dist.Normal(loc, log_scale.exp()).to_event(1))


def make(x_shape, z_dim, hidden_dims, num_classes):
    return PixelTopics(math.prod(x_shape), z_dim, hidden_dims[0])
