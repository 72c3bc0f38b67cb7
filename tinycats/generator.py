"""`Generator`: a trained generator (its EMA weights) loaded from its workdir, for notebooks and `tinycats sample`.

    gen = Generator.load('workdirs/dit-...')   # or an export folder, or a Hub repo id
    images = gen.sample(['Bengal', 'other'], steps=50, guidance=1.5, seed=0)   # uint8 (2, 128, 128, 3)

Sampling defaults (sampler, steps, guidance and its interval) come from the run's config.json (`sample.*`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tinycats import flow, inference
from tinycats.errors import UserError


class Generator:
  def __init__(self, config, graphdef, state, step: int):
    """`graphdef`/`state`: the EMA DiT, split."""
    self.config = config
    self.classes = list(config.data.classes)
    self.null_label = len(self.classes)
    self.image_size = config.data.image_size
    self.step = step
    self._graphdef, self._state = graphdef, state

  @classmethod
  def load(cls, source: str, step: int | None = None, *, endpoint: str | None = None) -> Generator:
    """A workdir's best checkpoint (lowest validation loss) or `step`, an export folder, or a Hub repo id."""
    return cls(*inference.load(source, 'generator', step, endpoint=endpoint))

  def label_index(self, label: int | str) -> int:
    """A class name or index (the null label, len(classes), means unconditional) -> index."""
    if isinstance(label, (bool, np.bool_)):
      raise UserError(f'label {label!r} is neither a class name nor an index')
    if isinstance(label, (int, np.integer)) or (isinstance(label, str) and label.isdigit()):
      index = int(label)
      if not 0 <= index <= self.null_label:
        raise UserError(
          f'label {index} is out of range: 0-{self.null_label - 1} are classes, {self.null_label} is '
          'the null (unconditional) label'
        )
      return index
    if label not in self.classes:
      raise UserError(f'unknown label {label!r}; the classes are {", ".join(self.classes)} (or their indices)')
    return self.classes.index(label)

  def sample(
    self,
    labels: int | str | Sequence[int | str],
    *,
    steps: int | None = None,
    guidance: float | None = None,
    seed: int = 0,
    sampler: str | None = None,
    noise: np.ndarray | None = None,
    batch_size: int = 256,
    guidance_interval: tuple[float, float] | None = None,
    **renamed,
  ) -> np.ndarray:  # The settings of sample_grid, spelled out again so that help(Generator.sample) shows them.
    """uint8 images (N, S, S, 3), one per label, from seeded noise (or the given float32 NHWC `noise`).

    The same seed and labels give the same images; `guidance` 1 is the plain conditional model. Guidance applies at
    the steps whose time t (0 noise, 1 data) lies in `guidance_interval` (lo, hi), the others use the
    conditional model; None is the run's `sample.guidance_interval`, (0, 1) guides every step.
    """
    _refuse_renamed(renamed)
    labels = [labels] if isinstance(labels, (int, str, np.integer)) else list(labels)
    grid = self.sample_grid(
      labels,
      per_label=1,
      steps=steps,
      guidance=guidance,
      seed=seed,
      sampler=sampler,
      noise=noise,
      batch_size=batch_size,
      guidance_interval=guidance_interval,
    )
    return grid.reshape((-1,) + grid.shape[2:])

  def sample_grid(
    self,
    labels: Sequence[int | str] | None = None,
    per_label: int = 8,
    *,
    steps: int | None = None,
    guidance: float | None = None,
    seed: int = 0,
    sampler: str | None = None,
    noise: np.ndarray | None = None,
    batch_size: int = 256,
    guidance_interval: tuple[float, float] | None = None,
    **renamed,
  ) -> np.ndarray:
    """uint8 (len(labels), per_label, S, S, 3): one row per label (all classes by default), `flow.sample_grid`
    after the labels and settings are checked; `noise`, when given, holds one image per row entry, row by row."""
    _refuse_renamed(renamed)
    settings = self._settings(steps, guidance, sampler, guidance_interval)
    labels = list(range(len(self.classes))) if labels is None else list(labels)
    index = self._checked(labels, per_label, noise)
    return flow.sample_grid(
      self.config,
      self._graphdef,
      self._state,
      index,
      per_label,
      seed=seed,
      noise=noise,
      batch_size=batch_size,
      **settings,
    )

  def trajectory(
    self,
    labels: int | str | Sequence[int | str],
    *,
    steps: int | None = None,
    guidance: float | None = None,
    seed: int = 0,
    sampler: str | None = None,
    noise: np.ndarray | None = None,
    guidance_interval: tuple[float, float] | None = None,
  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The path `sample` takes for the same arguments, step by step: (t, x, v) of `flow.trajectory`, float32 in the
    model's normalised range (`tinycats.data.augment.to_uint8(x, gen.config.data.normalization)` shows them):
    t (steps + 1,), the states x (steps + 1, N, S, S, 3) from the noise to the images, the velocity v (steps, N,
    S, S, 3) each step evaluated at them; x_t + (1 - t) v is the clean-image estimate along the way."""
    settings = self._settings(steps, guidance, sampler, guidance_interval)
    labels = [labels] if isinstance(labels, (int, str, np.integer)) else list(labels)
    index = self._checked(labels, 1, noise)
    if noise is None:
      noise = flow.noise_like(seed, len(index), self.image_size)
    return flow.trajectory(self._graphdef, self._state, noise, np.asarray(index, np.int32), **settings)

  def _settings(self, steps, guidance, sampler, guidance_interval) -> dict:
    """The sampling settings, the run's `sample.*` where None, checked (UserError)."""
    s = self.config.sample
    steps = s.steps if steps is None else steps
    guidance = s.guidance if guidance is None else guidance
    sampler = sampler or s.sampler
    if guidance_interval is None:
      guidance_interval = s.get('guidance_interval', (0.0, 1.0))
    try:
      guidance_interval = flow.check_guidance_interval(guidance_interval)
    except ValueError as e:
      raise UserError(str(e)) from None
    if sampler not in flow.SAMPLERS:
      raise UserError(f'unknown sampler {sampler!r}; choose one of {", ".join(flow.SAMPLERS)}')
    if steps < 1:
      raise UserError(f'steps must be at least 1, got {steps}')
    return dict(steps=steps, guidance=guidance, sampler=sampler, guidance_interval=guidance_interval)

  def _checked(self, labels: list, per_label: int, noise) -> list[int]:
    """The label indices, with `noise` (when given) checked to hold one image per sample (UserError)."""
    index = [self.label_index(label) for label in labels]
    if not index or per_label < 1:
      raise UserError('give at least one label to sample')
    n = len(index) * per_label
    if noise is not None and noise.shape != (n, self.image_size, self.image_size, 3):
      raise UserError(f'noise must be float32 {(n, self.image_size, self.image_size, 3)}, got {noise.shape}')
    return index


def _refuse_renamed(given: dict) -> None:
  """`cfg=` was renamed `guidance=` (one word per concept); for one release the old name says so."""
  if given:
    new = {'cfg': 'guidance'}
    raise TypeError('; '.join(f'{k}= is now {new[k]}=' if k in new else f'unexpected keyword {k}=' for k in given))
