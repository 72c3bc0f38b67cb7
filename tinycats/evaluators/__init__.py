"""Evaluators (big_vision's shape): each takes a network's predict function (or the network) and data, and returns
metrics; it never sees the trainer.

- `classification`: accuracy, balanced accuracy, per-class scores and confusion over a split, given a predict
  function; also the classifier's batched eval forward pass that `Classifier` and the classifier task use.
- `flow_loss`: the generator's flow-matching loss over a split, on draws fixed by the image index.
- `samples`: generated images judged by a trained classifier (conditional accuracy, diversity, Fréchet distance).

They sit below train/, so the training tasks' validate and report hooks and `tinycats evaluate` run the same code.
"""
