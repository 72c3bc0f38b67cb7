"""What every benchmark shares: step timings, the machine a figure was measured on, one JSON line per result."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import time

import jax

from tinycats.errors import UserError


def timings(seconds: list[float]) -> dict:
  """Median, min, p90 and max of per-step `seconds`, in milliseconds."""
  seconds = sorted(seconds)
  pick = lambda q: seconds[min(len(seconds) - 1, int(q * len(seconds)))]
  return {
    'step_ms_median': 1e3 * statistics.median(seconds),
    'step_ms_min': 1e3 * seconds[0],
    'step_ms_p90': 1e3 * pick(0.9),
    'step_ms_max': 1e3 * seconds[-1],
  }


def queued_timings(launch, wait, steps: int, calls: int = 10) -> dict:
  """Per-call timings of `launch()`: each of `steps` samples queues `calls` launches and waits once.

  One wait per call would time a GPU's launch and sync latency, not a kernel of a few microseconds.
  One untimed sample first (compilation, allocations).
  """
  if steps < 1:
    raise UserError(f'--steps must be at least 1, got {steps}')
  seconds = []
  for sample in range(steps + 1):
    start = time.perf_counter()
    for _ in range(calls):
      out = launch()
    wait(out)
    if sample:
      seconds.append((time.perf_counter() - start) / calls)
  return timings(seconds)


def cpu_model() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      return next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), platform.machine())
  except OSError:
    return platform.processor() or platform.machine()


def machine() -> dict:
  devices = jax.devices()
  return {
    'backend': jax.default_backend(),
    'device': devices[0].device_kind,
    'device_count': len(devices),
    'host': platform.node(),
    'cpus': os.cpu_count(),
    'cpu_model': cpu_model(),
    'jax': jax.__version__,
    'date': datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds'),
  }


def emit(result: dict, results_path: str | None) -> None:
  """Prints `result` as one JSON line, also appended to `results_path` when given."""
  line = json.dumps(result, sort_keys=True)
  print(line, flush=True)
  if results_path:
    os.makedirs(os.path.dirname(os.path.abspath(results_path)), exist_ok=True)
    with open(results_path, 'a') as f:
      f.write(line + '\n')
