"""`tinycats export onnx|hub|site|space` and `serve`: a trained workdir to files a user publishes; the page served."""

from __future__ import annotations

import json
import sys


def add(sub) -> None:
  p = sub.add_parser(
    'export', help='export a trained workdir: ONNX, a Hugging Face Hub repo, the web page, or that page as a Space'
  )
  kinds = p.add_subparsers(dest='export', required=True)
  add_kind = kinds.add_parser
  kinds.add_parser = lambda *a, **k: add_kind(*a, formatter_class=p.formatter_class, **k)
  _add_onnx(kinds)
  _add_hub(kinds)
  _add_site(kinds)
  _add_space(kinds)
  p = sub.add_parser('serve', help='serve a site from `tinycats export site` on this machine')
  p.add_argument('site', help='the site folder')
  p.add_argument('--port', type=int, default=8000, help='port on 127.0.0.1 (0: any free one)')
  p.add_argument('--host', default='127.0.0.1', help='address to listen on (0.0.0.0: every interface)')
  p.set_defaults(fn=_serve)


def _add_onnx(kinds) -> None:
  e = kinds.add_parser('onnx', help='ONNX model(s) + models.json, checked against JAX with ONNX Runtime')
  e.add_argument('--workdir', required=True)
  e.add_argument('--out-dir', required=True)
  e.add_argument('--int8', action='store_true', help='also an int8 dynamically quantised model, with its report')
  e.add_argument(
    '--task',
    choices=('classifier', 'generator'),
    default=None,
    help='refuse the workdir unless it holds this task (default: whatever it holds)',
  )
  e.add_argument('--tolerance', type=float, default=1e-4, help='largest allowed |ONNX - JAX| (default 1e-4)')
  e.add_argument(
    '--data-dir',
    default=None,
    help="with --int8: where the run's data is on this machine, if not where its config.json says (a run trained "
    'on Modal); the int8 check scores validation pictures',
  )
  e.set_defaults(fn=_export_onnx)


def _export_onnx(args) -> int:
  from tinycats.export import onnx

  report = onnx.export_onnx(
    args.workdir, args.out_dir, int8=args.int8, task=args.task, tolerance=args.tolerance, data_dir=args.data_dir
  )
  return _done(
    f'ONNX Runtime vs JAX max difference {report["max_difference"]:.3g} (tolerance {report["tolerance"]:g})', report
  )


def _done(line: str, report: dict) -> int:
  """One line for the person on stderr, the report as JSON on stdout (for scripts)."""
  print(f'tinycats export: {line}', file=sys.stderr)
  print(json.dumps(report))
  return 0


def _add_hub(kinds) -> None:
  e = kinds.add_parser('hub', help='a model repository: safetensors, config.json, ONNX, models.json, model card')
  e.add_argument('--workdir', required=True)
  e.add_argument('--repo-id', required=True, help='USER/NAME on the Hub (created if missing)')
  e.add_argument('--private', action='store_true', help='make the repo private (an existing one too)')
  e.add_argument('--endpoint', default=None, help='Hub URL (default: HF_ENDPOINT or https://huggingface.co)')
  e.add_argument('--out-dir', default=None, help='keep the assembled folder here')
  e.add_argument('--no-upload', action='store_true', help='only assemble the folder (needs --out-dir)')
  e.add_argument('--int8', action='store_true', help='include the int8 ONNX model(s)')
  e.add_argument('--license', default='cc-by-sa-4.0', help="the card's licence (default: Oxford-IIIT Pet's)")
  e.add_argument(
    '--data-dir',
    default=None,
    help="with --int8: where the run's data is on this machine, if not where its config.json says (a run trained "
    'on Modal); the int8 check scores validation pictures',
  )
  e.set_defaults(fn=_export_hub)


def _export_hub(args) -> int:
  from tinycats.export import hub

  result = hub.export_hub(
    args.workdir, args.repo_id, private=args.private, endpoint=args.endpoint, out_dir=args.out_dir,
    no_upload=args.no_upload, int8=args.int8, license_id=args.license, data_dir=args.data_dir,
  )  # fmt: skip
  shown = {k: v for k, v in result.items() if k != 'onnx'}
  return _done(f'ONNX Runtime vs JAX max difference {result["onnx"]["max_difference"]:.3g}', shown)


def _add_site(kinds) -> None:
  e = kinds.add_parser(
    'site', help='a static web page that classifies a photo and generates a class in the browser (docs/site.md)'
  )
  e.add_argument('--classifier', required=True, help='a classifier workdir (exported here) or ONNX export folder')
  e.add_argument('--generator', default=None, help='a generator workdir or ONNX export folder')
  e.add_argument('--out-dir', required=True, help='the site folder (replaced if it holds an earlier site)')
  e.add_argument(
    '--ort-dir',
    default=None,
    help='offline: a folder holding onnxruntime-web-VERSION.tgz (the version docs/site.md names) or its unpacked dist/ '
    '(default: download it once from the npm registry into the tinycats cache)',
  )
  e.add_argument('--int8', action='store_true', help='workdirs: also export the int8 models (the page offers both)')
  e.set_defaults(fn=_export_site)


def _export_site(args) -> int:
  from tinycats.export import site

  report = site.export_site(
    args.classifier, args.out_dir, generator=args.generator, ort_dir=args.ort_dir, int8=args.int8
  )
  return _done(
    f'site in {report["out_dir"]} ({report["bytes"] / 1e6:.1f} MB, of which onnxruntime-web '
    f'{report["onnxruntime_web"]} {report["onnxruntime_web_bytes"] / 1e6:.1f} MB); open it with: '
    f'tinycats serve {args.out_dir}',
    report,
  )


def _add_space(kinds) -> None:
  e = kinds.add_parser('space', help='publish a site from `tinycats export site` as a static Hugging Face Space')
  e.add_argument('--site', required=True, help='the site folder (`tinycats export site --out-dir`)')
  e.add_argument('--repo-id', required=True, help='USER/NAME of the Space on the Hub (created if missing)')
  e.add_argument('--private', action='store_true', help='make the Space private (an existing one too)')
  e.add_argument('--endpoint', default=None, help='Hub URL (default: HF_ENDPOINT or https://huggingface.co)')
  e.add_argument(
    '--license',
    default=None,
    help="the Space's licence (default: the one the site's models name, if known: a Hub export's card, or "
    "Oxford-IIIT Pet's for a workdir trained on it)",
  )
  e.set_defaults(fn=_export_space)


def _export_space(args) -> int:
  from tinycats.export import space

  report = space.export_space(
    args.site, args.repo_id, private=args.private, endpoint=args.endpoint, license_id=args.license
  )
  return _done(
    f'published {args.site} ({report["bytes"] / 1e6:.1f} MB) as the Space {report["space"]}; the Hub serves it '
    f'once built; offline the folder works as it is: tinycats serve {args.site}',
    report,
  )


def _serve(args) -> int:
  from tinycats.export import serve

  serve.serve(args.site, host=args.host, port=args.port)
  return 0
