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
  overrides, bad = [], []
  while rest:  # `--config.a.b=value` or `--config.a.b value`.
    item = rest.pop(0)
    if not item.startswith('--config.'):
      bad.append(item)
    elif '=' in item or not rest or rest[0].startswith('--'):
      overrides.append(item)
    else:
      overrides.append(f'{item}={rest.pop(0)}')
  if bad:
    parser.error(f'unrecognized arguments: {" ".join(bad)} (config fields are set as --config.train.batch_size=64)')
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
  from tinycats.errors import UserError  # pylint: disable=import-outside-toplevel
  try:
    summary = loop.train_and_evaluate(config, workdir)
  except config_lib.ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  except (UserError, FileNotFoundError) as e:  # Bad data, weights, workdir or a diverged run: the way out, no traceback.
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(json.dumps(summary, indent=2))
  return 0


if __name__ == '__main__':
  sys.exit(main())
