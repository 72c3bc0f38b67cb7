"""`tinycats <command>`: prepare, evaluate, predict.

Training is launched with `python -m launch.modal_train` (locally with `--local`).
"""
from __future__ import annotations

import argparse
import json
import sys


def _prepare(args) -> int:
  from tinycats.data import pets
  counts = pets.prepare(args.data_dir, archives=args.archives, verify=not args.no_verify)
  print(json.dumps({'data_dir': args.data_dir, 'splits': counts}))
  return 0


def _evaluate(args) -> int:
  from tinycats import evaluate
  report = evaluate.evaluate(args.workdir, split=args.split)
  print(json.dumps({k: report[k] for k in ('split', 'accuracy', 'num_examples', 'step')}))
  return 0


def _predict(args) -> int:
  from tinycats.classifier import Classifier
  results = Classifier.load(args.workdir).predict_files(args.images)
  for row in results:
    print(json.dumps(row))
  return 1 if any('error' in row for row in results) else 0


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='tinycats', description=__doc__)
  sub = parser.add_subparsers(dest='command', required=True)

  p = sub.add_parser('prepare', help='prepare TFDS oxford_iiit_pet (offline from the official archives with --archives)')
  p.add_argument('--data-dir', required=True, help='TFDS data dir to write (pass the same as --config.data.data_dir)')
  p.add_argument('--archives', default=None,
                 help='folder holding images.tar.gz and annotations.tar.gz; without it TFDS downloads them')
  p.add_argument('--no-verify', action='store_true', help="accept archives whose SHA-256 differs from TFDS's registered one")
  p.set_defaults(fn=_prepare)

  p = sub.add_parser('evaluate', help="evaluate a workdir's best checkpoint: writes eval.json and confusion.png")
  p.add_argument('--workdir', required=True)
  p.add_argument('--split', default='test', choices=('train', 'val', 'test'))
  p.set_defaults(fn=_evaluate)

  p = sub.add_parser('predict', help='classify image files with a trained workdir; one JSON line per image')
  p.add_argument('--workdir', required=True)
  p.add_argument('images', nargs='+')
  p.set_defaults(fn=_predict)
  return parser


def main(argv=None) -> None:
  from tinycats.errors import UserError
  args = build_parser().parse_args(argv)
  try:
    code = args.fn(args)
  except (UserError, FileNotFoundError) as e:  # They carry the way out; other exceptions keep their traceback.
    print(f'tinycats {args.command}: error: {e}', file=sys.stderr)
    code = 2
  sys.exit(code)
