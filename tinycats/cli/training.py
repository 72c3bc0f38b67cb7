"""`tinycats prepare`, `train` and `evaluate`: data in, a trained workdir, its scores."""

from __future__ import annotations

import json

from tinycats.errors import UserError


def add(sub) -> None:
  _add_prepare(sub)
  _add_train(sub)
  _add_evaluate(sub)


def _add_prepare(sub) -> None:
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


def _prepare(args) -> int:
  from tinycats.data import pets

  counts = pets.prepare(args.data_dir, archives=args.archives, verify=not args.no_verify)
  print(json.dumps({'data_dir': args.data_dir, 'splits': counts}))
  return 0


def _add_train(sub) -> None:
  p = sub.add_parser(
    'train',
    help='train (or resume) a config in a workdir on this machine; the summary as JSON',
    description='Also takes --config.FIELD=VALUE (or --config.FIELD VALUE) for any field of the config.',
  )
  p.add_argument('--config', required=True, help='config file, optionally with an argument: configs/cats.py:smoke')
  p.add_argument('--workdir', required=True, help='the run folder; a workdir with checkpoints resumes')
  p.set_defaults(fn=_train, takes_overrides=True)


def _train(args) -> int:
  from tinycats import config as config_lib
  from tinycats.train import loop

  print(json.dumps(loop.run(config_lib.load(args.config, args.overrides), args.workdir), indent=2))
  return 0


def add_sampling_flags(p, what: str) -> None:
  """--guidance, --steps, --sampler, --guidance-interval: how samples are drawn (`what`: whose, for the help)."""
  p.add_argument('--steps', type=int, default=None, help=f"{what}ODE steps (default: the run's sample.steps)")
  p.add_argument(
    '--guidance', type=float, default=None, help=f"{what}guidance scale, 1 = none (default: the run's sample.guidance)"
  )
  p.add_argument('--sampler', choices=('euler', 'heun'), default=None, help=f"{what}ODE sampler (default: the run's)")
  p.add_argument(
    '--guidance-interval',
    default=None,
    metavar='LO,HI',
    help=f'{what}guide only the steps with LO <= t <= HI (t: 0 noise, 1 data), e.g. 0.1,1; elsewhere the '
    "conditional model alone (default: the run's sample.guidance_interval)",
  )


def guidance_interval(text: str | None) -> tuple[float, float] | None:
  """`--guidance-interval LO,HI` as (lo, hi); None when not given (the run's `sample.guidance_interval`)."""
  if text is None:
    return None
  from tinycats import flow

  try:
    return flow.check_guidance_interval([float(part) for part in text.split(',')])
  except ValueError:
    raise UserError(
      f'--guidance-interval takes LO,HI with 0 <= LO <= HI <= 1 (t: 0 noise, 1 data), e.g. 0.1,1; got {text!r}'
    ) from None


def _add_evaluate(sub) -> None:
  p = sub.add_parser(
    'evaluate',
    help="evaluate a workdir's best checkpoint: writes eval.json and confusion.png (the test split; "
    'eval_val.json and confusion_val.png for val, ...)',
  )
  p.add_argument('--workdir', required=True, help='the trained run folder')
  p.add_argument('--split', default='test', choices=('train', 'val', 'test'), help='the split to score')
  p.add_argument(
    '--step',
    type=int,
    default=None,
    help='that checkpoint instead of the best (one training kept: the last train.keep_checkpoints and the best); '
    "written as eval_stepN.json, so the best's eval.json stays",
  )
  p.add_argument(
    '--data-dir',
    default=None,
    help="where the run's data is on this machine, if not where its config.json says (a run trained on Modal): "
    'the TFDS data dir, or the image folder of a folder run',
  )
  p.add_argument(
    '--classifier',
    default=None,
    help='generators: a trained classifier workdir that judges the samples '
    '(accuracy, Fréchet distance, diversity, blockiness)',
  )
  p.add_argument('--samples-per-class', type=int, default=16, help='generators: samples of each class to judge')
  p.add_argument('--seed', type=int, default=0, help="generators: the samples' noise seed")
  add_sampling_flags(p, 'generators, the judged samples: ')
  p.set_defaults(fn=_evaluate)


def _evaluate(args) -> int:
  from tinycats import evaluate

  interval = guidance_interval(args.guidance_interval)
  if (args.guidance, args.steps, args.sampler, interval) != (None,) * 4 and not args.classifier:
    raise UserError(
      '--guidance, --steps, --sampler and --guidance-interval set how the judged samples are drawn: '
      'give --classifier DIR too'
    )
  report = evaluate.evaluate(
    args.workdir,
    split=args.split,
    classifier=args.classifier,
    samples_per_class=args.samples_per_class,
    seed=args.seed,
    guidance=args.guidance,
    steps=args.steps,
    sampler=args.sampler,
    guidance_interval=interval,
    data_dir=args.data_dir,
    step=args.step,
  )
  shown = ('split', 'step', 'num_examples', 'accuracy', 'balanced_accuracy', 'degenerate', 'flow_loss')
  shown = {k: v for k, v in report.items() if k in shown}
  shown.update({k: v for k, v in report.get('samples', {}).items() if isinstance(v, float)})
  print(json.dumps(shown))
  return 0
