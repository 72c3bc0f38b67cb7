"""Train a tinycats config: `python -m launch.modal_train --config configs/cats.py [--config.X=Y ...]`.

`--local --workdir DIR` runs the training body on this machine. Running on Modal GPUs
(without `--local`) is not available yet; that path stops with a message saying so.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def parse_args(argv=None):
  parser = argparse.ArgumentParser(prog='python -m launch.modal_train', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--config', required=True, help='config file, optionally with an argument: configs/cats.py:smoke')
  parser.add_argument('--local', action='store_true', help='train on this machine instead of Modal')
  parser.add_argument('--workdir', default=None, help='run folder (default workdirs/<name>-<time>)')
  parser.add_argument('--name', default=None, help='run name (default <config.name>-<time>)')
  args, rest = parser.parse_known_args(argv)
  bad = [r for r in rest if not r.startswith('--config.')]
  if bad:
    parser.error(f'unrecognized arguments: {" ".join(bad)} (config fields are set as --config.train.batch_size=64)')
  # `--config.a.b value` (space-separated) is accepted too.
  overrides, i = [], 0
  while i < len(rest):
    if '=' in rest[i] or i + 1 == len(rest) or rest[i + 1].startswith('--'):
      overrides.append(rest[i])
      i += 1
    else:
      overrides.append(f'{rest[i]}={rest[i + 1]}')
      i += 2
  return args, overrides


def main(argv=None) -> int:
  args, overrides = parse_args(argv)
  from tinycats import config as config_lib  # pylint: disable=import-outside-toplevel
  try:
    config = config_lib.load(args.config, overrides)
  except config_lib.ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  name = args.name or f'{config.name}-{time.strftime("%Y%m%d-%H%M%S")}'
  if not args.local:
    print('error: training on Modal is not available yet in this version of tinycats. '
          'Add --local to train on this machine (with --workdir DIR).', file=sys.stderr)
    return 2
  workdir = args.workdir or os.path.join('workdirs', name)
  from tinycats.train import loop  # pylint: disable=import-outside-toplevel
  try:
    summary = loop.train_and_evaluate(config, workdir)
  except (config_lib.ConfigError, loop.TrainingDiverged, FileNotFoundError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(json.dumps(summary, indent=2))
  return 0


if __name__ == '__main__':
  sys.exit(main())
