"""The demo's training script: what each torchrun worker of :class:`rdzv.demo.TorchrunCluster` runs.

A tiny linear regression trained with data parallelism on CPU: every step, each rank
computes the gradient on its shard, the gradients are averaged with a gloo
``all_reduce``, and every rank applies the same update. Rank 0 checkpoints the step
and weights to ``<workdir>/checkpoint.json`` after each step; a (re)started worker
group resumes from that checkpoint, so killing an agent costs a few steps, not the run.

Every worker appends one JSON line per event to ``<workdir>/progress/agent-<A>.jsonl``
(A from ``$RDZV_DEMO_AGENT``): ``event`` (``"start"``, ``"step"``, ``"done"``),
``agent``, ``rank``, ``world_size``, ``step``, ``loss``, ``restart_count``
(torchrun's ``TORCHELASTIC_RESTART_COUNT``), ``resumed_from``, ``pid``, ``time``.

Usage (through torchrun): ``train.py --workdir DIR [--steps N] [--step-time SECONDS]``.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

FEATURES = 8
SAMPLES = 512
LEARNING_RATE = 0.05


def die_with_agent() -> None:
    """Be killed when the agent dies: torchrun starts workers in sessions of their own,
    so killing an agent's process group would otherwise leave its worker running."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the agent died before the line above
        sys.exit(1)


def dataset(rank: int, world_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's shard of one fixed dataset: y = X @ (1, 2, ..., FEATURES) + noise."""
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(SAMPLES, FEATURES, generator=generator)
    targets = features @ torch.arange(1.0, FEATURES + 1) + 0.1 * torch.randn(SAMPLES, generator=generator)
    return features[rank::world_size], targets[rank::world_size]


def load_checkpoint(path: Path) -> tuple[int, torch.Tensor]:
    if not path.exists():
        return 0, torch.zeros(FEATURES)
    saved = json.loads(path.read_text())
    return int(saved["step"]), torch.tensor(saved["weights"])


def save_checkpoint(path: Path, step: int, weights: torch.Tensor, loss: float) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps({"step": step, "weights": weights.tolist(), "loss": loss}))
    os.replace(partial, path)  # a reader sees the old checkpoint or the new one, never half of one


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--step-time", type=float, default=0.2)
    args = parser.parse_args(argv)
    die_with_agent()

    dist.init_process_group("gloo", timeout=timedelta(seconds=30))
    rank, world_size = dist.get_rank(), dist.get_world_size()
    progress = args.workdir / "progress" / f"agent-{os.environ.get('RDZV_DEMO_AGENT', 'x')}.jsonl"
    checkpoint = args.workdir / "checkpoint.json"
    restart_count = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))

    # Rank 0 reads the checkpoint; everyone starts from what it read.
    start, weights = load_checkpoint(checkpoint) if rank == 0 else (0, torch.zeros(FEATURES))
    resume = torch.cat([torch.tensor([float(start)]), weights])
    dist.broadcast(resume, src=0)
    start, weights = int(resume[0].item()), resume[1:].clone()

    def report(event: str, step: int, loss: float | None) -> None:
        record = {
            "event": event, "agent": os.environ.get("RDZV_DEMO_AGENT"), "rank": rank,
            "world_size": world_size, "step": step, "loss": loss, "restart_count": restart_count,
            "resumed_from": start, "pid": os.getpid(), "time": time.time(),
        }
        with progress.open("a") as out:
            out.write(json.dumps(record) + "\n")

    report("start", start, None)
    features, targets = dataset(rank, world_size)
    loss = None
    for step in range(start + 1, args.steps + 1):
        error = features @ weights - targets
        local = torch.cat([features.T @ error / len(targets), (error.pow(2).mean()).reshape(1)])
        dist.all_reduce(local)
        local /= world_size
        weights -= LEARNING_RATE * local[:-1]
        loss = float(local[-1])
        if rank == 0:
            save_checkpoint(checkpoint, step, weights, loss)
        report("step", step, loss)
        time.sleep(args.step_time)
    report("done", args.steps, loss)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
