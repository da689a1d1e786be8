"""Rank, world size and the few collectives data-parallel SAP needs (torch.distributed).

The trainer holds one `DistContext`. `LOCAL` (world size 1) is the single-process default: every
method is a no-op and the trainer takes its original code path, bit for bit. Under torchrun,
`DistContext.from_env()` joins the process group (Gloo on CPU, NCCL on GPU) from the launcher's
environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT).

Only sums are reduced: each rank computes its *share* of a global quantity (its rows' loss
divided by the global token count), so the sum over ranks is the single-process value. Averaging
rank means instead would weight a rank with short rows like one with long rows.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from sap_core.batch import shard_bounds


class PeerLost(RuntimeError):
    """A collective failed: another rank is gone (killed, out of memory, its node lost).

    Told apart from this rank's own errors so the launcher can treat the run like a dead worker
    (resume from the last checkpoint) instead of failing the job.
    """


@contextlib.contextmanager
def _collective() -> Iterator[None]:
    try:
        yield
    except RuntimeError as exc:  # DistBackendError / DistNetworkError / gloo's RuntimeError
        raise PeerLost(f"a collective failed (another rank is gone?): {exc}") from exc


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the training group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        """True when there is more than one rank (collectives happen)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that reports progress, answers stop requests and writes files."""
        return self.rank == 0

    @classmethod
    def from_env(cls, device_type: str) -> DistContext:
        """Join the group torchrun set up (Gloo for "cpu", NCCL for "cuda"); LOCAL without it."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return LOCAL
        import torch.distributed as dist

        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if not dist.is_initialized():
            backend = "nccl" if device_type == "cuda" else "gloo"
            if device_type == "cuda":
                torch.cuda.set_device(local)
            dist.init_process_group(backend=backend, rank=rank, world_size=world)
        return cls(rank=rank, world_size=world, local_rank=local)

    def shard(self, n: int) -> tuple[int, int]:
        """This rank's rows [start, stop) of n: contiguous, sizes differing by at most one."""
        return shard_bounds(n, self.rank, self.world_size)

    def all_reduce_(self, tensors: Sequence[torch.Tensor]) -> None:
        """Sum each tensor over ranks, in place (one flat buffer per dtype: one collective)."""
        if not self.active or not tensors:
            return
        import torch.distributed as dist

        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for t in tensors:
            by_dtype.setdefault(t.dtype, []).append(t)
        for group in by_dtype.values():
            flat = torch.cat([t.detach().reshape(-1) for t in group])
            with _collective():
                dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            offset = 0
            with torch.no_grad():
                for t in group:
                    t.copy_(flat[offset : offset + t.numel()].view_as(t))
                    offset += t.numel()

    def sum_floats(self, values: Sequence[float], device: torch.device) -> list[float]:
        """Python floats summed over ranks (fp64, so metrics do not lose digits)."""
        if not self.active:
            return list(values)
        buf = torch.tensor(list(values), dtype=torch.float64, device=device)
        self.all_reduce_([buf])
        return [float(v) for v in buf.tolist()]

    def broadcast(self, value: Any) -> Any:
        """Rank 0's picklable value, on every rank (stop decisions, small state)."""
        if not self.active:
            return value
        import torch.distributed as dist

        box = [value]
        with _collective():
            dist.broadcast_object_list(box, src=0)
        return box[0]

    def broadcast_tensors_(self, tensors: Sequence[torch.Tensor]) -> None:
        """Overwrite every rank's tensors with rank 0's (so all ranks start from one init)."""
        if not self.active:
            return
        import torch.distributed as dist

        with torch.no_grad(), _collective():
            for t in tensors:
                dist.broadcast(t.data, src=0)

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            with _collective():
                dist.barrier()

    def close(self) -> None:
        """Leave the process group (end of a rank's run)."""
        if self.active:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


LOCAL = DistContext()
