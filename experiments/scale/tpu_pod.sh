#!/usr/bin/env bash
# Multi-host smoke test on a Cloud TPU pod slice (e.g. v5p-32: 4 hosts x 4 chips). Every host
# runs the same command; jax.distributed reads the slice's topology from the TPU VM metadata
# (flame_jax.train.initialize_distributed -> JAX's TPU detection, since TPU_WORKER_HOSTNAMES
# names several workers; FLAME_JAX_DISTRIBUTED=auto forces JAX's detection if it does not).
#
#   experiments/scale/tpu_pod.sh TPU_NAME ZONE OUT [MESH]
#
# OUT must be a folder shared by the hosts (an NFS / Filestore mount). The repository and its
# virtual environment must already be on every worker, e.g.
#   gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all \
#     --command="git clone <repo> flame_jax && cd flame_jax && python -m venv .venv && \
#                .venv/bin/pip install -e . 'jax[tpu]'"
set -euo pipefail
tpu=${1:?usage: tpu_pod.sh TPU_NAME ZONE OUT [MESH]}
zone=${2:?usage: tpu_pod.sh TPU_NAME ZONE OUT [MESH]}
out=${3:?usage: tpu_pod.sh TPU_NAME ZONE OUT [MESH]}
mesh=${4:-data=-1}
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all \
  --command="cd flame_jax && FLAME_JAX_DISTRIBUTED=auto .venv/bin/python \
experiments/scale/multihost_check.py '$out' --mesh '$mesh'"
