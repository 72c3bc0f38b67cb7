"""The static site's page timed in headless Chromium: `python -m benchmarks.page SITE`, one JSON line per figure.

SITE is a `tinycats export site` folder, served as `tinycats serve` serves it (COOP/COEP, so the page is
cross-origin isolated and onnxruntime-web's wasm runs threaded). Chromium (Debian's /usr/bin/chromium, or
TINYCATS_CHROMIUM) is driven by Playwright. For each model file the site offers (float32, and int8 where it
was built with --int8) it times: the page load to 'ready' (models.json, the runtime, both sessions created),
the first classification of a 500x375 photo counted from the start of the load, then --classify single
classifications; and --generate images with the page's defaults (models.json `sampling`: the run's
sample.steps/sampler/guidance/guidance interval, seed 0). A script injected with page.evaluate wraps each
session's `run` and `requestAnimationFrame` with performance.now(), so a generation splits into onnxruntime
`session.run` time (batches of two for guided steps, one otherwise), the wait for a repaint the page makes after
every step, and the rest of the JavaScript (the sampler's arithmetic, tensors, drawing). int8 is loaded by
switching the page's model-file selects (a reload of both sessions, timed apart). Timings are milliseconds.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import threading

import numpy as np
from PIL import Image

from tinycats.export import serve

CHROMIUM = os.environ.get('TINYCATS_CHROMIUM', '/usr/bin/chromium')
TIMEOUT_MS = 600_000

# Wraps every session's run() and requestAnimationFrame, recording each call's duration in window.tinycats.bench.
INSTRUMENT = """() => {
  const t = window.tinycats;
  t.bench = { runs: [], frames: [] };
  for (const [model, session] of Object.entries(t.sessions)) {
    if (session.__timed) continue;
    const run = session.run.bind(session);
    session.run = async (feeds, ...rest) => {
      const n = Object.values(feeds)[0].dims[0];
      const start = performance.now();
      const out = await run(feeds, ...rest);
      t.bench.runs.push({ model, n, ms: performance.now() - start });
      return out;
    };
    session.__timed = true;
  }
  if (!window.__frameTimed) {
    const request = window.requestAnimationFrame.bind(window);
    window.requestAnimationFrame = (callback) => {
      const start = performance.now();
      return request((now) => {
        t.bench.frames.push(performance.now() - start);
        callback(now);
      });
    };
    window.__frameTimed = true;
  }
}"""


def _wait(tab, condition: str) -> None:
  print(f'waiting for {condition}', file=sys.stderr, flush=True)
  tab.wait_for_function(f"({condition}) || document.body.dataset.state === 'error'", timeout=TIMEOUT_MS)
  if tab.evaluate('document.body.dataset.state') == 'error':
    raise RuntimeError(tab.inner_text('#status'))


def _photo(folder: str) -> str:
  """A 500x375 PNG (an Oxford-IIIT Pet photo's usual size) of smooth noise: the classifier's input is resized."""
  rng = np.random.default_rng(0)
  small = rng.integers(0, 256, (47, 63, 3), dtype=np.uint8)
  path = os.path.join(folder, 'photo.png')
  Image.fromarray(small).resize((500, 375), Image.BICUBIC).save(path)
  return path


def _median(values):
  return statistics.median(values) if values else None


def _machine(tab) -> dict:
  cpu = platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      cpu = next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), cpu)
  except OSError:
    pass
  return {
    'cpu_model': cpu,
    'cpus': os.cpu_count(),
    'browser': tab.context.browser.version,
    'hardware_concurrency': tab.evaluate('navigator.hardwareConcurrency'),
    'cross_origin_isolated': tab.evaluate('self.crossOriginIsolated'),
    'backend': tab.evaluate('window.tinycats.backend.label'),
    'onnxruntime_web': tab.evaluate('window.tinycats.spec.site["onnxruntime-web"]'),
    'date': datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds'),
  }


def _classify(tab, photo: str, count: int) -> dict:
  tab.evaluate("window.tinycats.bench.runs = []; document.getElementById('photo').value = ''")  # A change each time.
  tab.set_input_files('#photo', photo)
  _wait(tab, f'window.tinycats.classify.count === {count}')
  ms = tab.evaluate('window.tinycats.classify.ms')
  runs = tab.evaluate('window.tinycats.bench.runs')
  return {'preprocess_ms': ms['preprocess'], 'model_ms': ms['model'], 'session_run_ms': runs[-1]['ms']}


def _generate(tab, count: int) -> dict:
  tab.evaluate('window.tinycats.bench.runs = []; window.tinycats.bench.frames = []')
  tab.fill('#seed', '0')
  tab.click('#generate-button')
  _wait(tab, f'window.tinycats.generate.count === {count}')
  result = tab.evaluate(
    '(({ms, steps, sampler, guidance, guidanceInterval, size}) => '
    '({ms, steps, sampler, guidance, guidanceInterval, size}))(window.tinycats.generate)'
  )
  bench = tab.evaluate('window.tinycats.bench')
  runs = [r for r in bench['runs'] if r['model'] == 'generator']
  run_ms = sum(r['ms'] for r in runs)
  frame_ms = sum(bench['frames'])
  steps = result['steps']
  return {
    'size': result['size'],
    'steps': steps,
    'sampler': result['sampler'],
    'guidance': result['guidance'],
    'guidance_interval': result['guidanceInterval'],
    'total_ms': result['ms'],
    'session_runs': len(runs),
    'session_runs_batch2': sum(r['n'] == 2 for r in runs),
    'session_run_ms': run_ms,
    'session_run_ms_batch1_median': _median([r['ms'] for r in runs if r['n'] == 1]),
    'session_run_ms_batch2_median': _median([r['ms'] for r in runs if r['n'] == 2]),
    'repaint_wait_ms': frame_ms,
    'other_js_ms': result['ms'] - run_ms - frame_ms,
    'per_step_ms': result['ms'] / steps,
    'per_step_session_run_ms': run_ms / steps,
    'per_step_js_ms': (result['ms'] - run_ms) / steps,
  }


def _select_files(tab, kind: str) -> float | None:
  """Switches both model-file selects to `kind`'s files (float32 or int8) and waits for the sessions: ms taken,
  or None when the site has no such files."""
  chosen = tab.evaluate(
    """(kind) => {
    const pick = (id) => {
      const select = document.getElementById(id);
      const option = Array.from(select.options).find((o) => o.textContent.startsWith(kind + ' '));
      if (!option) return false;
      select.value = option.value;
      return true;
    };
    return [pick('classifier-file'), pick('generator-file')];
  }""",
    kind,
  )
  if not all(chosen):
    return None
  start = tab.evaluate('performance.now()')
  tab.evaluate("document.body.dataset.state = 'switching'")
  tab.evaluate("document.getElementById('classifier-file').dispatchEvent(new Event('change'))")
  _wait(tab, "document.body.dataset.state === 'ready'")
  return tab.evaluate('performance.now()') - start


def measure(site: str, kinds: list[str], classify: int, generate: int) -> None:
  from playwright.sync_api import sync_playwright

  httpd = serve.make_server(site, '127.0.0.1', 0, quiet=True)
  threading.Thread(target=httpd.serve_forever, daemon=True).start()
  url = f'http://127.0.0.1:{httpd.server_address[1]}/?backend=wasm'
  spec = json.load(open(os.path.join(site, 'models.json')))
  models = spec['models']
  files = {  # The page's choices: the float32 file, and the int8 one where the site has it.
    'float32': (models['classifier']['original'], models['generator']),
    'int8': (models['classifier'].get('quantized'), models['generator'].get('quantized')),
  }
  sizes = {kind: {e['path']: e['sizeBytes'] for e in entries if e} for kind, entries in files.items()}
  with tempfile.TemporaryDirectory() as folder, sync_playwright() as playwright:
    photo = _photo(folder)
    args = ['--no-sandbox'] if os.geteuid() == 0 else []
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
    try:
      for kind in kinds:
        tab = browser.new_page(viewport={'width': 1000, 'height': 1200})
        # Load and the first classification are counted from navigation start (performance.now() = 0).
        tab.goto(url)
        _wait(tab, "document.body.dataset.state === 'ready'")
        ready = tab.evaluate('performance.now()')
        base = {'benchmark': 'page', 'site': os.path.abspath(site), 'files': kind, **_machine(tab)}
        if not base['cross_origin_isolated']:
          raise RuntimeError('the page is not cross-origin isolated: wasm would run single-threaded')
        switch_ms = None
        if kind != 'float32':
          switch_ms = _select_files(tab, kind)
          if switch_ms is None:
            print(json.dumps({**base, 'skipped': f'the site has no {kind} files (export site --int8)'}), flush=True)
            tab.close()
            continue
        tab.evaluate(INSTRUMENT)
        first = _classify(tab, photo, 1)
        first_done = tab.evaluate('performance.now()')
        later = [_classify(tab, photo, count) for count in range(2, classify + 2)]
        print(
          json.dumps(
            {
              **base,
              'what': 'classify',
              'model_bytes': sizes[kind],
              'load_to_ready_ms': ready,
              'switch_to_files_ms': switch_ms,
              'first_classification_from_load_ms': None if switch_ms else first_done,
              'first_classification': first,
              'classification_model_ms_median': _median([c['model_ms'] for c in later]),
              'classification_preprocess_ms_median': _median([c['preprocess_ms'] for c in later]),
              'classifications': len(later),
            }
          ),
          flush=True,
        )
        for count in range(1, generate + 1):
          print(json.dumps({**base, 'what': 'generate', 'run': count, **_generate(tab, count)}), flush=True)
        tab.close()
    finally:
      browser.close()
      httpd.shutdown()
      httpd.server_close()


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(prog='python -m benchmarks.page', description=__doc__.split('\n\n')[0])
  parser.add_argument('site', help='a `tinycats export site` folder')
  parser.add_argument('--files', default='float32,int8', help='model files to time, of float32,int8')
  parser.add_argument('--classify', type=int, default=5, help='classifications after the first')
  parser.add_argument('--generate', type=int, default=2, help='images generated per model file')
  args = parser.parse_args(argv)
  measure(args.site, args.files.split(','), args.classify, args.generate)


if __name__ == '__main__':
  main()
