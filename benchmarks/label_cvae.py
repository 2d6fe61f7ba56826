"""Does ``pyro-vae sample RUN --label 3`` draw 3s? The label-CVAE recipes of the model-family guide, measured.

Each recipe is trained as ``pyro-vae train`` trains it (:func:`pyro_vae.train_run`), then an
independent judge, a classifier trained on mnist-small's training images
(:func:`pyro_vae.classifier.train_classifier`), classifies 100 samples per label drawn as ``pyro-vae
sample RUN`` draws them. Printed per recipe: the fraction of samples classified as the label they
were drawn for (all labels, and label 3 alone), the run's label effect (the number ``train`` reports
and warns on), and its test log p(x | y). The judge's own accuracy on real test digits is the
ceiling.

    python benchmarks/label_cvae.py            # 100 epochs (the train default), both recipes
    python benchmarks/label_cvae.py 20         # 20 epochs
"""

import json
import os
import tempfile
import time

import torch
from _args import positive

import pyro_vae
from pyro_vae import classifier, runs

smoke_test = "CI" in os.environ
EPOCHS = 1 if smoke_test else positive("label_cvae", 100, int, "number of epochs")
RECIPES = {
    "pyro-vae train --condition label --no-learned-prior": dict(condition="label"),
    "pyro-vae train --condition label": dict(condition="label", learned_prior=True),
}
PER_LABEL = 10 if smoke_test else 100

data = pyro_vae.load_dataset("mnist-small", binarize="dynamic")
judge = classifier.train_classifier(data, epochs=1 if smoke_test else 20)
result = {
    "epochs": EPOCHS,
    "judge_test_accuracy": round(classifier.accuracy(judge, data.test_x, data.test_y), 3),
}
for command, options in RECIPES.items():
    tiny = dict(hidden_dims=(32,), z_dim=4) if smoke_test else {}
    k = 5 if smoke_test else 100
    config = pyro_vae.Config(epochs=EPOCHS, log_px_samples=k, **options, **tiny)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        run, metrics = pyro_vae.train_run(config, out, overwrite=True, quiet=True)
    labels = torch.arange(10).repeat_interleave(PER_LABEL)
    samples = runs.class_samples(run, per_class=PER_LABEL, seed=0)  # as `pyro-vae sample RUN`
    threes = run.sample(PER_LABEL, seed=0, y=3)  # as `pyro-vae sample RUN --label 3`
    result[f"{command} --epochs {EPOCHS}"] = {
        "samples_classified_as_their_label": round(classifier.accuracy(judge, samples, labels), 3),
        "label_3_samples_classified_as_3": round(classifier.accuracy(judge, threes, 3), 3),
        "label_effect": metrics["label_effect"],
        "test_log_px_given_label": metrics["test_log_px"],
        "seconds": round(time.perf_counter() - start, 1),
    }
print(json.dumps(result, indent=2))
