"""The short summary of a `benchmarks/gpu.sh` run: its JSON lines as a Markdown page, figures against the targets.

python benchmarks/gpu_summary.py OUT_DIR/results.jsonl gpu|cpu > summary.md
"""

import json
import sys

# The GPU targets (one H100/H200): images per second of the train step, and a Pet epoch after compilation.
TARGETS = {'resnet18': 15_000, 'dit': 20_000}
EPOCH_TARGET_SECONDS = 2.0


def _fmt(value, digits=1):
  return '-' if value is None else f'{value:,.{digits}f}'


def summary(rows: list[dict], mode: str) -> str:
  lines = []
  device = next((r for r in rows if r.get('kind') == 'device'), None)
  if device:
    versions = ', '.join(f'{k} {device[k]}' for k in ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'torch'))
    lines += [
      f'# benchmarks/gpu.sh ({mode}) on {device["device_kind"]} x{len(device["devices"])} ({device["backend"]})',
      '',
      f'{versions}. Measured matmul ({device["matmul"]}): {_fmt(device["measured_peak_tflops"])} TFLOP/s, '
      'the peak the FLOP utilisation below is against.',
    ]
  else:
    lines += [f'# benchmarks/gpu.sh ({mode}): JAX did not start (log.txt)']
  tests = next((r for r in rows if r.get('kind') == 'gpu_tests'), None)
  ran = next((r for r in rows if r.get('part') == 'tests marked gpu'), {})
  lines += ['', f'Tests marked gpu: exit {ran.get("rc")}, {tests["summary"] if tests else "no summary line"}']

  lines += ['', '| train step | JAX img/s | PyTorch img/s | JAX/PyTorch | MFU | compile s | target | met |']
  lines += ['| --- | --- | --- | --- | --- | --- | --- | --- |']
  for jax_row in (r for r in rows if r.get('kind') == 'train_step' and r.get('framework') == 'jax'):
    torch_row = next(
      (
        r
        for r in rows
        if r.get('kind') == 'train_step' and r.get('framework') == 'torch' and r.get('model') == jax_row['model']
      ),
      {},
    )
    target = TARGETS.get(jax_row['model']) if mode == 'gpu' else None
    speed, theirs = jax_row['images_per_sec'], torch_row.get('images_per_sec')
    lines.append(
      f'| {jax_row["model"]} {jax_row["image_size"]} px {jax_row["dtype"]} batch {jax_row["batch"]} | {_fmt(speed)} '
      f'| {_fmt(theirs) if theirs else torch_row.get("skipped", "-")} | {_fmt(speed / theirs, 2) if theirs else "-"} '
      f'| {_fmt(jax_row.get("mfu"), 3)} | {_fmt(jax_row["compile_seconds"])} | {_fmt(target, 0)} '
      f'| {"-" if target is None else ("yes" if speed >= target else "no")} |'
    )
  for row in (r for r in rows if r.get('kind') == 'comparison' and 'name' in r):
    lines.append(
      f'\nKernel {row["name"]} ({row["dtype"]}): JAX {_fmt(row["jax_gflops_per_sec"])} GFLOP/s, '
      f'PyTorch {_fmt(row["torch_gflops_per_sec"])} ({_fmt(row["jax_over_torch"], 2)}x).'
    )
  for row in (r for r in rows if r.get('kind') == 'pipeline'):
    lines.append(f'\nPipeline {row["stage"]}: {_fmt(row["images_per_sec"])} img/s.')
  for row in (r for r in rows if r.get('kind') == 'epoch'):
    after = row['epoch_seconds_after_compile']
    met = (
      ''
      if mode != 'gpu'
      else f' (target < {EPOCH_TARGET_SECONDS} s: {"met" if after < EPOCH_TARGET_SECONDS else "not met"})'
    )
    lines.append(
      f'\nEpoch of {row["images"]} images ({row["config"]}, batch {row["batch"]}, {row["image_size"]} px, split on the '
      f'device: {row["data_on_device"]}): {_fmt(row["epoch_seconds_with_compile"], 2)} s with compilation, '
      f'{_fmt(after, 2)} s after{met}.'
    )
  for row in (r for r in rows if r.get('kind') == 'train_run'):
    lines.append(
      f'\n`tinycats train`, {row["steps"]} steps: {_fmt(row["train_seconds"])} s of training with '
      f'{_fmt(row["compile_seconds"])} s of compilation, median {_fmt(row["images_per_sec"])} img/s, '
      f'test accuracy {_fmt(row.get("test_accuracy"), 3)}.'
    )
  failed = [r for r in rows if r.get('kind') == 'gpu_sh_part' and r['rc'] != 0]
  lines += [
    '',
    'Parts that failed: '
    + (', '.join(f'{r["part"]} ({r.get("skipped") or "exit " + str(r["rc"])})' for r in failed) or 'none'),
  ]
  return '\n'.join(lines) + '\n'


def main(argv) -> int:
  rows = []
  for line in open(argv[1]):
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:
      continue
  sys.stdout.write(summary(rows, argv[2] if len(argv) > 2 else 'gpu'))
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
