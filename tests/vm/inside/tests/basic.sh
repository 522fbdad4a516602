# berth runs a plain command on this host.

test_berth_run_basic() {
    local out rc before
    # systemd mounts / shared: nothing berth mounts for the container may show up here.
    expect_eq "propagation of /" "$(findmnt -no PROPAGATION /)" shared
    before=$(cut -d' ' -f5 /proc/self/mountinfo | sort)
    berth run -D "$BB" --pipe /bin/true
    rc=$?
    leaked_mounts "$before"
    expect_eq "exit status of berth run -D $BB --pipe /bin/true" "$rc" 0
    berth run -D "$BB" --pipe /bin/sh -c 'exit 7'
    rc=$?
    expect_eq "exit status of 'sh -c \"exit 7\"'" "$rc" 7
    # The payload sees the container's root, not the VM's.
    out=$(berth run -D "$BB" --pipe /bin/cat /etc/passwd) || fail "berth run cat /etc/passwd failed"
    expect_eq "/etc/passwd seen inside" "$out" "$(cat "$BB/etc/passwd")"
    leaked_mounts "$before"
    # Nothing stays registered afterwards.
    sleep 1
    ! registered busybox || fail "machine busybox is still registered after berth exited"
}
