"""The Modal app a launch plan describes: images, volumes, and the `train` and `prepare` functions.

Both functions call `launch.body`, the code `--local` runs here. Defining the app contacts
nobody; only running it does (`modal_train` checks for a token first).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import modal

from launch import body
from launch.plan import REPO


@dataclasses.dataclass
class ModalRun:
  app: modal.App
  train: Any  # modal.Function: train(config_dict, run_name) -> summary, or {'refused': why}
  prepare: Any  # modal.Function: prepare() -> {'data_dir', 'splits'}
  data_volume: modal.Volume
  outputs_volume: modal.Volume
  claims: modal.Dict  # Run name -> the call training it (launch/claim.py).


def _cluster_process() -> dict | None:
  """jax.distributed.initialize kwargs on a Modal cluster: node 0 coordinates, one process per node."""
  from modal import experimental  # pylint: disable=import-outside-toplevel

  info = experimental.get_cluster_info()
  if len(info.container_ips) <= 1:
    return None
  return dict(
    coordinator_address=f'[{info.container_ips[0]}]:1234', num_processes=len(info.container_ips), process_id=info.rank
  )


def build(plan: dict) -> ModalRun:
  """The app for `plan` (launch.plan.launch_plan)."""
  app = modal.App(plan['app'])
  image = (
    modal.Image.debian_slim(python_version=plan['image']['python'])
    .uv_pip_install(*plan['image']['packages'])
    .add_local_python_source(*plan['image']['local_sources'])
  )
  for local, remote in plan['image']['local_dirs'].items():
    image = image.add_local_dir(os.path.join(REPO, local), remote)
  prepare_image = (
    modal.Image.debian_slim(python_version=plan['prepare_image']['python'])
    .uv_pip_install(*plan['prepare_image']['packages'])
    .add_local_python_source(*plan['image']['local_sources'])
  )
  volumes = plan['volumes']
  data_volume = modal.Volume.from_name(volumes['data']['name'], create_if_missing=True)
  outputs_volume = modal.Volume.from_name(volumes['outputs']['name'], create_if_missing=True)
  mounts = {volumes['data']['mount']: data_volume, volumes['outputs']['mount']: outputs_volume}
  claims = modal.Dict.from_name(plan['claims']['dict'], create_if_missing=True)
  data_dir, outputs = volumes['data']['tfds_data_dir'], volumes['outputs']['mount']
  nodes = plan['nodes']

  def train(config_dict: dict, run_name: str) -> dict:
    if config_dict['data']['source'] == 'tfds' and not body.data_ready(data_dir):
      raise RuntimeError(
        f'no prepared oxford_iiit_pet in the {volumes["data"]["name"]} volume; prepare it once with '
        f'`python -m launch.modal_train --config CONFIG --prepare`'
      )
    distributed = _cluster_process() if nodes > 1 else None
    workdir = f'{outputs}/{run_name}'
    if distributed is not None and distributed['process_id'] != 0:  # Process 0 commits and holds the claim.
      return body.train(config_dict, workdir, distributed=distributed)
    return body.train_claimed(
      claims,
      modal.current_function_call_id(),
      plan['claims']['stale_after_s'],
      config_dict,
      workdir,
      commit=outputs_volume.commit,
      distributed=distributed,
    )

  if nodes > 1:
    train = modal.clustered(size=nodes)(train)
  train_function = app.function(
    image=image,
    gpu=plan['gpu'],
    timeout=plan['timeout'],
    retries=modal.Retries(**plan['retries']),
    memory=plan['memory_mb'],
    volumes=mounts,
    serialized=True,
    name='train',
  )(train)

  def prepare() -> dict:
    return body.prepare(data_dir, commit=data_volume.commit)

  prepare_function = app.function(
    image=prepare_image, timeout=3600, volumes={volumes['data']['mount']: data_volume}, serialized=True, name='prepare'
  )(prepare)
  return ModalRun(app, train_function, prepare_function, data_volume, outputs_volume, claims)
