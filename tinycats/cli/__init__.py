"""`tinycats <command>`: prepare, train, evaluate, predict, sample, export, serve, bench.

`tinycats train` trains here; `python -m launch.modal_train` trains on Modal (with `--local`, here, through
the same `train.loop.run`). Exit codes: 0, 2 for a user error (one line with the way out), 1 for a bug.
"""

from __future__ import annotations

import argparse
import sys

from tinycats import config as config_lib
from tinycats.cli import export, training, use
from tinycats.errors import UserError, run_command

# Flags renamed for one vocabulary (issue 27), by command: given the old one, the error names the new one.
RENAMED = {
  'evaluate': {'--cfg': '--guidance'},
  'sample': {'--cfg': '--guidance'},
  'export': {'--model': '--task'},
  'bench': {'--set': '--config.FIELD=VALUE'},
}


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
  """Shows each flag's default, except where there is none to show or the help already says it."""

  def _get_help_string(self, action):
    if action.default is None or action.default is False or action.default == '' or 'default' in (action.help or ''):
      return action.help
    return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
  """Every command's parser. Building it imports no JAX: each command imports what it runs when it runs."""
  parser = argparse.ArgumentParser(prog='tinycats', description=__doc__, formatter_class=_HelpFormatter)
  sub = parser.add_subparsers(dest='command', required=True)
  parser.commands = sub.choices  # name -> its parser: a command's error shows that command's usage.
  add_parser = sub.add_parser
  sub.add_parser = lambda *a, **k: add_parser(*a, formatter_class=_HelpFormatter, **k)
  training.add(sub)
  use.add(sub)
  export.add(sub)
  _add_bench(sub)
  return parser


def _add_bench(sub) -> None:
  """The benchmark harness is not the library: its parser (light) comes from benchmarks/, as does what it runs."""
  try:
    from benchmarks import command
  except ImportError:  # An install from before benchmarks/ was a package, or a wheel without it.
    p = sub.add_parser('bench', help='time the library (needs the benchmarks/ package of the checkout)')
    p.set_defaults(fn=_no_benchmarks, any_arguments=True)  # Whatever flags were given, the one way out.
    return
  command.add_parser(sub, _HelpFormatter)


def _no_benchmarks(args) -> int:
  raise UserError(
    'the benchmark harness (benchmarks/, beside tinycats/ in the checkout) is not installed here: '
    "run pip install -e '.[dev]' in the checkout"
  )


def _refuse_unknown(parser, args, rest: list[str]) -> None:
  if getattr(args, 'any_arguments', False):
    args.overrides = []
    return
  args.overrides, unknown = config_lib.split_overrides(rest)
  renames = RENAMED.get(args.command, {})
  if renamed := [
    f'{flag} is now {renames[flag]}' for flag in (item.split('=')[0] for item in unknown) if flag in renames
  ]:
    parser.commands[args.command].error('; '.join(renamed))
  if unknown or (args.overrides and not getattr(args, 'takes_overrides', False)):
    parser.error(
      f'unrecognized arguments: {" ".join(rest)}'
      + (' (config fields are set as --config.train.batch_size=64)' if getattr(args, 'takes_overrides', False) else '')
    )


def main(argv=None) -> None:
  """Exits 0, 2 for a user error (argparse's, a UserError or a missing file: one line), 1 for a bug (a traceback)."""
  parser = build_parser()
  args, rest = parser.parse_known_args(argv)
  _refuse_unknown(parser, args, rest)
  command = parser.commands[args.command]
  if args.command == 'sample' and not (args.out or args.out_dir):
    command.error('give --out FILE.png (a grid) and/or --out-dir DIR (single images)')
  if getattr(args, 'num', 1) < 1 or getattr(args, 'samples_per_class', 1) < 1:
    command.error('the number of samples must be at least 1')
  sys.exit(run_command(f'tinycats {args.command}', lambda: args.fn(args)))
