# cgroup limits (issue 4), enforced by the kernel's v2 controllers and seen from the host side.

# An over-allocating payload is OOM-killed under MemoryMax; the same payload fits a larger limit.
test_memory_max_oom() {
    local rc before after
    # busybox dd allocates (and fills, reading /dev/zero) one 200 MiB buffer.
    berth run -M vmmemok -D "$BB" --pipe --property MemoryMax=512M \
        /bin/dd if=/dev/zero of=/dev/null bs=200M count=1
    rc=$?
    expect_eq "exit status of the 200 MiB payload under MemoryMax=512M" "$rc" 0
    before=$(dmesg | grep -c 'Memory cgroup out of memory')
    berth run -M vmmemoom -D "$BB" --pipe --property MemoryMax=64M \
        /bin/dd if=/dev/zero of=/dev/null bs=200M count=1
    rc=$?
    expect_eq "exit status of the 200 MiB payload under MemoryMax=64M (SIGKILL)" "$rc" 137
    after=$(dmesg | grep -c 'Memory cgroup out of memory')
    [ "$after" -gt "$before" ] || fail "the kernel logged no memory cgroup OOM kill"
}

# A fork bomb stops at TasksMax: the kernel refuses forks (pids.events max) and the container
# never holds more tasks than the limit.
test_tasks_max_forkbomb() {
    local name=vmtasks cg ev cur
    # The inner shell forks sleepers until fork fails; PID 1 then becomes a sleeper itself, so
    # the container stays up with the limit reached while the host looks at it.
    berth_bg "$name" /run/berth-vm/$name.out -D "$BB" --pipe --property TasksMax=16 \
        /bin/sh -c 'sh -c "while :; do sleep 600 & done" 2>/dev/null; exec sleep 600'
    wait_for 60 "machine $name" registered "$name"
    cg=$(machine_cgroup "$name") || exit 1
    expect_eq "pids.max of $cg" "$(cat "$cg/pids.max")" 16
    expect_eq "TasksMax of the unit" \
        "$(systemctl show -p TasksMax --value "$(machinectl show -p Unit --value $name)")" 16
    wait_for 60 "refused forks in $cg" test "$(pids_max_events "$cg")" -gt 0
    ev=$(pids_max_events "$cg")
    cur=$(cat "$cg/pids.current")
    note "pids.current $cur, forks refused $ev"
    [ "$cur" -le 16 ] || fail "pids.current $cur is above TasksMax=16"
    [ "$cur" -ge 8 ] || fail "pids.current $cur: the fork bomb did not run"
    machinectl terminate "$name" || fail "machinectl terminate $name failed"
    wait_exit "$BG_PID" 60
}

# CPUQuota throttles a busy loop: cpu.stat counts throttled periods and usage stays near quota.
test_cpu_quota_throttles() {
    local name=vmcpu cg u1 u2 t1 t2 n
    berth_bg "$name" /run/berth-vm/$name.out -D "$BB" --pipe --property CPUQuota=20% \
        /bin/sh -c 'while :; do :; done'
    wait_for 60 "machine $name" registered "$name"
    cg=$(machine_cgroup "$name") || exit 1
    expect_eq "cpu.max of $cg" "$(cat "$cg/cpu.max")" "20000 100000"
    sleep 1
    u1=$(cpu_stat "$cg" usage_usec)
    t1=$(date +%s%N)
    sleep 4
    u2=$(cpu_stat "$cg" usage_usec)
    t2=$(date +%s%N)
    n=$(cpu_stat "$cg" nr_throttled)
    note "nr_throttled $n, throttled_usec $(cpu_stat "$cg" throttled_usec), usage $(((u2 - u1) / 1000)) ms in $(((t2 - t1) / 1000000)) ms"
    [ "$n" -gt 0 ] || fail "cpu.stat nr_throttled is 0 under CPUQuota=20%"
    [ "$(cpu_stat "$cg" throttled_usec)" -gt 0 ] || fail "cpu.stat throttled_usec is 0"
    # 20 % of one CPU, with generous room for accounting granularity: at most 35 %.
    [ $(((u2 - u1) * 100 / ((t2 - t1) / 1000))) -le 35 ] ||
        fail "the payload used $(((u2 - u1) / 1000)) ms of CPU in $(((t2 - t1) / 1000000)) ms under CPUQuota=20%"
    [ $((u2 - u1)) -gt 0 ] || fail "the payload used no CPU at all"
    machinectl terminate "$name" || fail "machinectl terminate $name failed"
    wait_exit "$BG_PID" 60
}

# --register=no on a systemd host: as nspawn, berth has systemd start machine-NAME.scope for
# the container (delegated, with the limits), enforced by the kernel; machined knows nothing of
# it, and the scope is gone once berth has exited. (berth's own cgroup would sit below
# berth-vm-tests.service, where cgroup v2 allows no controllers.)
test_register_no_cgroup() {
    local name=vmnoreg unit=machine-vmnoreg.scope pid cg dir rc left
    berth_bg "$name" /run/berth-vm/$name.out --register=no -D "$BB" --pipe \
        --property MemoryMax=64M --property TasksMax=32 --property CPUQuota=50% \
        /bin/sleep 20.4343
    wait_for 30 "the payload (sleep 20.4343)" pid_of_cmdline /bin/sleep 20.4343
    pid=$(pid_of_cmdline /bin/sleep 20.4343)
    cg=$(sed -n 's/^0:://p' "/proc/$pid/cgroup")
    note "payload $pid in cgroup $cg"
    # The limits sit on the payload's cgroup or an ancestor: the scope.
    dir=/sys/fs/cgroup$cg
    while [ "$dir" != /sys/fs/cgroup ] && [ "$(cat "$dir/memory.max" 2>/dev/null)" != 67108864 ]; do
        dir=$(dirname "$dir")
    done
    [ "$dir" != /sys/fs/cgroup ] || fail "no cgroup above the payload ($cg) has memory.max 64M"
    note "limits in $dir"
    expect_eq "pids.max of $dir" "$(cat "$dir/pids.max")" 32
    expect_eq "cpu.max of $dir" "$(cat "$dir/cpu.max")" "50000 100000"
    expect_eq "the cgroup of $unit" "/sys/fs/cgroup$(systemctl show -p ControlGroup --value "$unit")" "$dir"
    expect_eq "MemoryMax of $unit" "$(systemctl show -p MemoryMax --value "$unit")" 67108864
    expect_eq "Delegate of $unit" "$(systemctl show -p Delegate --value "$unit")" yes
    ! registered "$name" || fail "machine $name is registered despite --register=no"
    ! machinectl list --no-legend | grep -qw "$name" || fail "machinectl lists $name"
    wait_exit "$BG_PID" 60
    expect_eq "berth's exit status" "$EXIT_STATUS" 0
    wait_for 10 "$unit to go away" unit_gone "$unit"
    [ ! -e "$dir" ] || fail "the scope's cgroup $dir is left behind"
    left=$(find /sys/fs/cgroup -name "machine-$name*" 2>/dev/null)
    [ -z "$left" ] || fail "cgroups left behind: $left"
    # And the memory limit is enforced there too.
    berth run --register=no -D "$BB" --pipe --property MemoryMax=64M \
        /bin/dd if=/dev/zero of=/dev/null bs=200M count=1
    rc=$?
    expect_eq "exit status of the 200 MiB payload under MemoryMax=64M, --register=no" "$rc" 137
}
