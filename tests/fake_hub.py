"""A small Hugging Face Hub on 127.0.0.1 for `HfApi(endpoint=...)`: create repo, upload in one commit, download.

It speaks the endpoints huggingface_hub uses for `create_repo` + `upload_folder` (repo create,
validate-yaml, visibility settings, preupload, commit as newline-delimited JSON with added and deleted files, and
the file tree it lists for deletions) and `snapshot_download` (repo info, file tree, HEAD/GET resolve).
Every file is declared a 'regular' upload, so its bytes arrive base64 inside the commit (no LFS/Xet).
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import re
import threading


class FakeHub:
  def __init__(self, token: str = 'hf_test_token', fail_commits: int = 0):
    self.token = token
    self.repos: dict[str, dict[str, bytes]] = {}
    self.private: dict[str, bool] = {}
    self.commits: list[tuple[str, str, list[str], list[str]]] = []  # (repo, summary, added paths, deleted paths)
    self.heads: dict[str, str] = {}  # repo -> its latest commit id
    self.requests: list[str] = []
    self.fail_commits = fail_commits  # The next N commits answer 500 (a transient failure).
    self._server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), self._handler())
    self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

  @property
  def endpoint(self) -> str:
    return f'http://127.0.0.1:{self._server.server_address[1]}'

  def __enter__(self) -> FakeHub:
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._server.shutdown()
    self._server.server_close()

  def _handler(self):
    hub = self

    class Handler(http.server.BaseHTTPRequestHandler):
      def _send(self, status: int, body: bytes = b'', headers: dict | None = None, head: bool = False):
        self.send_response(status)
        for k, v in (headers or {}).items():
          self.send_header(k, v)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if body and not head:
          self.wfile.write(body)

      def _json(self, status: int, obj):
        self._send(status, json.dumps(obj).encode(), {'Content-Type': 'application/json'})

      def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get('Content-Length') or 0))

      def _authorised(self) -> bool:
        if self.headers.get('Authorization') == f'Bearer {hub.token}':
          return True
        self._json(401, {'error': 'Invalid credentials in Authorization header'})
        return False

      def do_POST(self):  # noqa: N802
        hub.requests.append(f'POST {self.path}')
        body = self._body()
        if self.path == '/api/repos/create':
          if not self._authorised():
            return
          spec = json.loads(body)
          repo = f'{spec["organization"]}/{spec["name"]}' if spec.get('organization') else spec['name']
          if repo in hub.repos:
            return self._json(409, {'error': 'You already created this model repo', 'url': f'{hub.endpoint}/{repo}'})
          hub.repos[repo] = {}
          hub.private[repo] = bool(spec.get('private'))
          return self._json(200, {'url': f'{hub.endpoint}/{repo}', 'name': repo})
        if self.path == '/api/validate-yaml':
          return self._json(200, {'errors': [], 'warnings': []})
        match = re.fullmatch(r'/api/models/([^/]+/[^/]+)/(preupload|commit)/([^/?]+)(\?.*)?', self.path)
        if not match or not self._authorised():
          return self._json(404, {'error': 'not found'}) if not match else None
        repo, action = match.group(1), match.group(2)
        if repo not in hub.repos:
          return self._send(404, b'', {'X-Error-Code': 'RepoNotFound'})
        if action == 'preupload':
          files = json.loads(body)['files']
          return self._json(
            200, {'files': [{'path': f['path'], 'uploadMode': 'regular', 'shouldIgnore': False} for f in files]}
          )
        if hub.fail_commits:
          hub.fail_commits -= 1
          return self._json(500, {'error': 'Internal Error'})
        summary, paths, deleted = '', [], []
        for line in body.splitlines():
          item = json.loads(line)
          if item['key'] == 'header':
            summary = item['value']['summary']
          elif item['key'] == 'file':
            hub.repos[repo][item['value']['path']] = base64.b64decode(item['value']['content'])
            paths.append(item['value']['path'])
          elif item['key'] == 'deletedFile':
            hub.repos[repo].pop(item['value']['path'], None)
            deleted.append(item['value']['path'])
        hub.commits.append((repo, summary, paths, deleted))
        oid = hashlib.sha1(repr((hub.endpoint, hub.commits)).encode()).hexdigest()
        hub.heads[repo] = oid
        return self._json(200, {'commitUrl': f'{hub.endpoint}/{repo}/commit/{oid}', 'commitOid': oid, 'success': True})

      def do_PUT(self):  # noqa: N802  # Repo settings: only the visibility.
        hub.requests.append(f'PUT {self.path}')
        body = self._body()
        match = re.fullmatch(r'/api/models/([^/]+/[^/]+)/settings', self.path)
        if not match or not self._authorised():
          return self._json(404, {'error': 'not found'}) if not match else None
        if match.group(1) not in hub.repos:
          return self._send(404, b'', {'X-Error-Code': 'RepoNotFound'})
        hub.private[match.group(1)] = json.loads(body).get('visibility') == 'private'
        return self._json(200, {})

      def _resolve(self, head: bool):
        hub.requests.append(f'{self.command} {self.path}')
        tree = re.fullmatch(r'/api/models/([^/]+/[^/]+)/tree/([^/?]+)(\?.*)?', self.path)
        if tree and tree.group(1) in hub.repos:  # The file listing snapshot_download filters.
          return self._json(
            200,
            [
              {'type': 'file', 'path': n, 'size': len(d), 'oid': hashlib.sha1(d).hexdigest()}
              for n, d in hub.repos[tree.group(1)].items()
            ],
          )
        info = re.fullmatch(r'/api/models/([^/]+/[^/]+)/revision/([^/?]+)(\?.*)?', self.path)
        if info:  # Repo info, as snapshot_download asks for it first.
          repo = info.group(1)
          if repo not in hub.repos:
            return self._send(404, b'', {'X-Error-Code': 'RepoNotFound'}, head)
          return self._json(
            200,
            {
              'id': repo,
              'modelId': repo,
              'sha': hub.heads.get(repo, '0' * 40),
              'private': hub.private[repo],
              'siblings': [{'rfilename': n} for n in hub.repos[repo]],
            },
          )
        match = re.fullmatch(r'/([^/]+/[^/]+)/resolve/([^/]+)/(.+)', self.path)
        data = hub.repos.get(match.group(1), {}).get(match.group(3)) if match else None
        if data is None:
          return self._send(
            404,
            b'',
            {'X-Error-Code': 'EntryNotFound' if match and match.group(1) in hub.repos else 'RepoNotFound'},
            head,
          )
        self._send(
          200, data, {'X-Repo-Commit': hub.heads[match.group(1)], 'ETag': f'"{hashlib.sha256(data).hexdigest()}"'}, head
        )

      def do_HEAD(self):  # noqa: N802
        self._resolve(head=True)

      def do_GET(self):  # noqa: N802
        self._resolve(head=False)

      def log_message(self, *args):
        pass

    return Handler
