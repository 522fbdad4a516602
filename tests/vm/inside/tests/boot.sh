# A booted container (berth run -b) with its own systemd on the v2 host (issue 4).

# The container's systemd gets a delegated, writable subtree: it creates its own init.scope and
# system.slice below the machine's cgroup and sees that cgroup as its root. machinectl shell
# (machined talking to the container's own dbus) works, and poweroff ends berth.
test_boot_delegated_subtree() {
    local name=vmboot cg out
    berth_bg "$name" /run/berth-vm/$name.out -b -D "$DEBIAN" --pipe
    wait_for 60 "machine $name" registered "$name"
    cg=$(machine_cgroup "$name") || exit 1
    wait_for 180 "the container's systemd to create $cg/init.scope" test -d "$cg/init.scope"
    wait_for 180 "the container's systemd to create $cg/system.slice" test -d "$cg/system.slice"
    note "subtree: $(cd "$cg" && find . -mindepth 1 -maxdepth 2 -type d | tr '\n' ' ')"
    # Delegated: the container's cgroups are owned by it and controllers reach them.
    grep -qw memory "$cg/cgroup.subtree_control" ||
        fail "memory is not enabled for the container's subtree ($(cat "$cg/cgroup.subtree_control"))"
    wait_for 180 "machinectl shell $name" eval "machinectl shell -q $name /bin/true"
    out=$(machinectl shell -q "$name" /bin/cat /proc/self/cgroup </dev/null 2>&1 | tr -d '\r')
    note "inside: $out"
    grep -q '^0::/' <<<"$out" || fail "no v2 cgroup line inside: $out"
    ! grep -q machine.slice <<<"$out" || fail "the container sees the host's cgroup path: $out"
    machinectl poweroff "$name" || fail "machinectl poweroff $name failed"
    wait_exit "$BG_PID" 120
    expect_eq "berth's exit status after poweroff" "$EXIT_STATUS" 0
}

# The same without machined (--register=no): systemd starts machine-NAME.scope for the
# container (delegated), whose systemd builds its tree below it; SIGTERM halts the container,
# berth exits 0, and the scope and its cgroup go away with the container: nothing is left,
# neither there nor below berth's own unit (berth-vm-tests.service), nor in the mount table.
test_boot_register_no() {
    local name=vmbootnoreg unit=machine-vmbootnoreg.scope init cg left before
    before=$(cut -d' ' -f5 /proc/self/mountinfo | sort)
    berth_bg "$name" /run/berth-vm/$name.out -b --register=no -D "$DEBIAN" --pipe
    wait_for 60 "the container's init (a child of berth $BG_PID)" container_init "$BG_PID"
    init=$(container_init "$BG_PID")
    # The container's systemd moves itself into init.scope of the cgroup it was given.
    wait_for 180 "the container's systemd to move into its init.scope" \
        eval "grep -q '^0::/.*/init.scope$' /proc/$init/cgroup"
    cg=/sys/fs/cgroup$(sed -n 's|^0::\(.*\)/init.scope$|\1|p' "/proc/$init/cgroup")
    note "container cgroup $cg"
    expect_eq "the cgroup of $unit" "/sys/fs/cgroup$(systemctl show -p ControlGroup --value "$unit")" "$cg"
    wait_for 180 "the container's systemd to create $cg/system.slice" test -d "$cg/system.slice"
    ! registered "$name" || fail "machine $name is registered despite --register=no"
    kill -TERM "$BG_PID"
    wait_exit "$BG_PID" 120
    expect_eq "berth's exit status after SIGTERM (halt)" "$EXIT_STATUS" 0
    wait_for 10 "$unit to go away" unit_gone "$unit"
    [ ! -e "$cg" ] || fail "the container's cgroup $cg is left behind: $(cd "$cg" && find . -mindepth 1 -type d | head -n 5 | tr '\n' ' ')procs: $(cat "$cg/cgroup.procs" | tr '\n' ' ')"
    left=$(find /sys/fs/cgroup -name "machine-$name*" 2>/dev/null)
    [ -z "$left" ] || fail "cgroups left behind: $left"
    # The container's systemd mounted cgroup2 on the /sys berth lent it: that must not have
    # reached this host (tucked under /sys/fs/cgroup, it pinned the cgroup above).
    leaked_mounts "$before"
}
