"""Config parts both recipes share. A config file imports this module as `common`."""

import ml_collections


def modal_config() -> ml_collections.ConfigDict:
  """Training on Modal: `python -m launch.modal_train` without --local."""
  m = ml_collections.ConfigDict()
  m.app = 'tinycats'  # The Modal app's name.
  m.gpu = 'H100'  # TYPE or TYPE:COUNT (e.g. H100:8): every GPU joins the one data-parallel mesh.
  m.nodes = 1  # > 1: a Modal multi-node cluster, one JAX process per node (jax.distributed).
  m.timeout = 4 * 3600  # Seconds per call, at most 24 h; a retried or re-run call resumes.
  m.retries = 3  # After a preemption or crash, with back-off; each retry resumes from the last checkpoint.
  m.memory_gb = 64  # Container RAM; 0 = Modal's default.
  m.data_volume = 'tinycats-data'  # Holds the prepared TFDS data dir (prepared once).
  m.outputs_volume = 'tinycats-outputs'  # Holds one workdir per run: /outputs/<run name>.
  return m
