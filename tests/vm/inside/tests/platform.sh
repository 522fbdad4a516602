# The platform: prove the VM is what the tier claims before testing berth on it.

# systemd is PID 1, booted from the disk with machined's package, and no unit failed.
test_platform_boot() {
    expect_eq "PID 1" "$(cat /proc/1/comm)" systemd
    expect_eq "root file system" "$(findmnt -no SOURCE,FSTYPE /)" "/dev/vda ext4"
    local failed
    failed=$(systemctl list-units --state=failed --no-legend --plain | awk '{ print $1 }' | tr '\n' ' ')
    [ -z "$failed" ] || fail "units failed during boot: $failed"
    command -v berth >/dev/null || fail "berth is not installed in the VM"
}

# The only cgroup hierarchy is the unified (v2) one.
test_platform_cgroup2() {
    expect_eq "file system type of /sys/fs/cgroup" "$(stat -fc %T /sys/fs/cgroup)" cgroup2fs
    local v1
    v1=$(awk '$3 == "cgroup" { print $2 }' /proc/self/mounts)
    [ -z "$v1" ] || fail "cgroup v1 hierarchies are mounted: $v1"
    [ ! -e /sys/fs/cgroup/unified ] || fail "hybrid layout: /sys/fs/cgroup/unified exists"
    expect_eq "lines in /proc/self/cgroup" "$(wc -l </proc/self/cgroup)" 1
    grep -q '^0::/' /proc/self/cgroup || fail "/proc/self/cgroup is not v2-only: $(cat /proc/self/cgroup)"
    expect_eq "kernel command line has unified hierarchy" \
        "$(grep -o 'systemd.unified_cgroup_hierarchy=1' /proc/cmdline)" systemd.unified_cgroup_hierarchy=1
}

# The controllers berth's limits use are there and systemd hands them down to machine.slice.
test_platform_controllers() {
    local c have
    have=$(cat /sys/fs/cgroup/cgroup.controllers)
    for c in cpu memory pids io; do
        grep -qw "$c" <<<"$have" || fail "controller $c missing from /sys/fs/cgroup/cgroup.controllers ($have)"
    done
    UNITS+=(berth-vm-probe.service)
    # A unit with limits gets the controllers enabled on its way down from the root.
    systemd-run --unit=berth-vm-probe --property=MemoryMax=100M --property=TasksMax=10 \
        --property=CPUQuota=50% --slice=machine.slice /bin/sleep 30 >/dev/null 2>&1 ||
        fail "systemd-run with limits failed"
    local cg=/sys/fs/cgroup/machine.slice/berth-vm-probe.service
    wait_for 10 "$cg" test -d "$cg"
    expect_eq "memory.max" "$(cat $cg/memory.max)" 104857600
    expect_eq "pids.max" "$(cat $cg/pids.max)" 10
    expect_eq "cpu.max" "$(cat $cg/cpu.max)" "50000 100000"
    systemctl stop berth-vm-probe.service
}

# systemd-machined answers on the bus (activated on demand) and is running.
test_platform_machined() {
    machinectl list --no-legend >/dev/null || fail "machinectl list failed"
    expect_eq "systemd-machined" "$(systemctl is-active systemd-machined.service)" active
    busctl status org.freedesktop.machine1 >/dev/null || fail "org.freedesktop.machine1 is not on the bus"
    expect_eq "machine.slice" "$(systemctl show -p LoadState --value machine.slice)" loaded
}
