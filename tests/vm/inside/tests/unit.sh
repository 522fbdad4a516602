# The unit template (issue 4): systemctl start/stop berth@NAME for the stored image NAME.

# fail, with the unit's status and journal in the test's log.
unit_fail() {
    systemctl status --no-pager "$unit" >&2
    journalctl --no-pager -n 30 -u "$unit" >&2
    fail "$@"
}

test_unit_template() {
    local name=debian unit=berth@debian.service
    UNITS+=("$unit")
    systemctl cat "$unit" >/dev/null || fail "no $unit (units/berth@.service not installed)"
    timeout 120 systemctl start "$unit" || unit_fail "systemctl start $unit failed"
    expect_eq "state of $unit" "$(systemctl is-active "$unit")" active
    wait_for 60 "machine $name" registered "$name"
    [ "$(machinectl show -p Unit --value "$name")" = "$unit" ] ||
        unit_fail "machine $name is not registered with unit $unit: $(machinectl show -p Unit --value "$name" 2>&1)"
    expect_eq "slice of $unit" "$(systemctl show -p Slice --value "$unit")" machine.slice
    # Still running a while later: the container stays up as a service.
    sleep 5
    [ "$(systemctl is-active "$unit")" = active ] || unit_fail "$unit did not stay active"
    registered "$name" || unit_fail "machine $name went away while $unit runs"
    timeout 120 systemctl stop "$unit" || unit_fail "systemctl stop $unit failed"
    wait_for 30 "machine $name to go away" eval "! registered $name"
    expect_eq "state of $unit after stop" "$(systemctl is-active "$unit")" inactive
}
