#!/usr/bin/env bash
# Stop what start-local-cluster.sh started: its jobs, slurmd, slurmctld, and munged if it
# started munged. Uses the same $METALAB_SLURM_DIR (default /tmp/metalab-slurm).
set -euo pipefail
dir="${METALAB_SLURM_DIR:-/tmp/metalab-slurm}"
export SLURM_CONF="$dir/slurm.conf"

pids=()
for name in slurmd slurmctld munged; do  # munged.pid exists only if start-local-cluster.sh began it
  pid="$(cat "$dir/$name.pid" 2>/dev/null || true)"
  if [[ -n "$pid" && "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name" ]]; then
    pids+=("$pid")
  fi
  rm -f "$dir/$name.pid"
done
if [[ -f "$dir/slurm.conf" ]] && scontrol ping >/dev/null 2>&1; then
  squeue -h -o %i | xargs -r scancel  # this private cluster's jobs only
fi
for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
for pid in "${pids[@]}"; do
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
done
