# Registration with systemd-machined (issue 4), seen through machinectl and systemctl.

test_machinectl_status() {
    local name=vmstatus st unit leader cg
    berth_bg "$name" /run/berth-vm/$name.out -D "$BB" --pipe \
        --property MemoryMax=100M --property TasksMax=50 /bin/sleep 300
    wait_for 60 "machine $name" registered "$name"
    st=$(machinectl status --no-pager "$name") || fail "machinectl status $name failed"
    note "$st"
    unit=machine-$name.scope
    grep -q "Unit: $unit" <<<"$st" || fail "machinectl status shows no 'Unit: $unit'"
    grep -q "Service: berth" <<<"$st" || fail "machinectl status shows no 'Service: berth'"
    grep -q "class container" <<<"$st" || fail "machinectl status shows no class container"
    grep -q "Root: $BB" <<<"$st" || fail "machinectl status shows no 'Root: $BB'"
    grep -q "Leader: [0-9]* (sleep)" <<<"$st" || fail "machinectl status shows no leader running sleep"
    grep -q "sleep 300" <<<"$st" || fail "machinectl status shows no process tree with the payload"
    expect_eq "MemoryMax of $unit" "$(systemctl show -p MemoryMax --value "$unit")" 104857600
    expect_eq "TasksMax of $unit" "$(systemctl show -p TasksMax --value "$unit")" 50
    expect_eq "Delegate of $unit" "$(systemctl show -p Delegate --value "$unit")" yes
    expect_eq "Slice of $unit" "$(systemctl show -p Slice --value "$unit")" machine.slice
    leader=$(machinectl show -p Leader --value "$name")
    cg=$(systemctl show -p ControlGroup --value "$unit")
    grep -q "^0::$cg" "/proc/$leader/cgroup" || fail "leader $leader is not in $cg: $(cat /proc/$leader/cgroup)"
    # berth (the supervisor) is not in the scope, so killing the machine does not kill it first.
    ! grep -q "^0::$cg" "/proc/$BG_PID/cgroup" || fail "the berth supervisor sits in the machine's scope"
    machinectl terminate "$name" || fail "machinectl terminate $name failed"
    wait_exit "$BG_PID" 60
    wait_for 10 "machine $name to go away" eval "! registered $name"
    [ "$(systemctl is-active "$unit")" != active ] || fail "$unit is still active"
}
