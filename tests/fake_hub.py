"""A small Hugging Face Hub on 127.0.0.1 for `HfApi(endpoint=...)`: create repo, upload in one commit, download.

It speaks the endpoints huggingface_hub uses for `create_repo` + `upload_folder` (repo create, validate-yaml,
visibility settings, preupload, commit as newline-delimited JSON with added and deleted files, and the file tree it
lists for deletions) and `snapshot_download` (repo info, file tree, HEAD/GET resolve), for models and Spaces
(`repo_type='space'`: a Space needs an sdk, and its URLs start with spaces/, as on the Hub).

By default every file is declared a 'regular' upload, so its bytes arrive base64 inside the commit. With
`lfs=True` it answers as the Hub does for large or binary files (over 10 MB, or a NUL byte in the sample the
client sends): 'lfs', and takes them through the Git LFS batch API (basic transfer: one PUT per object, checked
against its sha256, then verify) before the commit names them by oid. It does not speak Xet's storage protocol,
so a client that has hf_xet must be told not to use it (`huggingface_hub.constants.HF_HUB_DISABLE_XET`, what
HF_HUB_DISABLE_XET=1 sets), as a client without hf_xet would.

`repos` is keyed as the Hub's URLs are: 'user/name' for a model, 'spaces/user/name' for a Space.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import re
import threading

LFS_THRESHOLD = 10 * 1024 * 1024  # The Hub's: a larger file must go through the large-file path.
TYPES = {'models': '', 'spaces': 'spaces/', 'datasets': 'datasets/'}  # API path -> prefix of the repo's key.
API = r'/api/(models|spaces|datasets)/([^/]+/[^/]+)'


class FakeHub:
  def __init__(self, token: str = 'hf_test_token', fail_commits: int = 0, lfs: bool = False):
    self.token = token
    self.lfs = lfs
    self.repos: dict[str, dict[str, bytes]] = {}
    self.private: dict[str, bool] = {}
    self.sdk: dict[str, str] = {}  # A Space's sdk, as created.
    self.commits: list[tuple[str, str, list[str], list[str]]] = []  # (repo, summary, added paths, deleted paths)
    self.lfs_files: dict[str, set[str]] = {}  # repo -> the paths committed as LFS pointers (by oid)
    self.lfs_objects: dict[str, bytes] = {}  # oid (sha256) -> the bytes PUT for it
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

  def _upload_mode(self, spec: dict) -> str:
    if not self.lfs:
      return 'regular'
    large = spec['size'] > LFS_THRESHOLD or b'\0' in base64.b64decode(spec.get('sample', ''))
    return 'lfs' if large else 'regular'

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
        if self.headers.get('Transfer-Encoding', '').lower() != 'chunked':
          return self.rfile.read(int(self.headers.get('Content-Length') or 0))
        out = b''
        while size := int(self.rfile.readline().split(b';')[0], 16):
          out += self.rfile.read(size)
          self.rfile.readline()  # The CRLF after each chunk.
        while self.rfile.readline() not in (b'\r\n', b'\n', b''):  # Trailers.
          pass
        return out

      def _authorised(self) -> bool:
        if self.headers.get('Authorization') == f'Bearer {hub.token}':
          return True
        self._json(401, {'error': 'Invalid credentials in Authorization header'})
        return False

      def _missing(self, head: bool = False):
        return self._send(404, b'', {'X-Error-Code': 'RepoNotFound'}, head)

      def do_POST(self):  # noqa: N802
        hub.requests.append(f'POST {self.path}')
        body = self._body()
        if self.path == '/api/repos/create':
          return self._create(json.loads(body))
        if self.path == '/api/validate-yaml':
          return self._json(200, {'errors': [], 'warnings': []})
        batch = re.fullmatch(r'/((?:spaces/|datasets/)?[^/]+/[^/]+)\.git/info/lfs/objects/batch', self.path)
        if batch:
          return self._lfs_batch(batch.group(1), json.loads(body)) if self._authorised() else None
        if self.path == '/lfs/verify':
          spec = json.loads(body)
          found = hub.lfs_objects.get(spec['oid'])
          return self._json(200, {}) if found is not None and len(found) == spec['size'] else self._json(404, {})
        match = re.fullmatch(API + r'/(preupload|commit)/([^/?]+)(\?.*)?', self.path)
        if not match or not self._authorised():
          return self._json(404, {'error': 'not found'}) if not match else None
        repo, action = TYPES[match.group(1)] + match.group(2), match.group(3)
        if repo not in hub.repos:
          return self._missing()
        if action == 'preupload':
          files = json.loads(body)['files']
          return self._json(
            200,
            {'files': [{'path': f['path'], 'uploadMode': hub._upload_mode(f), 'shouldIgnore': False} for f in files]},
          )
        if hub.fail_commits:
          hub.fail_commits -= 1
          return self._json(500, {'error': 'Internal Error'})
        return self._commit(repo, body)

      def _create(self, spec: dict):
        if not self._authorised():
          return
        kind = spec.get('type') or 'model'
        name = f'{spec["organization"]}/{spec["name"]}' if spec.get('organization') else spec['name']
        repo = TYPES[f'{kind}s'] + name
        if kind == 'space' and not spec.get('sdk'):
          return self._json(400, {'error': 'A Space needs an sdk (gradio, docker or static)'})
        if repo in hub.repos:
          return self._json(409, {'error': f'You already created this {kind} repo', 'url': f'{hub.endpoint}/{repo}'})
        hub.repos[repo] = {}
        hub.private[repo] = spec.get('visibility') == 'private' or bool(spec.get('private'))
        if kind == 'space':
          hub.sdk[repo] = spec['sdk']
        return self._json(200, {'url': f'{hub.endpoint}/{repo}', 'name': repo})

      def _lfs_batch(self, repo: str, spec: dict):
        """The Git LFS batch API: where to PUT each object not stored yet (basic transfer), and how to verify it."""
        if repo not in hub.repos:
          return self._missing()
        objects = []
        for item in spec['objects']:
          entry = {'oid': item['oid'], 'size': item['size']}
          if item['oid'] not in hub.lfs_objects:
            entry['actions'] = {
              'upload': {'href': f'{hub.endpoint}/lfs/objects/{item["oid"]}', 'header': {}},
              'verify': {'href': f'{hub.endpoint}/lfs/verify', 'header': {}},
            }
          objects.append(entry)
        return self._json(200, {'transfer': 'basic', 'objects': objects})

      def _commit(self, repo: str, body: bytes):
        summary, paths, deleted = '', [], []
        for line in body.splitlines():
          item = json.loads(line)
          if item['key'] == 'header':
            summary = item['value']['summary']
          elif item['key'] == 'file':
            hub.repos[repo][item['value']['path']] = base64.b64decode(item['value']['content'])
            hub.lfs_files.setdefault(repo, set()).discard(item['value']['path'])
            paths.append(item['value']['path'])
          elif item['key'] == 'lfsFile':
            data = hub.lfs_objects.get(item['value']['oid'])
            if data is None or len(data) != item['value']['size']:
              return self._json(400, {'error': f'LFS object of {item["value"]["path"]} was not uploaded'})
            hub.repos[repo][item['value']['path']] = data
            hub.lfs_files.setdefault(repo, set()).add(item['value']['path'])
            paths.append(item['value']['path'])
          elif item['key'] == 'deletedFile':
            hub.repos[repo].pop(item['value']['path'], None)
            deleted.append(item['value']['path'])
        hub.commits.append((repo, summary, paths, deleted))
        oid = hashlib.sha1(repr((hub.endpoint, hub.commits)).encode()).hexdigest()
        hub.heads[repo] = oid
        return self._json(200, {'commitUrl': f'{hub.endpoint}/{repo}/commit/{oid}', 'commitOid': oid, 'success': True})

      def do_PUT(self):  # noqa: N802  # Repo settings (only the visibility), or an LFS object's bytes.
        hub.requests.append(f'PUT {self.path}')
        body = self._body()
        lfs = re.fullmatch(r'/lfs/objects/([0-9a-f]{64})', self.path)
        if lfs:
          if hashlib.sha256(body).hexdigest() != lfs.group(1):
            return self._json(400, {'error': 'the bytes do not match the oid'})
          hub.lfs_objects[lfs.group(1)] = body
          return self._json(200, {})
        match = re.fullmatch(API + r'/settings', self.path)
        if not match or not self._authorised():
          return self._json(404, {'error': 'not found'}) if not match else None
        repo = TYPES[match.group(1)] + match.group(2)
        if repo not in hub.repos:
          return self._missing()
        hub.private[repo] = json.loads(body).get('visibility') == 'private'
        return self._json(200, {})

      def _resolve(self, head: bool):
        hub.requests.append(f'{self.command} {self.path}')
        tree = re.fullmatch(API + r'/tree/([^/?]+)(\?.*)?', self.path)
        if tree and TYPES[tree.group(1)] + tree.group(2) in hub.repos:  # The file listing snapshot_download filters.
          return self._json(
            200,
            [
              {'type': 'file', 'path': n, 'size': len(d), 'oid': hashlib.sha1(d).hexdigest()}
              for n, d in hub.repos[TYPES[tree.group(1)] + tree.group(2)].items()
            ],
          )
        info = re.fullmatch(API + r'/revision/([^/?]+)(\?.*)?', self.path)
        if info:  # Repo info, as snapshot_download asks for it first.
          repo = TYPES[info.group(1)] + info.group(2)
          if repo not in hub.repos:
            return self._missing(head)
          return self._json(
            200,
            {
              'id': info.group(2),
              'modelId': info.group(2),
              'sha': hub.heads.get(repo, '0' * 40),
              'private': hub.private[repo],
              'siblings': [{'rfilename': n} for n in hub.repos[repo]],
              **({'sdk': hub.sdk[repo]} if repo in hub.sdk else {}),
            },
          )
        match = re.fullmatch(r'/((?:spaces/|datasets/)?[^/]+/[^/]+)/resolve/([^/]+)/(.+)', self.path)
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
