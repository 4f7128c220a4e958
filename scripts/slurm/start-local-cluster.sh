#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine (munged, slurmctld, slurmd) with the config of
# slurm.conf.in, its state and logs in $METALAB_SLURM_DIR (default /tmp/metalab-slurm). A daemon
# that is already running is left alone, so running this twice is harmless. Needs root and the
# Debian packages slurm-wlm and munge. Afterwards: export SLURM_CONF=<dir>/slurm.conf
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${METALAB_SLURM_DIR:-/tmp/metalab-slurm}"
host="$(hostname -s)"
export SLURM_CONF="$dir/slurm.conf"
export PATH="$PATH:/usr/sbin:/sbin"

for tool in munge munged slurmctld slurmd scontrol sinfo; do
  if ! command -v "$tool" >/dev/null; then
    echo "$0: $tool not found; install it: apt-get install slurm-wlm munge" >&2
    exit 1
  fi
done

alive() {  # the daemon $1 runs with the pid in its pid file
  local pid
  pid="$(cat "$dir/$1.pid" 2>/dev/null || true)"
  [[ -n "$pid" && "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$1" ]]
}

munge_answers() { munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munged() {
  if munge_answers; then return; fi  # the system's munged, or one started earlier
  install -d -o munge -g munge -m 0755 /run/munge
  runuser -u munge -- munged
  for _ in $(seq 50); do
    if munge_answers; then break; fi
    sleep 0.1
  done
  cp /run/munge/munged.pid "$dir/munged.pid"  # ours: stop-local-cluster.sh may stop it
}

write_config() {
  local mem_mb cpus
  mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)  # slurmd checks it
  mkdir -p "$dir/ctld" "$dir/slurmd"
  # nproc counts OMP_NUM_THREADS=1 (how the tests run on a small machine) as one CPU: a node of
  # one CPU leaves the two-task DDP jobs pending for ever (PartitionConfig)
  cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
  sed -e "s|@HOST@|$host|g" -e "s|@DIR@|$dir|g" -e "s|@CPUS@|$cpus|g" \
      -e "s|@MEM_MB@|$mem_mb|g" -e "s|@CTLD_PORT@|${METALAB_SLURMCTLD_PORT:-6817}|g" \
      -e "s|@SLURMD_PORT@|${METALAB_SLURMD_PORT:-6818}|g" "$here/slurm.conf.in" >"$SLURM_CONF"
}

wait_for_node() {
  for _ in $(seq 300); do
    case "$(sinfo -h -n "$host" -o %t 2>/dev/null)" in
      idle* | mix* | alloc*) return ;;
      down* | drain*) scontrol update nodename="$host" state=resume 2>/dev/null || true ;;
    esac
    sleep 0.1
  done
  echo "$0: node $host did not come up; see $dir/slurmctld.log and $dir/slurmd.log" >&2
  exit 1
}

mkdir -p "$dir"
start_munged
if ! alive slurmctld; then
  write_config
  slurmctld
fi
alive slurmd || slurmd
wait_for_node
echo "SLURM_CONF=$SLURM_CONF"
