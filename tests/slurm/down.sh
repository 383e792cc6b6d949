#!/usr/bin/env bash
# Stop the test Slurm that tests/slurm/up.sh DIR started: cancel its jobs, then stop each daemon by the PID
# recorded in DIR/pids, newest first (slurmd, slurmctld, slurmdbd, mariadbd, munged): TERM, up to 15 s, KILL.
# Nothing is found by name, so a system Slurm or another test's cluster is never touched.
# Exit status: 0 when every recorded daemon is gone.
set -uo pipefail

DIR=${1:?usage: down.sh DIR}
[[ -f $DIR/pids ]] || exit 0
export SLURM_CONF=$DIR/slurm.conf
# jobs first, while slurmctld still runs: their steps end with them
ctld=$(awk '$1 == "slurmctld" {print $2}' "$DIR/pids")
[[ -n $ctld ]] && kill -0 "$ctld" 2>/dev/null && timeout 10 scancel --user root >/dev/null 2>&1

rc=0
while read -r name pid; do
  kill -0 "$pid" 2>/dev/null || continue
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "down.sh: $name ($pid) ignored TERM for 15 s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null
    sleep 0.5
  fi
  if kill -0 "$pid" 2>/dev/null; then echo "down.sh: $name ($pid) still runs" >&2; rc=1; fi
done < <(tac "$DIR/pids")
exit $rc
