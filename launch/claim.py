"""One Modal run name, one training call: a claim on the run's name in a `modal.Dict` every container shares.

`tinycats.train.lock` (flock on WORKDIR/.lock) keeps a second run out of a workdir on one machine, but two
containers that mount the outputs volume under the same run name (two launches with the same `--name`) share
no kernel, and each would train and commit into the other's checkpoints. So the container's first act is
to claim the name in the app's Dict (`put(..., skip_if_exists=True)`, atomic on Modal's server):
- free: claimed, and released when the call ends (by an error too: Modal's retry claims it again);
- held by the same function call: a retry after a preemption, which takes it over;
- held by another call whose heartbeat (refreshed at each checkpoint) is older than `stale_after` (the
  function's timeout: no live call goes that long without one): a call that was killed, taken over with a note;
- else refused, in one line naming the holder and the way out.

The store is anything with modal.Dict's `put(key, value, skip_if_exists=)`, `get` and `pop`.
"""

from __future__ import annotations

import contextlib
import datetime
import socket
import sys
import time

from tinycats.errors import UserError


class RunClaimed(UserError):
  """Another Modal call is training this run name."""


def _when(seconds: float) -> str:
  return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime('%Y-%m-%d %H:%M:%S UTC')


def refusal(store, run_name: str, call_id: str | None, stale_after: float, now=time.time) -> str | None:
  """Why `call_id` may not train `run_name` now (one line), or None when it may."""
  holder = store.get(run_name)
  if not holder or holder.get('call') == call_id or now() - holder.get('heartbeat', 0) > stale_after:
    return None
  return (
    f'run {run_name} is being trained by another Modal call ({holder.get("call")} on {holder.get("host")}, '
    f'started {_when(holder["started"])}, last checkpoint or start {_when(holder["heartbeat"])}); wait for it, '
    f'stop it (modal app stop), or launch with another --name'
  )


@contextlib.contextmanager
def hold(store, run_name: str, call_id: str | None, stale_after: float, now=time.time):
  """Claims `run_name` for the `with` block; yields `heartbeat()`, to call at each checkpoint. Raises RunClaimed."""
  mine = dict(call=call_id, host=socket.gethostname(), started=now(), heartbeat=now())
  if not store.put(run_name, mine, skip_if_exists=True):
    if why := refusal(store, run_name, call_id, stale_after, now):
      raise RunClaimed(why)
    holder = store.get(run_name) or {}
    if holder.get('call') == call_id:
      print(f'run {run_name}: call {call_id} retried; taking its claim over', file=sys.stderr)
    elif holder:
      print(
        f'run {run_name}: taking over the claim of call {holder.get("call")}, silent since '
        f'{_when(holder.get("heartbeat", 0))} (longer than the {stale_after:.0f} s a call may run)',
        file=sys.stderr,
      )
    store.put(run_name, mine)

  def heartbeat() -> None:
    mine['heartbeat'] = now()
    store.put(run_name, dict(mine))

  try:
    yield heartbeat
  finally:
    if (store.get(run_name) or {}).get('call') == call_id:
      store.pop(run_name, None)
