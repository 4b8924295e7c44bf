#!/usr/bin/env bash
# A real single-node Slurm cluster for CI, so that the job-queue runner's tests
# (runners/jobqueue.py, tests/test_slurm.py) run against real daemons -- munged, slurmctld and
# slurmd -- instead of mocks. Everything it starts listens on 127.0.0.1 only: the controller
# and the node are bound to loopback (SlurmctldHost=<host>(127.0.0.1), NodeAddr=127.0.0.1,
# CommunicationParameters=NoCtldInAddrAny,NoInAddrAny); munged uses a Unix socket.
#
#   bash .ci/slurm.sh up      install (apt, if needed), configure, start, wait until the node is
#                             idle, run a smoke job; a no-op if Slurm is already up
#   bash .ci/slurm.sh down    stop slurmd, slurmctld and munged (by their pid files)
#   bash .ci/slurm.sh status  print the node's state; exit 1 if Slurm is not up
#
# Needs root, Debian/Ubuntu (apt) and no systemd: the daemons are started directly. Tested on
# Debian 12 (Slurm 22.05, munge 0.5.15). No cgroups are needed (proctrack/linuxproc,
# task/none). Daemon logs: /var/log/slurm/, /var/log/munge/.
set -euo pipefail

CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
LOG_DIR=/var/log/slurm
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
MUNGE_RUN=/run/munge
MUNGE_PID="$MUNGE_RUN/munged.pid"
MUNGE_LOG_DIR=/var/log/munge
READY_TIMEOUT="${SLURM_READY_TIMEOUT:-60}" # seconds until the node must be idle
SMOKE_TIMEOUT="${SLURM_SMOKE_TIMEOUT:-60}" # seconds for the smoke job

log() { echo "slurm: $*"; }

now() { date +%s.%N; }

elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# The node's name, as slurmd -C reports it (the short host name).
node_name() { hostname -s; }

show_logs() {
    local f
    for f in "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" "$MUNGE_LOG_DIR/munged.log"; do
        if [ -f "$f" ]; then
            echo "----- last lines of $f -----" >&2
            tail -n 25 "$f" >&2 || true
        fi
    done
}

die() {
    echo "slurm: ERROR: $*" >&2
    show_logs
    exit 1
}

node_state() {
    # prints e.g. "idle", "mix", "alloc", "down*"; empty (and non-zero) if slurmctld is not up
    command -v sinfo >/dev/null 2>&1 || return 1
    [ -f "$CONF" ] || return 1
    # without a live slurmctld, sinfo would retry its connection for about 10 s
    pid_alive "$CTLD_PID" || return 1
    timeout 10 sinfo -h -n "$(node_name)" -o %t 2>/dev/null | head -n 1
}

is_up() {
    # up = the controller answers and the node is usable (idle, or running jobs)
    local st
    st="$(node_state)" || return 1
    case "$st" in
    idle | mix | alloc | comp | completing) return 0 ;;
    *) return 1 ;;
    esac
}

pid_alive() {
    local pidfile="$1" pid
    [ -f "$pidfile" ] || return 1
    pid="$(cat "$pidfile" 2>/dev/null)" || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

stop_by_pidfile() {
    local name="$1" pidfile="$2" pid i
    if ! pid_alive "$pidfile"; then
        rm -f "$pidfile"
        log "$name not running"
        return 0
    fi
    pid="$(cat "$pidfile")"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 150); do # up to 15 s
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name (pid $pid) ignored SIGTERM for 15 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$pidfile"
    log "$name (pid $pid) stopped"
}

install_packages() {
    if command -v slurmctld >/dev/null 2>&1 && command -v slurmd >/dev/null 2>&1 &&
        [ -x /usr/sbin/munged ]; then
        return 0
    fi
    log "installing slurm-wlm and munge (apt)"
    local apt_log
    apt_log="$(mktemp)"
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get update -q && apt-get install -y -q --no-install-recommends slurm-wlm munge; } \
        >"$apt_log" 2>&1; then
        tail -n 30 "$apt_log" >&2
        rm -f "$apt_log"
        die "apt-get update / apt-get install slurm-wlm munge failed"
    fi
    rm -f "$apt_log"
}

start_munge() {
    id munge >/dev/null 2>&1 || die "the munge user does not exist (is munge installed?)"
    install -d -o munge -g munge -m 0755 "$MUNGE_RUN"
    install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge
    install -d -o munge -g munge -m 0700 "$MUNGE_LOG_DIR"
    # a log (or seed) left by a munged started as root makes the next start fail with
    # "Logfile is insecure"
    chown -R munge:munge "$MUNGE_LOG_DIR" /var/lib/munge /etc/munge
    if [ ! -s /etc/munge/munge.key ]; then
        log "creating /etc/munge/munge.key"
        runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key ||
            die "mungekey --create failed"
    fi
    chmod 0600 /etc/munge/munge.key
    if pid_alive "$MUNGE_PID"; then
        log "munged already running (pid $(cat "$MUNGE_PID"))"
    else
        rm -f "$MUNGE_PID"
        runuser -u munge -- /usr/sbin/munged || die "munged failed to start"
    fi
    munge -n | unmunge >/dev/null || die "munge round trip (munge -n | unmunge) failed"
}

write_conf() {
    local host line cpus mem
    host="$(node_name)"
    # the host name must resolve (slurmctld looks itself up)
    if ! getent hosts "$host" >/dev/null; then
        log "adding '127.0.0.1 $host' to /etc/hosts"
        echo "127.0.0.1 $host" >>/etc/hosts
    fi
    # the node line as slurmd measures it (CPUs alone gives "Node reconfigured socket/core
    # boundaries"), with RealMemory at 80% so that the OS keeps some
    line="$(slurmd -C 2>/dev/null | head -n 1)"
    case "$line" in
    NodeName=*) ;;
    *) die "slurmd -C printed no node line: '$line'" ;;
    esac
    mem="$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$line")"
    cpus="$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$line")"
    [ -n "$mem" ] && [ -n "$cpus" ] || die "cannot read CPUs/RealMemory from: $line"
    mem=$((mem * 8 / 10))
    line="$(sed "s/RealMemory=[0-9]*/RealMemory=$mem/; s/^NodeName=[^ ]*/NodeName=$host/" \
        <<<"$line")"

    mkdir -p "$CONF_DIR" "$LOG_DIR" /var/spool/slurmctld /var/spool/slurmd
    cat >"$CONF.tmp" <<EOF
# Written by .ci/slurm.sh: a single-node Slurm for CI, listening on 127.0.0.1 only.
ClusterName=ci
MailProg=/bin/true
SlurmctldHost=$host(127.0.0.1)
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# a job that asks for no memory gets one CPU's share, not the whole node
DefMemPerCPU=$((mem / cpus))
ReturnToService=2
# time-limited jobs end quickly, finished ones leave squeue soon; MinJobAge <= 5 also keeps
# "sbatch --wait" polling every 2 s (from MinJobAge=6 on: at 2 s, then every 8 s)
MinJobAge=4
KillWait=5
OverTimeLimit=0
$line NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF.tmp" "$CONF"
}

wait_pidfile() {
    # the daemons fork: the child writes the pid file a moment after the command returns
    local name="$1" pidfile="$2" i
    for i in $(seq 1 100); do # up to 10 s
        pid_alive "$pidfile" && return 0
        sleep 0.1
    done
    die "$name did not start (no live pid in $pidfile)"
}

wait_idle() {
    local host st="" deadline
    host="$(node_name)"
    wait_pidfile slurmctld "$CTLD_PID"
    wait_pidfile slurmd "$SLURMD_PID"
    deadline=$(($(date +%s) + READY_TIMEOUT))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        st="$(node_state || true)"
        case "$st" in
        idle) return 0 ;;
        drain* | down | fail*)
            # a state file from an earlier run may keep the node drained/down
            scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true
            ;;
        esac
        pid_alive "$CTLD_PID" || die "slurmctld exited"
        pid_alive "$SLURMD_PID" || die "slurmd exited"
        sleep 0.5
    done
    die "node $host not idle after ${READY_TIMEOUT} s (state: '${st:-no answer}')"
}

smoke_test() {
    local out rc expect
    out="$(mktemp)"
    rc=0
    timeout "$SMOKE_TIMEOUT" sbatch --quiet --wait --chdir=/tmp --output="$out" \
        --job-name=ci-smoke --time=1 --wrap hostname || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "----- smoke job output -----" >&2
        cat "$out" >&2 || true
        rm -f "$out"
        die "smoke test 'sbatch --wait --wrap hostname' failed (exit code $rc)"
    fi
    expect="$(hostname)"
    if ! grep -qx -- "$expect" "$out"; then
        echo "----- smoke job output -----" >&2
        cat "$out" >&2 || true
        rm -f "$out"
        die "smoke job did not print the host name '$expect'"
    fi
    rm -f "$out"
}

cmd_up() {
    local t0 t1 t_install
    t0="$(now)"
    [ "$(id -u)" -eq 0 ] || die "must run as root"
    if is_up; then
        log "already up (node $(node_name): $(node_state))"
        return 0
    fi
    install_packages
    t1="$(now)"
    t_install="$(elapsed "$t0" "$t1")"
    # leftovers of a half-started cluster (e.g. a node that never came up) go first
    stop_by_pidfile slurmd "$SLURMD_PID" >/dev/null
    stop_by_pidfile slurmctld "$CTLD_PID" >/dev/null
    start_munge
    write_conf
    mkdir -p "$LOG_DIR"
    slurmctld || die "slurmctld failed to start"
    slurmd || die "slurmd failed to start"
    wait_idle
    smoke_test
    log "up in $(elapsed "$t0" "$(now)") s (install $t_install s)"
}

cmd_down() {
    stop_by_pidfile slurmd "$SLURMD_PID"
    stop_by_pidfile slurmctld "$CTLD_PID"
    stop_by_pidfile munged "$MUNGE_PID"
}

cmd_status() {
    local st
    if st="$(node_state)" && [ -n "$st" ]; then
        echo "slurm: node $(node_name): $st"
        is_up
    else
        echo "slurm: not up"
        return 1
    fi
}

case "${1:-}" in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
*)
    echo "usage: bash $0 up|down|status" >&2
    exit 2
    ;;
esac
