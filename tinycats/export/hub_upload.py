"""The Hugging Face Hub plumbing `export hub` (a model repo) and `export space` (a static Space) share: the token,
the repo id, and one commit that creates the repo if needed and uploads a folder's files, whose failure is one
line with the way out (offline: the files are already usable where they are).

huggingface_hub sends files over 10 MB or binary through the Hub's large-file path (Xet, or Git LFS without
hf_xet); it retries each request that fails on a connection error or a 5xx answer, with back-off.
"""

from __future__ import annotations

import os

from huggingface_hub import HfApi, get_token
from huggingface_hub.utils import HFValidationError, validate_repo_id

from tinycats.errors import UserError
from tinycats.inference import ExportError

DEFAULT_ENDPOINT = 'https://huggingface.co'


def hub_token(way_out: str) -> str:
  """HF_TOKEN, else the token `hf auth login` stored; none is an error (naming `way_out`) before any work."""
  token = get_token()
  if not token:
    raise UserError(
      'no Hugging Face token: set HF_TOKEN=hf_... (a write token from '
      f'https://huggingface.co/settings/tokens) or run `hf auth login`; or {way_out}'
    )
  return token


def check_repo_id(repo_id: str) -> str:
  try:
    validate_repo_id(repo_id)
  except HFValidationError as e:
    raise UserError(f'--repo-id {repo_id!r} is not a Hub repo id (USER/NAME): {e}') from e
  return repo_id


def endpoint_url(endpoint: str | None) -> str:
  """The Hub the upload goes to: --endpoint, else HF_ENDPOINT, else huggingface.co."""
  return (endpoint or os.environ.get('HF_ENDPOINT') or DEFAULT_ENDPOINT).rstrip('/')


def _unreachable(error: BaseException) -> bool:
  """The Hub was not reached at all (no network, HF_HUB_OFFLINE, a wrong --endpoint), as opposed to an answer."""
  if getattr(error, 'response', None) is not None:
    return False
  return isinstance(error, (ConnectionError, TimeoutError)) or any(
    c.__name__ == 'TransportError' for c in type(error).__mro__
  )  # httpx's connect/read/timeout errors, which huggingface_hub lets through after its retries.


def upload(
  folder: str,
  repo_id: str,
  *,
  token: str,
  files: list[str] | None = None,
  stale: list[str] = (),
  private: bool = False,
  endpoint: str | None = None,
  repo_type: str = 'model',
  space_sdk: str | None = None,
  way_out: str | None = None,
) -> str:
  """Creates the repo if needed (a Space with `space_sdk`; made private if `private`, even if it exists), uploads
  `files` of `folder` (all by default) and deletes `stale` in one commit; the commit's URL.

  Other files in the repo (a user's own notes, .gitattributes) are left alone. A failure is an ExportError whose
  message ends with `way_out` (default: the files are complete in `folder`).
  """
  endpoint = endpoint_url(endpoint)
  api = HfApi(endpoint=endpoint, token=token)
  try:
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type=repo_type, space_sdk=space_sdk)
    if private:  # create_repo leaves an existing repo as it was; --private means private before the upload.
      api.update_repo_settings(repo_id, private=True, repo_type=repo_type)
    commit = api.upload_folder(
      repo_id=repo_id,
      folder_path=folder,
      repo_type=repo_type,
      allow_patterns=files,
      delete_patterns=list(stale) or None,
      commit_message=f'Upload tinycats {"site" if repo_type == "space" else "export"}',
    )
  except Exception as e:  # pylint: disable=broad-except  # HTTP, network, auth: one message with the way out.
    status = getattr(getattr(e, 'response', None), 'status_code', None)
    hint = {401: 'the token is not valid', 403: 'the token may not write to this repo (use a write token)'}.get(status)
    if _unreachable(e):
      hint = f'could not reach {endpoint}: offline, or a wrong --endpoint'
    raise ExportError(
      f'uploading to {repo_id!r} failed: {type(e).__name__}: {" ".join(str(e).split())}'  # One line.
      + (f' ({hint})' if hint else '')
      + f'; {way_out or f"the files are complete in {folder}"}'
    ) from e
  return getattr(commit, 'commit_url', str(commit))
