# Helpers for the VM tier's inside tests; sourced by run-tests before the tests/*.sh files.
# Every test runs in its own bash: `fail REASON` ends it; the EXIT trap stops whatever the test
# started (by PID) and unregisters its machines.

BB=/var/lib/machines/busybox     # static busybox tree
DEBIAN=/var/lib/machines/debian  # the images/debian tree (systemd, dbus)

fail() {
    printf '%s\n' "$*" >"$BERTH_VM_REASON"
    echo "FAIL: $*" >&2
    exit 1
}

note() { echo "  $*" >&2; }

# berth processes and machines a test started, ended by the EXIT trap.
BG_PIDS=()
MACHINES=()
UNITS=()
BG_LOGS=()
cleanup() {
    local rc=$? p m
    if [ $rc -ne 0 ]; then
        for p in "${BG_LOGS[@]}"; do
            echo "--- $p:" >&2
            tail -n 20 "$p" >&2
        done
    fi
    for p in "${BG_PIDS[@]}"; do
        kill -0 "$p" 2>/dev/null || continue
        kill -TERM "$p" 2>/dev/null
        for _ in $(seq 20); do kill -0 "$p" 2>/dev/null || break; sleep 0.5; done
        kill -KILL "$p" 2>/dev/null
    done
    for m in "${MACHINES[@]}"; do
        machinectl show "$m" >/dev/null 2>&1 && machinectl terminate "$m" 2>/dev/null
        systemctl stop "machine-$m.scope" 2>/dev/null
    done
    for m in "${UNITS[@]}"; do systemctl stop "$m" 2>/dev/null; done
    wait 2>/dev/null
    return 0
}
trap cleanup EXIT

# berth_bg NAME LOG ARGS...: `berth run -M NAME ARGS...` in the background, output to LOG;
# sets BG_PID.
berth_bg() {
    local name=$1 log=$2
    shift 2
    MACHINES+=("$name")
    BG_LOGS+=("$log")
    berth run -M "$name" "$@" </dev/null >"$log" 2>&1 &
    BG_PID=$!
    BG_PIDS+=("$BG_PID")
    note "started berth run -M $name $* (pid $BG_PID)"
}

# wait_for SECONDS DESCRIPTION COMMAND...: retry COMMAND every 0.5 s until it succeeds.
wait_for() {
    local secs=$1 what=$2 i
    shift 2
    for ((i = 0; i < secs * 2; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    fail "timed out after $secs s waiting for $what"
}

# wait_exit PID SECONDS: wait for a background child to end; sets EXIT_STATUS.
wait_exit() {
    local pid=$1 secs=$2 i
    for ((i = 0; i < secs * 2; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid"
            EXIT_STATUS=$?
            return 0
        fi
        sleep 0.5
    done
    fail "process $pid did not end within $secs s"
}

registered() { machinectl show "$1" >/dev/null 2>&1; }

# Whether systemd has no unit of that name (any more): a transient unit is gone once collected.
unit_gone() { [ "$(systemctl show -p LoadState --value "$1")" = not-found ]; }

# The cgroup directory of a registered machine: its unit's ControlGroup under /sys/fs/cgroup.
# Runs in a command substitution, so call it as `cg=$(machine_cgroup NAME) || exit 1`.
machine_cgroup() {
    local unit cg
    unit=$(machinectl show -p Unit --value "$1") || fail "machine $1 is not registered"
    cg=$(systemctl show -p ControlGroup --value "$unit")
    [ -n "$cg" ] || fail "unit $unit of machine $1 has no control group"
    echo "/sys/fs/cgroup$cg"
}

# The container's PID 1 among berth's children (PID $1): the one that is PID 1 of a PID
# namespace of its own. berth may also have a short-lived helper child (the D-Bus helper that
# registers the container or asks systemd for its scope, started before the container).
container_init() {
    local c ns
    for c in $(cat "/proc/$1/task/$1/children" 2>/dev/null); do
        ns=$(sed -n 's/^NSpid:[[:space:]]*//p' "/proc/$c/status" 2>/dev/null)
        [ "${ns##*[[:space:]]}" = 1 ] && [ "$ns" != 1 ] && { echo "$c"; return 0; }
    done
    return 1
}

# The PID of a process whose command line is exactly the given words. Bash builtins only: under
# TCG a fork per process would make one scan take seconds.
pid_of_cmdline() {
    local want got p args
    printf -v want '%s\x1f' "$@"
    for p in /proc/[0-9]*; do
        mapfile -d '' args 2>/dev/null <"$p/cmdline" || continue
        [ ${#args[@]} -eq $# ] || continue
        printf -v got '%s\x1f' "${args[@]}"
        [ "$got" = "$want" ] && { echo "${p#/proc/}"; return 0; }
    done
    return 1
}

# Sum of the "max" counters in pids.events over a cgroup subtree (in Linux 6.1 the event is
# counted in the forking task's own cgroup, which may be below the one holding the limit).
pids_max_events() {
    find "$1" -name pids.events -exec awk '$1 == "max" { s += $2 } END { print s + 0 }' {} + |
        awk '{ s += $1 } END { print s + 0 }'
}

# cpu.stat field of a cgroup.
cpu_stat() { awk -v k="$2" '$1 == k { print $2 }' "$1/cpu.stat"; }

# Fails if the VM's mount table gained mount points since $1 (a sorted list of them).
leaked_mounts() {
    local now
    now=$(cut -d' ' -f5 /proc/self/mountinfo | sort)
    [ "$now" = "$1" ] ||
        fail "berth's mounts leaked into the host: $(comm -13 <(echo "$1") <(echo "$now") | tr '\n' ' ')"
}

expect_eq() {  # expect_eq WHAT ACTUAL EXPECTED
    [ "$2" = "$3" ] || fail "$1 is '$2', expected '$3'"
}
