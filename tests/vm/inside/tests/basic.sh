# berth runs a plain command on this host.

test_berth_run_basic() {
    local out rc
    berth run -D "$BB" --pipe /bin/true || fail "berth run -D $BB --pipe /bin/true: exit status $?"
    berth run -D "$BB" --pipe /bin/sh -c 'exit 7'
    rc=$?
    expect_eq "exit status of 'sh -c \"exit 7\"'" "$rc" 7
    # The payload sees the container's root, not the VM's.
    out=$(berth run -D "$BB" --pipe /bin/cat /etc/passwd) || fail "berth run cat /etc/passwd failed"
    expect_eq "/etc/passwd seen inside" "$out" "$(cat "$BB/etc/passwd")"
    # Nothing stays registered afterwards.
    sleep 1
    ! registered busybox || fail "machine busybox is still registered after berth exited"
}
