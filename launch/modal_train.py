"""Train a tinycats config on Modal GPUs, or here: `python -m launch.modal_train --config configs/cats.py`.

    python -m launch.modal_train --config configs/cats.py --prepare        # once: TFDS data into the data volume
    python -m launch.modal_train --config configs/cats.py [--detach]       # train on Modal (config.modal.*)
    python -m launch.modal_train --config configs/dit.py --dry-run         # the resolved plan, contacting nobody
    python -m launch.modal_train --config configs/cats.py:smoke --local    # the same body on this machine

A run's workdir is /outputs/<run name> on the outputs volume (locally RUNS_DIR/<run name>). A
call that Modal retries after a preemption, or the same command with the same --name, resumes
from the run's latest checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
import urllib.parse

from launch import claim, plan as plan_lib
from tinycats import config as config_lib
from tinycats.errors import USER_ERROR, run_command
from tinycats.train import loop

PROG = 'python -m launch.modal_train'


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--config', required=True, help='config file, optionally with an argument: configs/cats.py:smoke')
  parser.add_argument('--local', action='store_true', help='run the same training body on this machine')
  parser.add_argument('--workdir', default=None, help='--local: the run folder (default RUNS_DIR/<run name>)')
  parser.add_argument('--runs-dir', default='runs', help='--local: where run folders go (default ./runs)')
  parser.add_argument(
    '--name', default=None, help='run name (default <config.name>-<time>); the same name resumes that run'
  )
  parser.add_argument('--detach', action='store_true', help='Modal: keep running after this command exits')
  parser.add_argument('--dry-run', action='store_true', help='print the launch plan as JSON; contact nobody')
  parser.add_argument(
    '--prepare',
    action='store_true',
    help='Modal: prepare the TFDS data into the data volume (once), instead of training',
  )
  return parser


def parse_args(argv=None):
  parser = build_parser()
  args, rest = parser.parse_known_args(argv)
  overrides, bad = config_lib.split_overrides(rest)
  if bad:
    parser.error(f'unrecognized arguments: {" ".join(bad)} (config fields are set as --config.train.batch_size=64)')
  return args, overrides


def modal_token_configured() -> bool:
  """A token in the environment or in the active profile of ~/.modal.toml (read locally; no network)."""
  import modal.config  # pylint: disable=import-outside-toplevel

  return bool(modal.config.config.get('token_id') and modal.config.config.get('token_secret'))


NO_TOKEN = (
  f'{PROG}: error: no Modal token is configured. Authenticate once with `modal setup` (or `modal token new`), '
  'or set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET; '
)
ON_THIS_MACHINE = {  # The way out without Modal, for training and for --prepare.
  False: 'or add --local to train on this machine.',
  True: 'or prepare the data on this machine with `tinycats prepare --data-dir DIR`.',
}


def modal_unreachable(timeout: float = 10.0, prepare: bool = False) -> str | None:
  """Why Modal's server cannot be reached (no network, DNS, a firewall), or None: checked in seconds, where
  Modal's client would retry for a minute and end in a traceback."""
  import modal.config  # pylint: disable=import-outside-toplevel

  url = modal.config.config.get('server_url')
  parts = urllib.parse.urlsplit(url)
  try:
    port = parts.port or (443 if parts.scheme == 'https' else 80)
    socket.create_connection((parts.hostname, port), timeout).close()
  except OSError as e:
    return (
      f'{PROG}: error: cannot reach Modal at {url} ({e.strerror or e}); check the network (or MODAL_SERVER_URL), '
      + ON_THIS_MACHINE[prepare]
    )
  return None


def local_workdir(args, name: str) -> str:
  """--workdir, else RUNS_DIR/<run name>."""
  return args.workdir or os.path.join(args.runs_dir, name)


def _run_local(args, config, name) -> int:
  if args.prepare:
    print(
      f'{PROG}: error: --prepare is for the Modal data volume; here run `tinycats prepare --data-dir DIR`',
      file=sys.stderr,
    )
    return USER_ERROR
  print(json.dumps(loop.run(config, local_workdir(args, name)), indent=2))  # What `tinycats train` runs.
  return 0


def _run_modal(args, plan) -> int:
  import modal  # pylint: disable=import-outside-toplevel

  from launch import modal_app  # pylint: disable=import-outside-toplevel

  run = modal_app.build(plan)
  with modal.enable_output(), run.app.run(detach=args.detach):
    if args.prepare:
      print(json.dumps(run.prepare.remote()))
      return 0
    if why := claim.refusal(run.claims, plan['run_name'], None, plan['claims']['stale_after_s']):
      print(why, file=sys.stderr)  # Before a container starts; the container checks again (launch/claim.py).
      return USER_ERROR
    if args.detach:
      run.train.spawn(plan['config'], plan['run_name'])
      print(
        f'{plan["run_name"]} is running on Modal and keeps running after this command exits.\n'
        f'  follow it:   modal app logs {run.app.app_id}\n'
        f'  fetch it:    {plan["fetch"]}\n'
        f'  resume it:   the same command with --name {plan["run_name"]}'
      )
      return 0
    summary = run.train.remote(plan['config'], plan['run_name'])
  if 'refused' in summary:
    print(summary['refused'], file=sys.stderr)
    return USER_ERROR
  print(json.dumps(summary, indent=2))
  print(f'fetch the workdir: {plan["fetch"]}', file=sys.stderr)
  return 0


def _main(args, overrides) -> int:
  config = config_lib.load(args.config, overrides)
  name = args.name or f'{config.name}-{time.strftime("%Y%m%d-%H%M%S")}'
  if args.local and not args.dry_run:
    return _run_local(args, config, name)
  plan = plan_lib.launch_plan(config, name)
  if args.dry_run:
    if args.prepare:  # What --prepare would do: the data volume and the image that fills it, not a training run.
      plan = {
        'action': 'prepare',
        'app': plan['app'],
        'image': plan['prepare_image'],
        'volume': plan['volumes']['data'],
      }
    print(json.dumps(plan, indent=2))
    return 0
  if not modal_token_configured():  # Before any image is built.
    print(NO_TOKEN + ON_THIS_MACHINE[args.prepare], file=sys.stderr)
    return USER_ERROR
  if unreachable := modal_unreachable(prepare=args.prepare):
    print(unreachable, file=sys.stderr)
    return USER_ERROR
  return _run_modal(args, plan)


def main(argv=None) -> int:
  """The exit code: 0, 2 for a user error (config, data, weights, workdir, no token), 1 for a bug (a traceback)."""
  args, overrides = parse_args(argv)
  return run_command(PROG, lambda: _main(args, overrides))


if __name__ == '__main__':
  sys.exit(main())
