"""`tinycats serve`: a site folder (`tinycats export site`) over HTTP, as the page needs it served.

Browsers refuse ES modules and wasm sent with the wrong MIME type, and onnxruntime-web uses wasm threads only
on a cross-origin isolated page (COOP/COEP headers); `python -m http.server` gives neither.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import sys

from tinycats.errors import UserError

MIME_TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.onnx': 'application/octet-stream',
  '.png': 'image/png',
  '.map': 'application/json',
}


class SiteHandler(http.server.SimpleHTTPRequestHandler):
  """Static files with the MIME types browsers insist on (.mjs, .wasm), and cross-origin isolation headers
  (COOP/COEP) so that onnxruntime-web may use wasm threads. Only regular files inside the site are served: a
  symlink out of it, and a folder without index.html, answer 404 (no listings)."""

  extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **MIME_TYPES}
  quiet = False

  def end_headers(self):
    self.send_header('Cross-Origin-Opener-Policy', 'same-origin')
    self.send_header('Cross-Origin-Embedder-Policy', 'require-corp')
    self.send_header('Cache-Control', 'no-cache')
    super().end_headers()

  def send_head(self):
    path = self.translate_path(self.path)
    if os.path.isdir(path) and self.path.split('?', 1)[0].endswith('/'):
      path = os.path.join(path, 'index.html')  # What the base class serves for a folder.
    if not os.path.isdir(path):  # A folder without its slash is redirected by the base class.
      root, real = os.path.realpath(self.directory), os.path.realpath(path)
      if os.path.commonpath([root, real]) != root or not os.path.isfile(real):
        self.send_error(http.HTTPStatus.NOT_FOUND, 'File not found')
        return None
    return super().send_head()

  def list_directory(self, path):
    self.send_error(http.HTTPStatus.NOT_FOUND, 'File not found')

  def log_message(self, format, *args):  # noqa: A002  # The base class's signature.
    if not self.quiet:
      super().log_message(format, *args)


class SiteServer(http.server.ThreadingHTTPServer):
  def handle_error(self, request, client_address):
    if isinstance(sys.exc_info()[1], ConnectionError):  # A browser that dropped a connection (a closed tab).
      return
    super().handle_error(request, client_address)


def make_server(site: str, host: str = '127.0.0.1', port: int = 8000, quiet: bool = False):
  """A threading HTTP server for the site folder (port 0 picks a free one: see `server.server_address`)."""
  if not os.path.isfile(os.path.join(site, 'index.html')):
    raise UserError(f'{site} has no index.html; make a site with: tinycats export site --out-dir {site} ...')
  handler = functools.partial(type('Handler', (SiteHandler,), {'quiet': quiet}), directory=os.path.abspath(site))
  try:
    return SiteServer((host, port), handler)
  except OSError as e:
    raise UserError(f'cannot serve on {host}:{port} ({e.strerror or e}); choose another --port') from e


def serve(site: str, host: str = '127.0.0.1', port: int = 8000) -> None:
  """Serves the site until interrupted."""
  server = make_server(site, host, port)
  address = server.server_address
  print(f'tinycats serve: {site} at http://{address[0]}:{address[1]}/ (Ctrl-C stops)', file=sys.stderr)
  with server, contextlib.suppress(KeyboardInterrupt):
    server.serve_forever()
