"""Starting `jax.distributed`: explicit coordinator flags, or JAX's cluster auto-detection.

Must run before anything touches a JAX device. One process needs nothing (no flags, no cluster).
"""

from __future__ import annotations

import os

import jax

from microgpt_train.config import RunConfigError

__all__ = ["initialize"]


def initialize(
    coordinator: str | None,
    num_processes: int | None,
    process_id: int | None,
    *,
    heartbeat_timeout_s: int = 100,
    initialization_timeout_s: int = 300,
) -> None:
    """Joins the process group described by the flags, or by the cluster (SLURM, TPU, MPI...).

    With `coordinator` all three flags are required; without it and with no cluster detected, the
    run is a single process. The coordinator binds only the address it is given (not every interface).

    Raises:
      RunConfigError: flags that do not go together, or out of range (the message names them).
    """
    given = [coordinator is not None, num_processes is not None, process_id is not None]
    if any(given) and not all(given):
        raise RunConfigError("--coordinator, --num-processes and --process-id go together: give all three")
    if coordinator is not None:
        if ":" not in coordinator:
            raise RunConfigError(f"--coordinator must be HOST:PORT, got {coordinator!r}")
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise RunConfigError(
                f"--process-id must be in [0, {num_processes}) and --num-processes >= 1, "
                f"got {process_id} of {num_processes}"
            )
        if num_processes == 1:
            return
        jax.distributed.initialize(
            coordinator,
            num_processes=num_processes,
            process_id=process_id,
            coordinator_bind_address=coordinator if process_id == 0 else None,
            heartbeat_timeout_seconds=heartbeat_timeout_s,
            initialization_timeout=initialization_timeout_s,
        )
        return
    if _cluster_detected():
        jax.distributed.initialize(heartbeat_timeout_seconds=heartbeat_timeout_s)


def _cluster_detected() -> bool:
    """True under a scheduler JAX can read the process group from (SLURM with >1 task, Open MPI, TPU pods)."""
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ:
        return True
    if int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        return True
    return "TPU_WORKER_HOSTNAMES" in os.environ or "MEGASCALE_COORDINATOR_ADDRESS" in os.environ
