"""`EMAModel`: a network and the exponential moving average of its weights (the one that is used).

The generator trains an `EMAModel`: the optimizer updates `net`; `ema` only moves by averaging,
inside the jitted step after every update, and is checkpointed with it. The decay ramps up as
min(decay, (1 + step) / (10 + step)), so the average follows the network closely early on and a
short run already has usable EMA weights.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class EMAModel(nnx.Module):
  """The trained network and its exponential moving average (the one that is used)."""

  def __init__(self, net: nnx.Module):
    self.net = net
    self.ema = nnx.clone(net)
    # Own buffers: a donated train step may not receive one array twice.
    nnx.update(self.ema, jax.tree.map(jnp.copy, nnx.state(self.ema)))


# The optimizer updates the network; the EMA copy only moves by averaging.
TRAINABLE = nnx.All(nnx.Param, nnx.Not(nnx.PathContains('ema')))


def ema_decay(step, decay: float):
  """The decay for update number `step` (0-based): ramps from 0.1 towards `decay`."""
  step = jnp.asarray(step, jnp.float32)
  return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def update_ema(model: EMAModel, decay) -> None:
  online = nnx.state(model.net, nnx.Param)
  average = nnx.state(model.ema, nnx.Param)
  nnx.update(model.ema, jax.tree.map(lambda e, o: decay * e + (1 - decay) * o, average, online))


def ema_network(graphdef, model_state):
  """(graphdef, state) of the EMA network alone, from the split EMAModel."""
  return nnx.split(nnx.merge(graphdef, model_state).ema)
