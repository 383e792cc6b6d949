#!/usr/bin/env bash
# Bring up a real single-node Slurm (Debian's slurm-wlm + munge) in DIR, as root, for tests:
#   tests/slurm/up.sh DIR [--accounting]
# Everything lives under DIR: its own munge key and socket, slurm.conf (point clients at it with
# SLURM_CONF=DIR/slurm.conf, or `source DIR/env`), state, logs, and free TCP ports, so it touches neither
# /etc/slurm nor a system munged, and two test clusters never collide. --accounting adds MariaDB (its own
# datadir and port) and slurmdbd, so that `sacct` works (the plugin's default status check).
# Every daemon's PID is appended to DIR/pids as it starts; tests/slurm/down.sh DIR stops them by those PIDs.
# Exit status: 0 when the node is idle and (with --accounting) sacct answers; 1 otherwise, with the cause.
set -euo pipefail

DIR=${1:?usage: up.sh DIR [--accounting]}
ACCOUNTING=${2:-}
[[ $(id -u) == 0 ]] || { echo "up.sh: must run as root (the daemons run as root here)" >&2; exit 1; }
for tool in munged slurmctld slurmd sinfo; do
  command -v "$tool" >/dev/null || { echo "up.sh: $tool not found: apt-get install slurm-wlm munge" >&2; exit 1; }
done
if [[ $ACCOUNTING == --accounting ]]; then
  for tool in slurmdbd mariadbd mariadb-install-db sacctmgr; do
    command -v "$tool" >/dev/null || { echo "up.sh: $tool not found: apt-get install slurmdbd mariadb-server" >&2; exit 1; }
  done
fi

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
mkdir -p "$DIR"/{munge,state,spool,log}
chmod 755 "$DIR/munge"   # munged wants its socket folder reachable by all; the key stays 0400
: >"$DIR/pids"
HOST=$(hostname -s)
fail() { echo "up.sh: $*" >&2; for f in "$DIR"/log/*.log; do [[ -s $f ]] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }; done; exit 1; }

# Wait until FILE exists and holds a live PID; record it. A daemon that exits instead fails the bring-up.
record_pid() {  # NAME PIDFILE
  for _ in $(seq 100); do
    if [[ -s $2 ]] && kill -0 "$(cat "$2")" 2>/dev/null; then
      echo "$1 $(cat "$2")" >>"$DIR/pids"
      return 0
    fi
    sleep 0.1
  done
  fail "$1 did not start (no live PID in $2)"
}

# Free TCP ports on localhost, one per daemon (the kernel picks them).
read -r CTLD_PORT SLURMD_PORT DBD_PORT DB_PORT < <(python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)

# --- munge: own key, own socket --------------------------------------------------------------------------
dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$DIR/munge/munge.key"
SOCKET="$DIR/munge/munge.socket"
munged --force --key-file "$DIR/munge/munge.key" --socket "$SOCKET" --pid-file "$DIR/munge/munged.pid" \
  --log-file "$DIR/log/munged.log" --seed-file "$DIR/munge/munged.seed"
record_pid munged "$DIR/munge/munged.pid"

# --- memory for the node: what is free now, less a margin (slurmd drains a node that declares more) ------
MEM=$(awk '/MemAvailable/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)
CPUS=$(nproc)

ACCT_LINES="AccountingStorageType=accounting_storage/none"
if [[ $ACCOUNTING == --accounting ]]; then
  # --- MariaDB: own datadir, own port, bound to localhost ---------------------------------------------
  mkdir -p "$DIR/mysql"
  mariadb-install-db --no-defaults --datadir="$DIR/mysql" --user=root --auth-root-authentication-method=normal \
    --skip-test-db >"$DIR/log/mariadb-install.log" 2>&1 || fail "mariadb-install-db failed"
  mariadbd --no-defaults --datadir="$DIR/mysql" --user=root --port="$DB_PORT" --bind-address=127.0.0.1 \
    --socket="$DIR/mysql/mysqld.sock" --pid-file="$DIR/mysql/mysqld.pid" --log-error="$DIR/log/mariadb.log" \
    >/dev/null 2>&1 &
  record_pid mariadbd "$DIR/mysql/mysqld.pid"
  for _ in $(seq 100); do
    mariadb --no-defaults -S "$DIR/mysql/mysqld.sock" -u root -e 'select 1' >/dev/null 2>&1 && break
    sleep 0.2
  done
  PASS=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
  mariadb --no-defaults -S "$DIR/mysql/mysqld.sock" -u root -e "
    CREATE DATABASE slurm_acct_db;
    CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$PASS';
    CREATE USER 'slurm'@'localhost' IDENTIFIED BY '$PASS';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';" || fail "could not create the accounting database"

  # --- slurmdbd (slurmdbd.conf sits next to SLURM_CONF, where Slurm looks for it; it must be mode 600) ---
  cat >"$DIR/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$PASS
StorageLoc=slurm_acct_db
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/slurmdbd.pid
EOF
  chmod 600 "$DIR/slurmdbd.conf"
  ACCT_LINES="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$SOCKET"   # the munge socket for slurmdbd connections (else the system one, /run/munge)
fi

# --- slurm.conf (as in SLURM.md, with the paths, ports and munge socket of DIR) ----------------------------
cat >"$DIR/slurm.conf" <<EOF
ClusterName=test
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$SOCKET
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
$ACCT_LINES
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=86400
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
# snakemake-executor-plugin-slurm-jobstep (0.6.1) drops every SLURM_* variable but the job's identity before
# the job's own `srun`, SLURM_CONF included, so that srun would look for /etc/slurm/slurm.conf. A cluster
# configured there (or configless) never notices; this one lives in DIR, so its srun is a wrapper that sets
# SLURM_CONF again, first on PATH (PATH reaches the job through sbatch --export=ALL).
mkdir -p "$DIR/bin"
cat >"$DIR/bin/srun" <<EOF
#!/bin/sh
SLURM_CONF=$DIR/slurm.conf exec $(command -v srun) "\$@"
EOF
chmod 755 "$DIR/bin/srun"
cat >"$DIR/env" <<EOF
export SLURM_CONF=$DIR/slurm.conf
export PATH=$DIR/bin:\$PATH
EOF
export SLURM_CONF=$DIR/slurm.conf

if [[ $ACCOUNTING == --accounting ]]; then
  slurmdbd
  record_pid slurmdbd "$DIR/slurmdbd.pid"
  for _ in $(seq 50); do timeout 5 sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.2; done
  sacctmgr -i add cluster test >/dev/null || fail "sacctmgr add cluster failed"
  sacctmgr -i add account acct Description=test Organization=test >/dev/null || fail "sacctmgr add account failed"
  sacctmgr -i add user root Account=acct DefaultAccount=acct >/dev/null || fail "sacctmgr add user failed"
fi

slurmctld -f "$SLURM_CONF"
record_pid slurmctld "$DIR/slurmctld.pid"
slurmd -f "$SLURM_CONF"
record_pid slurmd "$DIR/slurmd.pid"

for _ in $(seq 150); do
  state=$(sinfo -h -N -o %t 2>/dev/null || true)
  [[ $state == idle ]] && break
  sleep 0.2
done
[[ $state == idle ]] || fail "node not idle after 30 s (sinfo says '${state:-nothing}')"
if [[ $ACCOUNTING == --accounting ]]; then
  sacct -n -X >/dev/null 2>&1 || fail "sacct does not answer"
fi
echo "up.sh: Slurm up in $DIR (node $HOST: $CPUS CPUs, $MEM MB; accounting: ${ACCOUNTING:-none})"
