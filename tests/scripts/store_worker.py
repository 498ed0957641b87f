"""Two processes join a gloo process group whose store is rdzv.EtcdStore; argv: endpoint prefix rank api out."""

import json
import sys
from datetime import timedelta

import torch
import torch.distributed as dist

from rdzv.kv import connect
from rdzv.store import EtcdStore

endpoint, prefix, rank, api, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
store = EtcdStore(connect(endpoint, api), prefix, timeout=timedelta(seconds=60))
dist.init_process_group("gloo", store=store, rank=rank, world_size=2, timeout=timedelta(seconds=60))
tensor = torch.tensor([10.0 * (rank + 1)])
dist.all_reduce(tensor)
gathered = [None, None]
dist.all_gather_object(gathered, {"rank": rank})
dist.barrier()
with open(out, "w") as f:
    json.dump({"sum": tensor.item(), "gathered": gathered}, f)
dist.destroy_process_group()
