"""The benchmark harness (`tinycats bench`), outside the library: it times and measures what `tinycats` runs.

`command` (the CLI's `bench` subcommand), `speed` (train step, kernels, pipeline, epoch), `torch_baseline`
(the same step in plain PyTorch), `quality` (the smoke recipes from scratch on shape data), `timing` (what
they share: per-step timings, the machine, one JSON line per result). `gpu.sh` runs them on a lent GPU.
"""
