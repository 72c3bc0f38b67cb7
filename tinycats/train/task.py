"""What a task supplies to the one training loop, with the defaults most tasks keep.

A task has `create_model(seed)`, `loss(model, batch, key) -> (loss, metrics)` (run inside the
jitted step), `validate(graphdef, model_state, split, mesh) -> dict` (run at every evaluation),
and `report(...)` (the full evaluation written to eval.json). The attributes below let a task
choose which variables learn, what happens after each update, and which validation number
picks the best checkpoint (of equal numbers, the later step) and counts for early stopping.
"""
from __future__ import annotations

from flax import nnx


class Task:
  best_metric = 'val_accuracy'
  best_mode = 'max'  # 'max' or 'min': whether a higher best_metric is better.
  trainable = nnx.Param  # The variables the optimizer updates (an NNX filter).
  summary_metrics = ()  # Scalars of the test report copied into summary.json as test_<name>.
  after_update = None  # Optional (model, step) -> None, run inside the jitted step after each update.

  def __init__(self, config, classes: list[str]):
    self.config = config
    self.classes = list(classes)

  def on_evaluation(self, graphdef, model_state, step: int, workdir: str) -> None:
    """Called after each validation, before the checkpoint (e.g. to write sample grids)."""
