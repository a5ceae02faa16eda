#!/usr/bin/env bash
# Launch `detlight fit` with torchrun (mmcv: tools/dist_train.sh, --launcher pytorch), on one or several nodes.
#
# One node, 8 GPUs:
#   NPROC_PER_NODE=8 configs/launch/torchrun.sh --config configs/quickstart.yaml
# Two nodes, 8 GPUs each: run on every node, with the address of node 0 and a free port on it:
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 MASTER_PORT=29500 NPROC_PER_NODE=8 configs/launch/torchrun.sh --config ...
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 MASTER_PORT=29500 NPROC_PER_NODE=8 configs/launch/torchrun.sh --config ...
# Arguments after the script name go to `detlight fit` and come last, so they override configs/trainer/ddp.yaml
# (e.g. --trainer.strategy.init_args.timeout_s=600). trainer.devices / trainer.num_nodes are set from the torchrun
# flags; detlight refuses to start if they are overridden to something else.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NNODES="${NNODES:-1}"
NODE_RANK="${NODE_RANK:-0}"
if [[ "$NNODES" -gt 1 && ( -z "${MASTER_ADDR:-}" || -z "${MASTER_PORT:-}" ) ]]; then
  # Without them every node would wait for a rendezvous of its own until the timeout.
  echo "torchrun.sh: NNODES=$NNODES needs MASTER_ADDR (node 0's address) and MASTER_PORT (a free port on node 0)," \
       "the same on every node" >&2
  exit 2
fi
MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
MASTER_PORT="${MASTER_PORT:-29500}"
if [[ -z "${NPROC_PER_NODE:-}" ]]; then
  NPROC_PER_NODE="$(python -c 'import torch; print(max(torch.cuda.device_count(), 1))')"
fi
# One CPU thread per process unless the caller chose otherwise (torchrun would set 1 and warn).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

exec torchrun \
  --nnodes="$NNODES" --node_rank="$NODE_RANK" --nproc_per_node="$NPROC_PER_NODE" \
  --master_addr="$MASTER_ADDR" --master_port="$MASTER_PORT" \
  -m detlight.cli fit \
  --config "$HERE/../trainer/ddp.yaml" \
  --trainer.devices="$NPROC_PER_NODE" --trainer.num_nodes="$NNODES" \
  "$@"
