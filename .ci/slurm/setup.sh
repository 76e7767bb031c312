#!/usr/bin/env bash
# setup.sh -- bring up a real one-node Slurm 22.05 cluster on this machine, without systemd:
#   munged  ->  [mariadbd -> slurmdbd]  ->  slurmctld  ->  slurmd
# All traffic is on loopback (127.0.0.1). Runs as root (Debian 12, packages from Debian's mirror).
#
# Idempotent: a second run while the cluster is up checks it and changes nothing (a changed
# config restarts only the Slurm daemons this script started). Stop it with teardown.sh.
#
# Knobs (environment variables, all optional):
#   SLURM_LOCAL_ACCOUNTING=1      1: also run MariaDB + slurmdbd so that `sacct` works (submitit
#                                 uses sacct to see jobs that died without writing a result)
#   SLURM_LOCAL_GPUS=8            fake GPUs the node advertises (gres gpu, backed by /dev/null); 0: none
#   SLURM_LOCAL_GPU_TYPE=         e.g. a100: advertise gpu:a100:N (plain gpu:N requests still match)
#   SLURM_LOCAL_FEATURES=         comma-separated node features, for jobs that pass --constraint
#   SLURM_LOCAL_CPUS=$(nproc)     CPUs the node advertises (may exceed the real count)
#   SLURM_LOCAL_MEM_MB=           memory the node advertises; default MemTotal - 1024 MB
#   SLURM_LOCAL_PARTITIONS=debug  comma-separated partition names; the first is the default
#   SLURM_LOCAL_CLUSTER=localcluster
#   SLURM_LOCAL_STATE_DIR=/var/lib/slurm_local   spool, job state, database, logs
#   SLURM_LOCAL_RUN_DIR=/run/slurm_local         pid files, sockets, fake GPU device links
#   SLURM_LOCAL_CTLD_PORT=6817 SLURM_LOCAL_SLURMD_PORT=6818 SLURM_LOCAL_DBD_PORT=6819
#   SLURM_LOCAL_DB_PORT=6830      MariaDB, bound to 127.0.0.1 only
#   SLURM_LOCAL_INSTALL=1         apt-get install missing packages
#   SLURM_LOCAL_FORCE_CONF=0      1: replace an /etc/slurm/slurm.conf this script did not write
#                                 (it is kept as slurm.conf.pre-slurm_local)
#   SLURM_LOCAL_SMOKE=1           finish with `srun hostname`
#   SLURM_LOCAL_TIMEOUT=90        seconds to wait for each daemon
#   SLURM_LOCAL_MAX_ARRAY_SIZE=1001  Slurm's MaxArraySize (illada splits bigger sweeps into several arrays)
#
# Copied from ../shared/slurm (the tested recipe, see its README.md for timings and pitfalls); illada's
# change: the MaxArraySize knob. tests/slurm/conftest.py runs it when the Slurm tests start.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
T0=$SECONDS

: "${SLURM_LOCAL_ACCOUNTING:=1}"
: "${SLURM_LOCAL_GPUS:=8}"
: "${SLURM_LOCAL_GPU_TYPE:=}"
: "${SLURM_LOCAL_FEATURES:=}"
: "${SLURM_LOCAL_CPUS:=$(nproc)}"
: "${SLURM_LOCAL_MEM_MB:=$(( $(awk '/^MemTotal:/{print int($2/1024)}' /proc/meminfo) - 1024 ))}"
: "${SLURM_LOCAL_PARTITIONS:=debug}"
: "${SLURM_LOCAL_CLUSTER:=localcluster}"
: "${SLURM_LOCAL_STATE_DIR:=/var/lib/slurm_local}"
: "${SLURM_LOCAL_RUN_DIR:=/run/slurm_local}"
: "${SLURM_LOCAL_CTLD_PORT:=6817}"
: "${SLURM_LOCAL_SLURMD_PORT:=6818}"
: "${SLURM_LOCAL_DBD_PORT:=6819}"
: "${SLURM_LOCAL_DB_PORT:=6830}"
: "${SLURM_LOCAL_INSTALL:=1}"
: "${SLURM_LOCAL_FORCE_CONF:=0}"
: "${SLURM_LOCAL_SMOKE:=1}"
: "${SLURM_LOCAL_TIMEOUT:=90}"
: "${SLURM_LOCAL_MAX_ARRAY_SIZE:=1001}"

STATE=$SLURM_LOCAL_STATE_DIR
RUN=$SLURM_LOCAL_RUN_DIR
LOG=$STATE/log
CONF_DIR=/etc/slurm            # where Debian's Slurm looks by default (no SLURM_CONF needed)
MARKER="managed-by: slurm_local/setup.sh"
HOST="$(hostname -s)"

log()  { printf '[slurm_local %3ds] %s\n' $((SECONDS - T0)) "$*"; }
die()  { printf '[slurm_local] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root"
[ -n "$HOST" ] || die "empty hostname"

# ---------------------------------------------------------------- helpers
alive_pid() {  # NAME PID: PID is a live (non-zombie) process whose comm is NAME
    local name=$1 pid=$2 st
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || return 1
    st=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
    [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}
pid_of() { cat "$1" 2>/dev/null | tr -dc 0-9; }   # daemons delete their own pid file on exit
alive() { alive_pid "$1" "$(pid_of "$2")"; }     # NAME PIDFILE

# wait_for SECONDS DESCRIPTION CMD...: poll CMD every 0.25 s
wait_for() {
    local limit=$1 what=$2; shift 2
    local end=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $end ] || return 1
        sleep 0.25
    done
    log "$what: ready"
}

port_busy() { [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }
check_port_free() {  # PORT WHAT
    if port_busy "$1"; then
        ss -Hltnp "sport = :$1" >&2 || true
        die "port $1 ($2) is already in use by a process this script did not start"
    fi
}

# render TEMPLATE KEY VALUE ...: replace @KEY@ by VALUE
render() {
    local t k v
    t="$(cat "$1")"; shift
    while [ $# -gt 0 ]; do k=$1 v=$2; shift 2; t="${t//"@$k@"/"$v"}"; done
    printf '%s\n' "$t"
}

# install_file CONTENT DEST MODE: write only when different; echo "changed" when it wrote
install_file() {
    local content=$1 dest=$2 mode=$3
    if [ -f "$dest" ] && [ "$(cat "$dest")" = "$content" ]; then
        chmod "$mode" "$dest"; return 0
    fi
    if [ -f "$dest" ] && ! grep -qF "$MARKER" "$dest"; then
        [ "$SLURM_LOCAL_FORCE_CONF" = 1 ] || die "$dest exists and was not written by this script (set SLURM_LOCAL_FORCE_CONF=1 to replace it)"
        cp -p "$dest" "$dest.pre-slurm_local"
    fi
    printf '%s\n' "$content" >"$dest.tmp.$$"
    chmod "$mode" "$dest.tmp.$$"
    mv -f "$dest.tmp.$$" "$dest"
    echo changed
}

# daemon CMD... / daemon_bg CMD...: run CMD (in the background) with every descriptor it would inherit above 2
# closed. The daemons outlive this script, and one that kept the caller's open files would hold them for good
# (`flock LOCK setup.sh` would never release LOCK). Only the subshell that becomes CMD closes them (bash reads
# this script from one); daemon_bg forks that subshell itself, so no waiting shell keeps them either.
close_inherited_fds() {
    local fd
    for fd in /proc/"$BASHPID"/fd/*; do
        fd=${fd##*/}
        [ "$fd" -gt 2 ] 2>/dev/null && eval "exec $fd>&-"
    done
    return 0
}
daemon() { ( close_inherited_fds; exec "$@" ); }
daemon_bg() { ( close_inherited_fds; exec "$@" ) & }

# stop_ours NAME PIDFILE: stop a daemon that this script started
stop_ours() {
    local name=$1 pidfile=$2 pid
    pid=$(pid_of "$pidfile")
    alive_pid "$name" "$pid" || { rm -f "$pidfile"; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 120); do alive_pid "$name" "$pid" || break; sleep 0.25; done
    if alive_pid "$name" "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    rm -f "$pidfile"
}

# ---------------------------------------------------------------- 1. packages
PKGS=(munge slurmctld slurmd slurm-client)
[ "$SLURM_LOCAL_ACCOUNTING" = 1 ] && PKGS+=(slurmdbd mariadb-server)
MISSING=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || MISSING+=("$p")
done
if [ ${#MISSING[@]} -gt 0 ]; then
    [ "$SLURM_LOCAL_INSTALL" = 1 ] || die "missing packages: ${MISSING[*]}"
    log "installing ${MISSING[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Keep the packages' maintainer scripts from starting daemons through /etc/init.d.
    POLICY_MADE=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
        POLICY_MADE=1
        trap '[ "$POLICY_MADE" = 1 ] && rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    APT_LOG=/tmp/slurm_local_apt.$$.log
    apt-get -q -o DPkg::Lock::Timeout=300 update >"$APT_LOG" 2>&1 \
        || { tail -30 "$APT_LOG" >&2; die "apt-get update failed"; }
    apt-get -y -q -o DPkg::Lock::Timeout=300 install --no-install-recommends "${MISSING[@]}" >>"$APT_LOG" 2>&1 \
        || { tail -30 "$APT_LOG" >&2; die "apt-get install failed"; }
    rm -f "$APT_LOG"
    if [ "$POLICY_MADE" = 1 ]; then rm -f /usr/sbin/policy-rc.d; POLICY_MADE=0; fi
    log "packages installed"
fi

mkdir -p "$STATE/ctld" "$STATE/slurmd" "$LOG" "$RUN" "$CONF_DIR"
chmod 755 "$STATE" "$RUN"

# Refuse, before starting anything, to replace a Slurm configuration this script did not write.
for f in slurm.conf gres.conf slurmdbd.conf; do
    if [ -f "$CONF_DIR/$f" ] && ! grep -qF "$MARKER" "$CONF_DIR/$f" && [ "$SLURM_LOCAL_FORCE_CONF" != 1 ]; then
        die "$CONF_DIR/$f exists and was not written by this script (set SLURM_LOCAL_FORCE_CONF=1 to replace it; the old file is kept as $f.pre-slurm_local)"
    fi
done

# ... and check the ports of the daemons that are not already ours and running.
alive slurmctld "$RUN/slurmctld.pid" || check_port_free "$SLURM_LOCAL_CTLD_PORT" slurmctld
alive slurmd "$RUN/slurmd.pid" || check_port_free "$SLURM_LOCAL_SLURMD_PORT" slurmd
if [ "$SLURM_LOCAL_ACCOUNTING" = 1 ]; then
    alive slurmdbd "$RUN/slurmdbd.pid" || check_port_free "$SLURM_LOCAL_DBD_PORT" slurmdbd
    alive mariadbd "$RUN/mysql/mariadbd.pid" || check_port_free "$SLURM_LOCAL_DB_PORT" mariadb
fi

# ---------------------------------------------------------------- 2. munge
install -d -o munge -g munge -m 0700 /etc/munge
if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
        || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    log "munge key created"
fi
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
munge_ok() { munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; }
if alive munged "$RUN/munged.pid"; then
    log "munged: already running (ours, pid $(cat "$RUN/munged.pid"))"
elif munge_ok; then
    log "munged: a munged this script did not start is answering; using it (teardown leaves it alone)"
else
    rm -f "$RUN/munged.pid"
    daemon runuser -u munge -- /usr/sbin/munged </dev/null >/dev/null 2>&1 || die "munged failed to start (see /var/log/munge/munged.log)"
    wait_for "$SLURM_LOCAL_TIMEOUT" munged munge_ok || die "munged does not answer (see /var/log/munge/munged.log)"
    cp /run/munge/munged.pid "$RUN/munged.pid"
fi

# ---------------------------------------------------------------- 3. configuration
GRES_LINE="# no fake GPUs (SLURM_LOCAL_GPUS=0)"
NODE_GRES=""
rm -rf "$RUN/fakegpu"
if [ "$SLURM_LOCAL_GPUS" -gt 0 ]; then
    mkdir -p "$RUN/fakegpu"
    for ((i = 0; i < SLURM_LOCAL_GPUS; i++)); do ln -sfn /dev/null "$RUN/fakegpu/nvidia$i"; done
    GRES_LINE="NodeName=$HOST Name=gpu${SLURM_LOCAL_GPU_TYPE:+ Type=$SLURM_LOCAL_GPU_TYPE} File=$RUN/fakegpu/nvidia[0-$((SLURM_LOCAL_GPUS - 1))]"
    NODE_GRES="Gres=gpu:${SLURM_LOCAL_GPU_TYPE:+$SLURM_LOCAL_GPU_TYPE:}$SLURM_LOCAL_GPUS"
fi
[ -n "$SLURM_LOCAL_FEATURES" ] && NODE_GRES="$NODE_GRES Features=$SLURM_LOCAL_FEATURES"

PARTS="" first=YES
IFS=, read -ra PART_NAMES <<<"$SLURM_LOCAL_PARTITIONS"
for p in "${PART_NAMES[@]}"; do
    PARTS+="PartitionName=$p Nodes=ALL Default=$first MaxTime=INFINITE State=UP"$'\n'
    first=NO
done

if [ "$SLURM_LOCAL_ACCOUNTING" = 1 ]; then
    ACCT="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$SLURM_LOCAL_DBD_PORT
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30"
else
    ACCT="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi

COMMON=(MARKER "$MARKER" HOST "$HOST" RUN_DIR "$RUN" STATE_DIR "$STATE" LOG_DIR "$LOG")
SLURM_CONF_TEXT=$(render "$HERE/slurm.conf.in" "${COMMON[@]}" \
    CLUSTER "$SLURM_LOCAL_CLUSTER" CTLD_PORT "$SLURM_LOCAL_CTLD_PORT" SLURMD_PORT "$SLURM_LOCAL_SLURMD_PORT" \
    MAX_ARRAY_SIZE "$SLURM_LOCAL_MAX_ARRAY_SIZE" CPUS "$SLURM_LOCAL_CPUS" MEM_MB "$SLURM_LOCAL_MEM_MB" NODE_GRES "$NODE_GRES" \
    ACCOUNTING "$ACCT" PARTITIONS "${PARTS%$'\n'}")
GRES_CONF_TEXT=$(render "$HERE/gres.conf.in" "${COMMON[@]}" GRES_LINE "$GRES_LINE")

CONF_CHANGED=$(install_file "$SLURM_CONF_TEXT" "$CONF_DIR/slurm.conf" 0644)
GRES_CHANGED=$(install_file "$GRES_CONF_TEXT" "$CONF_DIR/gres.conf" 0644)
[ -n "$CONF_CHANGED$GRES_CHANGED" ] && log "wrote $CONF_DIR/slurm.conf and gres.conf"

# ---------------------------------------------------------------- 4. accounting: MariaDB + slurmdbd
DBD_CHANGED=""
if [ "$SLURM_LOCAL_ACCOUNTING" = 1 ]; then
    if [ ! -s "$STATE/dbpass" ]; then
        (umask 077; head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$STATE/dbpass")
    fi
    DB_PASS=$(cat "$STATE/dbpass")
    DBD_CONF_TEXT=$(render "$HERE/slurmdbd.conf.in" "${COMMON[@]}" \
        DBD_PORT "$SLURM_LOCAL_DBD_PORT" DB_PORT "$SLURM_LOCAL_DB_PORT" DB_PASS "$DB_PASS")
    DBD_CHANGED=$(install_file "$DBD_CONF_TEXT" "$CONF_DIR/slurmdbd.conf" 0600)

    DB_DIR=$STATE/mysql
    install -d -o mysql -g mysql -m 0750 "$RUN/mysql"
    if ! alive mariadbd "$RUN/mysql/mariadbd.pid"; then
        if [ ! -d "$DB_DIR/mysql" ]; then
            rm -rf "$DB_DIR"; install -d -o mysql -g mysql -m 0750 "$DB_DIR"
            mariadb-install-db --no-defaults --user=mysql --datadir="$DB_DIR" \
                --auth-root-authentication-method=socket --skip-test-db \
                >"$LOG/mariadb-install-db.log" 2>&1 || { tail -20 "$LOG/mariadb-install-db.log" >&2; die "mariadb-install-db failed"; }
            log "mariadb: data directory initialised"
        fi
        check_port_free "$SLURM_LOCAL_DB_PORT" mariadb
        daemon_bg setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$DB_DIR" \
            --bind-address=127.0.0.1 --port="$SLURM_LOCAL_DB_PORT" --skip-name-resolve \
            --socket="$RUN/mysql/mysqld.sock" --pid-file="$RUN/mysql/mariadbd.pid" \
            --log-error="$LOG/mariadb.err" --innodb-buffer-pool-size=128M \
            --innodb-log-file-size=48M --innodb-lock-wait-timeout=900 \
            </dev/null >/dev/null 2>&1
        wait_for "$SLURM_LOCAL_TIMEOUT" mariadb \
            mariadb-admin --no-defaults --socket="$RUN/mysql/mysqld.sock" -uroot ping \
            || { tail -20 "$LOG/mariadb.err" >&2; die "mariadb did not start"; }
        wait_for 10 "mariadb pid file" test -s "$RUN/mysql/mariadbd.pid" || true
    else
        log "mariadb: already running (ours, pid $(cat "$RUN/mysql/mariadbd.pid"))"
    fi
    mariadb --no-defaults --socket="$RUN/mysql/mysqld.sock" -uroot <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
SQL

    if alive slurmdbd "$RUN/slurmdbd.pid" && [ -n "$DBD_CHANGED" ]; then
        log "slurmdbd.conf changed: restarting slurmdbd"; stop_ours slurmdbd "$RUN/slurmdbd.pid"
    fi
    if alive slurmdbd "$RUN/slurmdbd.pid"; then
        log "slurmdbd: already running (ours, pid $(cat "$RUN/slurmdbd.pid"))"
    else
        check_port_free "$SLURM_LOCAL_DBD_PORT" slurmdbd
        daemon /usr/sbin/slurmdbd </dev/null >/dev/null 2>&1 || die "slurmdbd failed to start (see $LOG/slurmdbd.log)"
        wait_for "$SLURM_LOCAL_TIMEOUT" slurmdbd sacctmgr -n show cluster \
            || { tail -20 "$LOG/slurmdbd.log" >&2; die "slurmdbd does not answer"; }
    fi
fi

# ---------------------------------------------------------------- 5. slurmctld + slurmd
if [ -n "$CONF_CHANGED$GRES_CHANGED" ] && { alive slurmctld "$RUN/slurmctld.pid" || alive slurmd "$RUN/slurmd.pid"; }; then
    log "slurm.conf/gres.conf changed: restarting slurmctld and slurmd"
    stop_ours slurmd "$RUN/slurmd.pid"
    stop_ours slurmctld "$RUN/slurmctld.pid"
fi

if alive slurmctld "$RUN/slurmctld.pid"; then
    log "slurmctld: already running (ours, pid $(cat "$RUN/slurmctld.pid"))"
else
    check_port_free "$SLURM_LOCAL_CTLD_PORT" slurmctld
    # -i: ignore errors in saved state (e.g. left by an earlier configuration)
    daemon /usr/sbin/slurmctld -i </dev/null >/dev/null 2>&1 || die "slurmctld failed to start (see $LOG/slurmctld.log)"
    ctld_up() { scontrol ping 2>/dev/null | grep -q 'is UP'; }
    wait_for "$SLURM_LOCAL_TIMEOUT" slurmctld ctld_up \
        || { tail -20 "$LOG/slurmctld.log" >&2; die "slurmctld does not answer"; }
fi

if alive slurmd "$RUN/slurmd.pid"; then
    log "slurmd: already running (ours, pid $(cat "$RUN/slurmd.pid"))"
else
    check_port_free "$SLURM_LOCAL_SLURMD_PORT" slurmd
    daemon /usr/sbin/slurmd </dev/null >/dev/null 2>&1 || die "slurmd failed to start (see $LOG/slurmd.log)"
fi

node_state() { sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -1; }
node_ready() { case "$(node_state)" in idle|mixed|allocated|completing) return 0;; *) return 1;; esac; }
node_drained() { case "$(node_state)" in *drain*|down*|*fail*) return 0;; *) return 1;; esac; }
if ! wait_for 15 "node $HOST" node_ready; then
    if node_drained; then
        log "node $HOST is $(node_state): resuming it"
        scontrol update NodeName="$HOST" State=RESUME || true
    fi
    wait_for "$SLURM_LOCAL_TIMEOUT" "node $HOST" node_ready \
        || { sinfo -N -l >&2; tail -20 "$LOG/slurmd.log" >&2; die "node $HOST did not become idle"; }
fi

if [ "$SLURM_LOCAL_SMOKE" = 1 ]; then
    out=$(timeout 60 srun -t 1 -N 1 -n 1 hostname) || die "smoke test 'srun hostname' failed"
    log "smoke test: srun hostname -> $out"
fi
sinfo -N -o '%N %P %c %m %G %T'
log "cluster up in $((SECONDS - T0)) s (config $CONF_DIR/slurm.conf, logs $LOG, pids $RUN)"
