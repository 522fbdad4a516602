# The unit template (issue 4): systemctl start/stop berth@NAME for the stored image NAME.

test_unit_template() {
    local name=debian unit=berth@debian.service
    UNITS+=("$unit")
    systemctl cat "$unit" >/dev/null || fail "no $unit (units/berth@.service not installed)"
    timeout 120 systemctl start "$unit" || fail "systemctl start $unit failed: $(systemctl status --no-pager "$unit" 2>&1 | tail -n 5)"
    expect_eq "state of $unit" "$(systemctl is-active "$unit")" active
    wait_for 60 "machine $name" registered "$name"
    expect_eq "unit of machine $name" "$(machinectl show -p Unit --value "$name")" "$unit"
    expect_eq "slice of $unit" "$(systemctl show -p Slice --value "$unit")" machine.slice
    timeout 120 systemctl stop "$unit" || fail "systemctl stop $unit failed"
    wait_for 30 "machine $name to go away" eval "! registered $name"
    expect_eq "state of $unit after stop" "$(systemctl is-active "$unit")" inactive
}
