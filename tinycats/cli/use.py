"""`tinycats predict` and `sample`: a trained model (a workdir, an export folder or a Hub id) put to use."""

from __future__ import annotations

import json
import os
import sys

from tinycats.cli.training import add_sampling_flags, guidance_interval
from tinycats.errors import USER_ERROR, UserError

SOURCE_HELP = 'a trained run folder (a workdir), an export folder, or a Hub repo id (hf-hub:USER/NAME)'


def add(sub) -> None:
  p = sub.add_parser('predict', help='classify image files with a trained workdir; one JSON line per image')
  p.add_argument('--workdir', required=True, help=SOURCE_HELP)
  p.add_argument('images', nargs='+')
  p.set_defaults(fn=_predict)
  _add_sample(sub)


def _predict(args) -> int:
  from tinycats.classifier import Classifier

  results = Classifier.load(args.workdir).predict_files(args.images)
  for row in results:
    print(json.dumps(row))
  if failed := [row for row in results if 'error' in row]:  # A user's files, not a bug: exit 2, as other user errors.
    for row in failed:
      print(f'tinycats predict: {row["file"]}: {row["error"]}', file=sys.stderr)
    print(f'tinycats predict: {len(failed)} of {len(results)} file(s) could not be read', file=sys.stderr)
    return USER_ERROR
  return 0


def _add_sample(sub) -> None:
  p = sub.add_parser('sample', help='generate images with a trained generator workdir (its EMA weights)')
  p.add_argument('--workdir', required=True, help=SOURCE_HELP)
  p.add_argument(
    '--label',
    action='append',
    default=None,
    help='class name or index (repeat for several; the null index samples unconditionally); default: every class',
  )
  p.add_argument('--num', type=int, default=8, help='images per label')
  add_sampling_flags(p, '')
  p.add_argument('--seed', type=int, default=0, help='noise seed: the same seed, the same images')
  p.add_argument(
    '--noise',
    choices=('jax', 'browser'),
    default='jax',
    help="the seed's noise: JAX's (default) or the web page's (tinycats export site), for the page's images",
  )
  p.add_argument('--out', default=None, help='grid PNG: one row per label')
  p.add_argument('--out-dir', default=None, help='folder for one PNG per image')
  p.set_defaults(fn=_sample)


def _sample(args) -> int:
  from tinycats import flow
  from tinycats.generator import Generator

  interval = guidance_interval(args.guidance_interval)
  generator = Generator.load(args.workdir)
  labels = args.label or list(range(len(generator.classes)))
  noise = None
  if args.noise == 'browser':  # The web page's noise: image 0 of label 0 is what the page draws for the seed.
    if not 0 <= args.seed < 2**32:
      raise UserError(f"--noise browser takes a seed from 0 to {2**32 - 1} (the page's), got {args.seed}")
    noise = flow.browser_noise(args.seed, len(labels) * args.num, generator.image_size)
  grid = generator.sample_grid(
    labels, per_label=args.num, steps=args.steps, guidance=args.guidance, seed=args.seed, sampler=args.sampler,
    noise=noise, guidance_interval=interval,
  )  # fmt: skip
  names = [generator.classes[i] if i < len(generator.classes) else 'null' for i in map(generator.label_index, labels)]
  written = _write(grid, names, args)
  shown = written if len(written) <= 10 else written[:10] + [f'... {len(written)} files']
  print(json.dumps({'labels': names, 'num': args.num, 'seed': args.seed, 'step': generator.step, 'files': shown}))
  return 0


def _write(grid, names: list[str], args) -> list[str]:
  """The grid PNG (--out) and one PNG per image (--out-dir); the paths written."""
  import numpy as np
  from PIL import Image

  from tinycats import plots

  written = []
  if args.out:
    plots.save_grid(grid, args.out, names)
    written.append(args.out)
  if args.out_dir:
    os.makedirs(args.out_dir, exist_ok=True)
    for row, name in enumerate(names):
      for col in range(args.num):
        path = os.path.join(args.out_dir, f'{row:02d}_{name}_{col:03d}.png')
        Image.fromarray(np.asarray(grid[row, col])).save(path)
        written.append(path)
  return written
