"""Multi-process data parallelism through ``torch.distributed`` and ``DistributedDataParallel``.

Nothing here averages gradients by hand: :meth:`DistributedContext.wrap` returns a
``torch.nn.parallel.DistributedDataParallel`` module, whose backward pass all-reduces (averages)
the gradients across processes.  The trainers in this package accept such wrapped modules
unchanged; each process feeds its own shard of the data (:meth:`DistributedContext.loader`).

Two ways to start the processes:

* ``torchrun --nproc_per_node=N script.py`` (one node or several): inside the script call
  :func:`init_from_env` to join the process group created from torchrun's environment;
* :func:`launch` ``(fn, world_size)`` spawns ``world_size`` local processes with
  ``torch.multiprocessing.spawn`` and calls ``fn(ctx, *args)`` in each (gloo on CPU, NCCL when every
  process has its own GPU).

With :class:`trainers.WGANGPTrainer`, wrap every critic and pass as ``sampler`` a wrapped module
whose ``forward(real_batch, i)`` is the sampler and which holds the trainable mechanisms (frozen
parameters must have ``requires_grad=False``, or pass ``find_unused_parameters=True``): the
critic losses (with the gradient penalty's double backward) and the generator loss are then
averaged across processes.  :class:`trainers.ClassifierTrainer` takes the wrapped model.

Conventions: only the main process (rank 0) logs and writes checkpoints (``ctx.is_main``); all
processes must run the same number of steps.  A checkpoint holds rank 0's RNG state, so a resumed
multi-process run is exactly reproducible only if the per-rank randomness is derived from the
seed and the step (as :class:`trainers.core.TensorDictLoader` does for the batch order).
"""

from __future__ import annotations

import os
import pickle
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor, nn

from .core import TensorDictLoader, resolve_device

__all__ = ["DistributedContext", "free_port", "init_from_env", "init_process_group", "launch"]


@dataclass
class DistributedContext:
    """Rank, world size and device of this process, plus helpers."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, module: nn.Module, **ddp_kwargs: Any) -> nn.Module:
        """Move ``module`` to this process's device and wrap it in ``DistributedDataParallel``
        (parameters are broadcast from rank 0 at construction, gradients averaged in backward).
        With ``world_size == 1`` the module is returned unwrapped."""
        module = module.to(self.device)
        if self.world_size == 1:
            return module
        if self.device.type == "cuda":
            ddp_kwargs.setdefault("device_ids", [self.device.index])
            ddp_kwargs.setdefault("output_device", self.device.index)
        return nn.parallel.DistributedDataParallel(module, **ddp_kwargs)

    def loader(self, tensors: Mapping[str, Tensor], batch_size: int, **kwargs: Any
               ) -> TensorDictLoader:
        """This rank's shard of an in-memory dataset (same permutation on every rank, disjoint
        slices); ``batch_size`` is per process."""
        return TensorDictLoader(tensors, batch_size, rank=self.rank, world_size=self.world_size,
                                **kwargs)

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def mean(self, value: float | Tensor) -> float:
        """Average of a scalar metric over processes (for logging/evaluation)."""
        t = torch.as_tensor(float(value), dtype=torch.float64,
                            device=self.device if self.backend == "nccl" else "cpu")
        if self.world_size > 1:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return float(t) / self.world_size

    def destroy(self) -> None:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def free_port() -> int:
    """A TCP port that is free right now on localhost (for a local rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _default_backend(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" and dist.is_nccl_available() else "gloo"


def init_process_group(rank: int, world_size: int, *, backend: str | None = None,
                       device: str | torch.device | None = None, local_rank: int | None = None,
                       master_addr: str | None = None, master_port: int | None = None
                       ) -> DistributedContext:
    """Join (or create) the default process group and return this process's context.

    ``device=None``: ``cuda:<local_rank>`` when CUDA is available, else CPU.  ``backend=None``:
    NCCL on CUDA, gloo otherwise.
    """
    local_rank = rank if local_rank is None else local_rank
    if device is None:
        dev = torch.device(f"cuda:{local_rank % torch.cuda.device_count()}") \
            if torch.cuda.is_available() else torch.device("cpu")
    else:
        dev = resolve_device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device(f"cuda:{local_rank % torch.cuda.device_count()}")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = backend or _default_backend(dev)
    if world_size > 1 and not dist.is_initialized():
        if master_addr is not None:
            os.environ["MASTER_ADDR"] = master_addr
        if master_port is not None:
            os.environ["MASTER_PORT"] = str(master_port)
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        if "MASTER_PORT" not in os.environ:
            raise RuntimeError("init_process_group: MASTER_PORT is not set; pass master_port or "
                               "start the processes with torchrun")
        dist.init_process_group(backend, rank=rank, world_size=world_size)
    return DistributedContext(rank, world_size, local_rank, backend, dev)


def init_from_env(*, backend: str | None = None, device: str | torch.device | None = None
                  ) -> DistributedContext:
    """Context from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``, ``MASTER_PORT``); a single process when they are absent."""
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", rank))
    return init_process_group(rank, world, backend=backend, device=device, local_rank=local)


def _worker(rank: int, fn: Callable, world_size: int, backend: str | None, device: Any,
            port: int, args: bytes, queue) -> None:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    ctx = init_process_group(rank, world_size, backend=backend, device=device,
                             master_addr="127.0.0.1", master_port=port)
    try:
        result = fn(ctx, *pickle.loads(args))
        # plain pickle copies tensors by value (the queue's pickler would share them through file
        # descriptors that vanish when this process exits)
        queue.put((rank, pickle.dumps(result)))
    finally:
        ctx.destroy()


def launch(fn: Callable[..., Any], world_size: int, *args: Any, backend: str | None = None,
           device: str | torch.device | None = None, port: int | None = None) -> list[Any]:
    """Run ``fn(ctx, *args)`` in ``world_size`` spawned local processes; return their results
    ordered by rank.

    ``fn`` must be importable (defined at module level).  ``args`` are pickled by value, so every
    process gets its own copy of the tensors and modules in them (the spawn pickler would
    otherwise put them in shared memory, and all processes would update the same parameters).
    Results travel back through a queue, so return small picklable values (CPU tensors, numbers,
    dicts).  An exception in any process
    is re-raised here (``torch.multiprocessing.ProcessRaisedException``).
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    port = port or free_port()
    queue = mp.get_context("spawn").SimpleQueue()
    pc = mp.spawn(_worker, args=(fn, world_size, backend, device, port, pickle.dumps(args), queue),
                  nprocs=world_size, join=False)
    results: dict[int, Any] = {}
    while True:
        while not queue.empty():
            r, v = queue.get()
            results[r] = pickle.loads(v)
        if pc.join(timeout=0.05):
            break
    while not queue.empty():
        r, v = queue.get()
        results[r] = pickle.loads(v)
    missing = [r for r in range(world_size) if r not in results]
    if missing:
        raise RuntimeError(f"launch: processes {missing} exited without a result")
    return [results[r] for r in range(world_size)]
