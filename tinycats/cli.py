"""`tinycats <command>`: prepare, train, evaluate, predict, sample, export, serve, bench.

`tinycats train` trains here; `python -m launch.modal_train` trains on Modal (with `--local`, here, through
the same `train` function). Exit codes: 0, 2 for a user error (one line with the way out), 1 for a bug.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
from PIL import Image

from tinycats import config as config_lib, evaluate, flow, metrics
from tinycats.classifier import Classifier
from tinycats.data import pets
from tinycats.errors import USER_ERROR, UserError, run_command
from tinycats.export import hub, onnx as onnx_export, site
from tinycats.generator import Generator
from tinycats.train import loop


def _prepare(args) -> int:
  counts = pets.prepare(args.data_dir, archives=args.archives, verify=not args.no_verify)
  print(json.dumps({'data_dir': args.data_dir, 'splits': counts}))
  return 0


def train(config, workdir: str) -> int:
  """`tinycats train` and `python -m launch.modal_train --local`: train (or resume) here; print the summary."""
  print(json.dumps(loop.run(config, workdir), indent=2))
  return 0


def _train(args) -> int:
  return train(config_lib.load(args.config, args.overrides), args.workdir)


def _guidance_interval(text: str | None) -> tuple[float, float] | None:
  """`--guidance-interval LO,HI` as (lo, hi); None when not given (the run's `sample.guidance_interval`)."""
  if text is None:
    return None
  try:
    return flow.check_guidance_interval([float(part) for part in text.split(',')])
  except ValueError:
    raise UserError(
      f'--guidance-interval takes LO,HI with 0 <= LO <= HI <= 1 (t: 0 noise, 1 data), e.g. 0.1,1; got {text!r}'
    ) from None


def _evaluate(args) -> int:
  guidance_interval = _guidance_interval(args.guidance_interval)
  if (args.cfg, args.steps, args.sampler, guidance_interval) != (None,) * 4 and not args.classifier:
    raise UserError(
      '--cfg, --steps, --sampler and --guidance-interval set how the judged samples are drawn: '
      'give --classifier DIR too'
    )
  report = evaluate.evaluate(
    args.workdir,
    split=args.split,
    classifier=args.classifier,
    samples_per_class=args.samples_per_class,
    seed=args.seed,
    cfg=args.cfg,
    steps=args.steps,
    sampler=args.sampler,
    guidance_interval=guidance_interval,
    data_dir=args.data_dir,
  )
  shown = {
    k: v
    for k, v in report.items()
    if k in ('split', 'step', 'num_examples', 'accuracy', 'balanced_accuracy', 'degenerate', 'flow_loss')
  }
  shown.update({k: v for k, v in report.get('samples', {}).items() if isinstance(v, float)})
  print(json.dumps(shown))
  return 0


def _sample(args) -> int:
  guidance_interval = _guidance_interval(args.guidance_interval)
  generator = Generator.load(args.workdir)
  labels = args.label or list(range(len(generator.classes)))
  noise = None
  if args.noise == 'browser':  # The web page's noise: image 0 of label 0 is what the page draws for the seed.
    if not 0 <= args.seed < 2**32:
      raise UserError(f"--noise browser takes a seed from 0 to {2**32 - 1} (the page's), got {args.seed}")
    noise = flow.browser_noise(args.seed, len(labels) * args.num, generator.image_size)
  grid = generator.sample_grid(
    labels,
    per_label=args.num,
    steps=args.steps,
    cfg=args.cfg,
    seed=args.seed,
    sampler=args.sampler,
    noise=noise,
    guidance_interval=guidance_interval,
  )
  names = [generator.classes[i] if i < len(generator.classes) else 'null' for i in map(generator.label_index, labels)]
  written = []
  if args.out:
    metrics.save_grid(grid, args.out, names)
    written.append(args.out)
  if args.out_dir:
    os.makedirs(args.out_dir, exist_ok=True)
    for row, name in enumerate(names):
      for col in range(args.num):
        path = os.path.join(args.out_dir, f'{row:02d}_{name}_{col:03d}.png')
        Image.fromarray(np.asarray(grid[row, col])).save(path)
        written.append(path)
  print(
    json.dumps(
      {
        'labels': names,
        'num': args.num,
        'seed': args.seed,
        'step': generator.step,
        'files': written if len(written) <= 10 else written[:10] + [f'... {len(written)} files'],
      }
    )
  )
  return 0


def _predict(args) -> int:
  results = Classifier.load(args.workdir).predict_files(args.images)
  for row in results:
    print(json.dumps(row))
  if failed := [row for row in results if 'error' in row]:  # A user's files, not a bug: exit 2, as other user errors.
    for row in failed:
      print(f'tinycats predict: {row["file"]}: {row["error"]}', file=sys.stderr)
    print(f'tinycats predict: {len(failed)} of {len(results)} file(s) could not be read', file=sys.stderr)
    return USER_ERROR
  return 0


def _export_onnx(args) -> int:
  report = onnx_export.export_onnx(
    args.workdir, args.out_dir, int8=args.int8, kind=args.model, tolerance=args.tolerance
  )
  print(
    f'tinycats export: ONNX Runtime vs JAX max difference {report["max_difference"]:.3g} '
    f'(tolerance {report["tolerance"]:g})',
    file=sys.stderr,
  )
  print(json.dumps(report))
  return 0


def _export_hub(args) -> int:
  result = hub.export_hub(
    args.workdir,
    args.repo_id,
    private=args.private,
    endpoint=args.endpoint,
    out_dir=args.out_dir,
    no_upload=args.no_upload,
    int8=args.int8,
    license_id=args.license,
  )
  print(f'tinycats export: ONNX Runtime vs JAX max difference {result["onnx"]["max_difference"]:.3g}', file=sys.stderr)
  print(json.dumps({k: v for k, v in result.items() if k != 'onnx'}))
  return 0


def _export_site(args) -> int:
  report = site.export_site(
    args.classifier, args.out_dir, generator=args.generator, ort_dir=args.ort_dir, int8=args.int8
  )
  print(
    f'tinycats export: site in {report["out_dir"]} ({report["bytes"] / 1e6:.1f} MB, of which onnxruntime-web '
    f'{report["onnxruntime_web"]} {report["onnxruntime_web_bytes"] / 1e6:.1f} MB); open it with: '
    f'tinycats serve {args.out_dir}',
    file=sys.stderr,
  )
  print(json.dumps(report))
  return 0


def _serve(args) -> int:
  site.serve(args.site, host=args.host, port=args.port)
  return 0


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
  """Shows each flag's default, except where there is none to show or the help already says it."""

  def _get_help_string(self, action):
    if action.default is None or action.default is False or action.default == '' or 'default' in (action.help or ''):
      return action.help
    return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='tinycats', description=__doc__, formatter_class=_HelpFormatter)
  sub = parser.add_subparsers(dest='command', required=True)
  parser.commands = sub.choices  # name -> its parser: a command's error shows that command's usage.
  add_parser = sub.add_parser
  sub.add_parser = lambda *a, **k: add_parser(*a, formatter_class=_HelpFormatter, **k)

  p = sub.add_parser(
    'prepare', help='prepare TFDS oxford_iiit_pet (offline from the official archives with --archives)'
  )
  p.add_argument('--data-dir', required=True, help='TFDS data dir to write (pass the same as --config.data.data_dir)')
  p.add_argument(
    '--archives',
    default=None,
    help='folder holding images.tar.gz and annotations.tar.gz; without it TFDS downloads them',
  )
  p.add_argument(
    '--no-verify', action='store_true', help="accept archives whose SHA-256 differs from TFDS's registered one"
  )
  p.set_defaults(fn=_prepare)

  p = sub.add_parser(
    'train',
    help='train (or resume) a config in a workdir on this machine; the summary as JSON',
    description='Also takes --config.FIELD=VALUE (or --config.FIELD VALUE) for any field of the config.',
  )
  p.add_argument('--config', required=True, help='config file, optionally with an argument: configs/cats.py:smoke')
  p.add_argument('--workdir', required=True, help='the run folder; a workdir with checkpoints resumes')
  p.set_defaults(fn=_train)

  p = sub.add_parser(
    'evaluate',
    help="evaluate a workdir's best checkpoint: writes eval.json and confusion.png (the test split; "
    'eval_val.json and confusion_val.png for val, ...)',
  )
  p.add_argument('--workdir', required=True, help='the trained run folder')
  p.add_argument('--split', default='test', choices=('train', 'val', 'test'), help='the split to score')
  p.add_argument(
    '--data-dir',
    default=None,
    help="where the run's data is on this machine, if not where its config.json says (a run trained on Modal): "
    'the TFDS data dir, or the image folder of a folder run',
  )
  p.add_argument(
    '--classifier',
    default=None,
    help='generators: a trained classifier workdir that judges the samples (accuracy, Fréchet distance, diversity)',
  )
  p.add_argument('--samples-per-class', type=int, default=16, help='generators: samples of each class to judge')
  p.add_argument('--seed', type=int, default=0, help="generators: the samples' noise seed")
  p.add_argument('--cfg', type=float, default=None, help="generators: the samples' guidance (default: the run's)")
  p.add_argument('--steps', type=int, default=None, help="generators: the samples' steps (default: the run's)")
  p.add_argument('--sampler', choices=('euler', 'heun'), default=None, help="generators (default: the run's)")
  p.add_argument(
    '--guidance-interval',
    default=None,
    metavar='LO,HI',
    help="generators: guide only the samples' steps with LO <= t <= HI (t: 0 noise, 1 data; default: the run's)",
  )
  p.set_defaults(fn=_evaluate)

  p = sub.add_parser('predict', help='classify image files with a trained workdir; one JSON line per image')
  p.add_argument(
    '--workdir',
    required=True,
    help='a trained run folder (a workdir), an export folder, or a Hub repo id (hf-hub:USER/NAME)',
  )
  p.add_argument('images', nargs='+')
  p.set_defaults(fn=_predict)

  p = sub.add_parser('sample', help='generate images with a trained generator workdir (its EMA weights)')
  p.add_argument(
    '--workdir',
    required=True,
    help='a trained run folder (a workdir), an export folder, or a Hub repo id (hf-hub:USER/NAME)',
  )
  p.add_argument(
    '--label',
    action='append',
    default=None,
    help='class name or index (repeat for several; the null index samples unconditionally); default: every class',
  )
  p.add_argument('--num', type=int, default=8, help='images per label')
  p.add_argument('--steps', type=int, default=None, help="ODE steps (default: the run's sample.steps)")
  p.add_argument('--cfg', type=float, default=None, help="guidance scale, 1 = none (default: the run's sample.cfg)")
  p.add_argument('--sampler', choices=('euler', 'heun'), default=None, help="ODE sampler (default: the run's)")
  p.add_argument(
    '--guidance-interval',
    default=None,
    metavar='LO,HI',
    help='guide only the steps with LO <= t <= HI (t: 0 noise, 1 data), e.g. 0.1,1; elsewhere the conditional '
    "model alone (default: the run's sample.guidance_interval)",
  )
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

  p = sub.add_parser('export', help='export a trained workdir: ONNX for the web page, or a Hugging Face Hub repo')
  kinds = p.add_subparsers(dest='export', required=True)
  add_kind = kinds.add_parser
  kinds.add_parser = lambda *a, **k: add_kind(*a, formatter_class=_HelpFormatter, **k)
  e = kinds.add_parser('onnx', help='ONNX model(s) + models.json, checked against JAX with ONNX Runtime')
  e.add_argument('--workdir', required=True)
  e.add_argument('--out-dir', required=True)
  e.add_argument('--int8', action='store_true', help='also an int8 dynamically quantised model, with its report')
  e.add_argument(
    '--model',
    choices=('classifier', 'generator'),
    default=None,
    help='refuse the workdir unless it holds this kind of model (default: whatever it holds)',
  )
  e.add_argument('--tolerance', type=float, default=1e-4, help='largest allowed |ONNX - JAX| (default 1e-4)')
  e.set_defaults(fn=_export_onnx)
  e = kinds.add_parser('hub', help='a model repository: safetensors, config.json, ONNX, models.json, model card')
  e.add_argument('--workdir', required=True)
  e.add_argument('--repo-id', required=True, help='USER/NAME on the Hub (created if missing)')
  e.add_argument('--private', action='store_true', help='make the repo private (an existing one too)')
  e.add_argument('--endpoint', default=None, help='Hub URL (default: HF_ENDPOINT or https://huggingface.co)')
  e.add_argument('--out-dir', default=None, help='keep the assembled folder here')
  e.add_argument('--no-upload', action='store_true', help='only assemble the folder (needs --out-dir)')
  e.add_argument('--int8', action='store_true', help='include the int8 ONNX model(s)')
  e.add_argument('--license', default='cc-by-sa-4.0', help="the card's licence (default: Oxford-IIIT Pet's)")
  e.set_defaults(fn=_export_hub)
  e = kinds.add_parser(
    'site', help='a static web page that classifies a photo and generates a class in the browser (docs/site.md)'
  )
  e.add_argument('--classifier', required=True, help='a classifier workdir (exported here) or ONNX export folder')
  e.add_argument('--generator', default=None, help='a generator workdir or ONNX export folder')
  e.add_argument('--out-dir', required=True, help='the site folder (replaced if it holds an earlier site)')
  e.add_argument(
    '--ort-dir',
    default=None,
    help=f'offline: a folder holding onnxruntime-web-{site.ORT_VERSION}.tgz or its unpacked dist/ '
    '(default: download it once from the npm registry into the tinycats cache)',
  )
  e.add_argument('--int8', action='store_true', help='workdirs: also export the int8 models (the page offers both)')
  e.set_defaults(fn=_export_site)

  p = sub.add_parser('serve', help='serve a site from `tinycats export site` on this machine')
  p.add_argument('site', help='the site folder')
  p.add_argument('--port', type=int, default=8000, help='port on 127.0.0.1 (0: any free one)')
  p.add_argument('--host', default='127.0.0.1', help='address to listen on (0.0.0.0: every interface)')
  p.set_defaults(fn=_serve)

  from benchmarks import command as bench  # The harness beside the package; it imports JAX only when it runs.

  bench.add_parser(sub, _HelpFormatter)
  return parser


def main(argv=None) -> None:
  """Exits 0, 2 for a user error (argparse's, a UserError or a missing file: one line), 1 for a bug (a traceback)."""
  parser = build_parser()
  args, rest = parser.parse_known_args(argv)
  args.overrides, unknown = config_lib.split_overrides(rest)
  if unknown or (args.overrides and args.command != 'train'):
    parser.error(
      f'unrecognized arguments: {" ".join(rest)}'
      + (' (config fields are set as --config.train.batch_size=64)' if args.command == 'train' else '')
    )
  command = parser.commands[args.command]
  if args.command == 'sample' and not (args.out or args.out_dir):
    command.error('give --out FILE.png (a grid) and/or --out-dir DIR (single images)')
  if getattr(args, 'num', 1) < 1 or getattr(args, 'samples_per_class', 1) < 1:
    command.error('the number of samples must be at least 1')
  sys.exit(run_command(f'tinycats {args.command}', lambda: args.fn(args)))
