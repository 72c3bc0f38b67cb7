"""What a task supplies to the one training loop (its hooks), with the defaults most tasks keep.

Hooks: `create_model(seed)`; `fetch_weights(config)` and `init_weights(model, weights)` (pretrained
weights, fetched before any other work and loaded into a fresh run only); `param_groups(params)`
(the optimizer's 'head'/'backbone' labels); `loss(model, batch, key) -> (loss, metrics)` (run
inside the jitted step); `network(graphdef, state)` (the network that inference uses, from the
trained model); `validate(network..., split, mesh) -> dict` at every evaluation and
`report(network..., split, mesh)` (what eval.json holds), both given a network and data, never
the trainer; `plot_report` and `on_evaluation` for the files beside them. The attributes choose
which variables learn, what happens after each update, and which validation number picks the
best checkpoint (of equal numbers, the later step) and counts for early stopping.
"""

from __future__ import annotations

from flax import nnx

from tinycats.train import step as step_lib


class Task:
  best_metric = 'val_accuracy'
  best_mode = 'max'  # 'max' or 'min': whether a higher best_metric is better.
  trainable = nnx.Param  # The variables the optimizer updates (an NNX filter).
  summary_metrics = ()  # Scalars of the test report copied into summary.json as test_<name>.
  after_update = None  # Optional (model, step) -> None, run inside the jitted step after each update.
  param_groups = staticmethod(step_lib.all_backbone)  # params -> 'head' | 'backbone' labels.
  fine_tuning = False  # Whether the backbone learns at a scaled rate, frozen at first (`step.make_optimizer`).

  def __init__(self, config, classes: list[str]):
    self.config = config
    self.classes = list(classes)

  @staticmethod
  def fetch_weights(config):
    """Pretrained weights the run starts from (found or downloaded before any other work), or None."""
    del config

  def init_weights(self, model: nnx.Module, weights) -> None:
    """Loads `fetch_weights`'s result into a fresh model (a resumed run has its weights in the checkpoint)."""
    del model, weights

  def network(self, graphdef, model_state):
    """(graphdef, state) of the network inference uses, from the split trained model."""
    return graphdef, model_state

  def evaluate(self, graphdef, state, split, mesh, *, name: str, step: int, workdir: str, chosen: bool = False) -> dict:
    """The full evaluation of a split by the inference network: `report` plus where it came from, plotted.
    `chosen`: the checkpoint was asked for by number (`checkpoint: chosen`), not the best (`checkpoint: best`)."""
    report = self.report(graphdef, state, split, mesh)
    report.update(split=name, step=step, checkpoint='chosen' if chosen else 'best', skipped_images=len(split.skipped))
    self.plot_report(report, workdir)
    return report

  def plot_report(self, report: dict, workdir: str) -> None:
    """Writes the report's figures into `workdir` (the classifier's confusion matrix)."""

  def on_evaluation(self, graphdef, state, step: int, workdir: str) -> None:
    """Called with the inference network after each validation and checkpoint (e.g. to write sample grids)."""
