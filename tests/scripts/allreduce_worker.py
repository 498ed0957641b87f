"""A torchrun worker: gloo all_reduce of (rank + 1); writes what it saw to $RESULT_DIR/<rank>.json."""

import json
import os

import torch
import torch.distributed as dist

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
tensor = torch.tensor([float(rank + 1)])
dist.all_reduce(tensor)
with open(os.path.join(os.environ["RESULT_DIR"], f"{rank}.json"), "w") as out:
    json.dump({"rank": rank, "world_size": world, "sum": tensor.item(),
               "restart_count": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))}, out)
dist.destroy_process_group()
