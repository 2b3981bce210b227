"""Multi-host start: jax.distributed from explicit flags or the environment (TPU VMs, SLURM).

Each process then loads only its rows of the global batch (lmjax.data.batches with the process
index) and lmjax.parallel.make_batch assembles the global array; only process 0 writes logs,
wandb and summaries, while orbax checkpoints are written by all processes together.
"""

from __future__ import annotations

import os

from lmjax.errors import ConfigError

_STARTED = False


def detected_cluster() -> str | None:
    """'slurm' or 'tpu' when the environment describes a multi-process job, else None."""
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ:
        return "slurm"
    if os.environ.get("TPU_WORKER_HOSTNAMES") and "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""):
        return "tpu"
    return None


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
    """Start jax.distributed if asked (flags) or if a cluster is detected. Returns True if started."""
    global _STARTED
    if _STARTED:
        return True
    explicit = [v is not None for v in (coordinator, num_processes, process_id)]
    if any(explicit) and not all(explicit):
        raise ConfigError("multi-process training needs all of --coordinator, --num-processes and --process-id")
    import jax

    if all(explicit):
        if not 0 <= process_id < num_processes:
            raise ConfigError(f"--process-id {process_id} is outside [0, {num_processes})")
        # CPU devices need a collectives backend across processes; harmless on GPU/TPU. (Asking for
        # the backend here would initialize XLA before jax.distributed, which JAX forbids.)
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id)
    elif detected_cluster():
        jax.distributed.initialize()  # JAX reads SLURM / TPU metadata itself
    else:
        return False
    _STARTED = True
    return True
