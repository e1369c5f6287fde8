"""Multi-host: coordinates from the environment, per-host shards, and a real two-process run.

The two-process test starts two Python processes (``experiments/scale/multihost_check.py``) on
this machine that join one ``jax.distributed`` run (coordinator on 127.0.0.1, a free port; CPU
collectives over gloo), each with 2 CPU devices, and train a tiny LoRA decoder for 3 steps on a
global ``fsdp=2, tp=2`` mesh (parameters split across the processes, each process loading only
its own batch rows, checkpoints written by both). Both must log the same losses and end with the
same parameter checksum, equal to a single-process run on 4 devices (rtol 1e-5: float32
reductions in another order).
"""

import json
import os
import runpy
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from flame_jax.train import MeshConfig, make_mesh
from flame_jax.train._distributed import (
    DistributedConfig,
    host_shard,
    initialize_distributed,
    process_rows,
    resolve_distributed,
)

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "experiments" / "scale" / "multihost_check.py"


def test_resolve_from_the_environment():
    env = {
        "FLAME_JAX_COORDINATOR": "h:1",
        "FLAME_JAX_NUM_PROCESSES": "4",
        "FLAME_JAX_PROCESS_ID": "3",
    }
    assert resolve_distributed(env) == DistributedConfig(
        source="explicit", coordinator="h:1", num_processes=4, process_id=3
    )
    # Arguments override the variables; one process is no distributed run at all.
    assert resolve_distributed(env, process_id=0).process_id == 0
    assert (
        resolve_distributed({**env, "FLAME_JAX_NUM_PROCESSES": "1", "FLAME_JAX_PROCESS_ID": "0"})
        is None
    )
    with pytest.raises(ValueError, match=r"FLAME_JAX_PROCESS_ID is not: set all three"):
        resolve_distributed({k: v for k, v in env.items() if k != "FLAME_JAX_PROCESS_ID"})
    with pytest.raises(ValueError, match=r"FLAME_JAX_NUM_PROCESSES='two' is not an integer"):
        resolve_distributed({**env, "FLAME_JAX_NUM_PROCESSES": "two"})
    with pytest.raises(ValueError, match=r"process_id must be in \[0, 4\), got 4"):
        resolve_distributed({**env, "FLAME_JAX_PROCESS_ID": "4"})
    with pytest.raises(ValueError, match=r"'host:port'"):
        resolve_distributed({**env, "FLAME_JAX_COORDINATOR": "nohost"})
    assert resolve_distributed({"SLURM_JOB_ID": "1", "SLURM_NTASKS": "8"}).source == "slurm"
    assert resolve_distributed({"SLURM_JOB_ID": "1", "SLURM_NTASKS": "1"}) is None
    assert resolve_distributed({"TPU_WORKER_HOSTNAMES": "a,b,c,d"}).source == "tpu"
    assert resolve_distributed({"TPU_WORKER_HOSTNAMES": "a"}) is None
    assert resolve_distributed({"FLAME_JAX_DISTRIBUTED": "auto"}).source == "auto"
    assert resolve_distributed({"FLAME_JAX_DISTRIBUTED": "off", "SLURM_JOB_ID": "1"}) is None
    with pytest.raises(ValueError, match="FLAME_JAX_DISTRIBUTED"):
        resolve_distributed({"FLAME_JAX_DISTRIBUTED": "yes"})
    assert initialize_distributed(environ={}) is None  # one process: a no-op


@pytest.mark.parametrize(("n", "count"), [(0, 3), (5, 2), (7, 3), (8, 8), (3, 5)])
def test_host_shards_are_disjoint_and_cover_everything(n, count):
    shares = [list(host_shard(n, process_index=i, process_count=count)) for i in range(count)]
    assert [i for s in shares for i in s] == list(range(n))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    with pytest.raises(ValueError, match="not in"):
        host_shard(n, process_index=count, process_count=count)


def test_process_rows_single_process_is_everything():
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tp=2))
    np.testing.assert_array_equal(process_rows(8, mesh), np.arange(8))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two JAX processes joined by jax.distributed, plus a reference run
def test_two_processes_train_together_and_match_one_process(tmp_path):
    port = _free_port()
    out = tmp_path / "run"
    out.mkdir()
    procs = []
    logs = []
    try:
        for i in range(2):
            env = {
                **os.environ,
                "JAX_PLATFORMS": "cpu",
                "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
                "FLAME_JAX_COORDINATOR": f"127.0.0.1:{port}",
                "FLAME_JAX_NUM_PROCESSES": "2",
                "FLAME_JAX_PROCESS_ID": str(i),
            }
            log = (tmp_path / f"proc{i}.log").open("w")
            logs.append(log)
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(SCRIPT), str(out)],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        for p in procs:
            p.wait(timeout=300)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
    for i, p in enumerate(procs):
        tail = (tmp_path / f"proc{i}.log").read_text()[-3000:]
        assert p.returncode == 0, f"process {i} failed:\n{tail}"
    check = runpy.run_path(str(SCRIPT))
    results = [json.loads((out / f"result.{i}.json").read_text()) for i in range(2)]
    a, b = results
    assert (a["process"], b["process"]) == (0, 1)
    assert a["processes"] == 2 and a["devices"] == 4 and a["local_devices"] == 2
    # Each process loaded its own rows; together, the whole batch.
    assert sorted(a["rows"] + b["rows"]) == list(range(a["global_batch"]))
    assert not set(a["rows"]) & set(b["rows"])
    assert a["q_spec"] == "PartitionSpec('fsdp', 'tp')" or a["q_spec"] == "P('fsdp', 'tp')"
    assert a["loss"] == b["loss"] and a["checksum"] == b["checksum"]
    assert len(a["loss"]) == check["STEPS"]
    assert (out / "checkpoints" / str(check["STEPS"])).is_dir()
    single = check["train"](tmp_path / "single", jax.devices()[:4])
    assert single["rows"] == list(range(a["global_batch"]))
    np.testing.assert_allclose(a["loss"], single["loss"], rtol=1e-5)
    np.testing.assert_allclose(a["checksum"], single["checksum"], rtol=1e-5)
    assert a["loss"][-1] < a["loss"][0]  # it trained
