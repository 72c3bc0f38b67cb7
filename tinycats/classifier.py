"""`Classifier`: a trained classifier loaded from its workdir, for notebooks and `tinycats predict`.

    clf = Classifier.load('workdirs/cats-...')   # or an export folder, or a Hub repo id 'user/tinycats-cats'
    probs = clf.predict(images)   # uint8 (N, H, W, 3), any H and W -> (N, len(clf.classes))
    logits = clf.network()(clf.inputs(images))   # the same, through the Flax network itself (for jax.grad)

Images go through the same resize as the training cache (`cache.fit`: the whole picture on a
canvas) and the same eval transform as validation (the central `data.eval_crop` of the shorter
side), read from the workdir's config.json.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx

from tinycats import inference, sharding
from tinycats.data import augment, cache
from tinycats.evaluators.classification import predict_arrays


class Classifier:
  def __init__(self, config, graphdef, model_state, step: int, mesh=None):
    self.config = config
    self.classes = list(config.data.classes)
    self.step = step
    self._graphdef, self._state = graphdef, model_state
    self._mesh = mesh or sharding.make_mesh()

  @classmethod
  def load(cls, source: str, step: int | None = None, *, endpoint: str | None = None) -> Classifier:
    """A workdir's best checkpoint (or `step`), an export folder, or a Hub repo id (downloaded once, cached)."""
    return cls(*inference.load(source, 'classifier', step, endpoint=endpoint))

  def _canvases(self, images) -> tuple[np.ndarray, np.ndarray]:
    """(canvases, sizes): each image (array or PIL) through the cache's own resize, so prediction sees
    training's pixels."""
    if isinstance(images, np.ndarray) and images.ndim == 3:
      images = images[None]
    canvases, sizes = zip(*(cache.fit(image, self.config.data.cache_size) for image in images))
    return np.stack(canvases), np.asarray(sizes, np.int32)

  def inputs(self, images: np.ndarray | Sequence[np.ndarray], *, normalized: bool = True) -> np.ndarray:
    """float32 (N, S, S, 3): the network's input for these images, exactly as `predict` feeds it (the cache's
    resize, then validation's crop); `normalized=False` gives the same pixels in [0, 1], to show or to
    carry a mask along."""
    data = self.config.data
    return np.asarray(
      augment.eval_transform(
        *self._canvases(images),
        image_size=data.image_size,
        crop_fraction=augment.eval_crop(data),
        norm=data.normalization if normalized else 'none',
      )
    )

  def network(self):
    """The network itself (a Flax NNX `ResNet`, in eval mode): logits = `network(inputs(images))`, for
    gradients through it (saliency, Grad-CAM: notebooks/04_what_the_classifier_sees.ipynb)."""
    model = nnx.merge(self._graphdef, self._state)
    model.eval()
    return model

  def predict(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """Class probabilities (N, num_classes) for uint8 RGB images (N, H, W, 3) or a list of (H, W, 3)."""
    return self.embed(images)[0]

  def embed(self, images: np.ndarray | Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, penultimate-layer features (N, D)): the features are what Fréchet distances compare."""
    logits, features = predict_arrays(self.config, self._graphdef, self._state, *self._canvases(images), self._mesh)
    return np.asarray(jax.nn.softmax(logits, axis=-1)), features

  def predict_files(self, paths: Sequence[str]) -> list[dict]:
    """One dict per file: {file, label, probs} or {file, error}; a bad file never stops the others."""
    results, images, readable = [], [], []
    for path in paths:
      try:
        if os.path.isfile(path) and os.path.getsize(path) == 0:
          raise ValueError('empty file')
        images.append(cache.read_image_file(path, self.config.data.cache_size))  # As the cache reads it.
        readable.append(len(results))
        results.append({'file': path})
      except Exception as e:  # pylint: disable=broad-except  # Reported per file, in the output.
        results.append({'file': path, 'error': f'{type(e).__name__}: {e}'})
    if images:
      probs = self.predict(images)
      for i, p in zip(readable, probs):
        results[i].update(
          label=self.classes[int(p.argmax())], probs={name: round(float(v), 6) for name, v in zip(self.classes, p)}
        )
    return results
