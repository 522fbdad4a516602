//! `--private-users` / `-U`: root in the container, nobody on the host.

mod support;

use std::os::unix::fs::MetadataExt;
use std::process::Stdio;
use support::*;

fn uid_map(o: &Out) -> (u32, u32, u32) {
    let line = o.stdout.lines().next().unwrap_or_else(|| panic!("{o:?}"));
    let f: Vec<u32> = line
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    (f[0], f[1], f[2])
}

fn run_in(root: &std::path::Path, extra: &[&str], script: &str) -> Out {
    let mut args = vec!["run", "-D", root.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["/bin/sh", "-c", script]);
    run_with(&args, None)
}

#[test]
fn dash_u_maps_root_to_a_picked_64k_range_in_one_line() {
    let tmp = TempDir::new("ns-pick");
    let root = busybox_copy(tmp.path());
    let o = run_in(
        &root,
        &["-U", "-M", "pick-a"],
        "cat /proc/self/uid_map /proc/self/gid_map; id -u; id -g",
    );
    assert_eq!(o.code, 0, "{o:?}");
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "one line per map: {o:?}");
    let (inside, base, count) = uid_map(&o);
    assert_eq!((inside, count), (0, 65536));
    assert_eq!(base % 65536, 0);
    assert!((0x80000..0x6FFF0000).contains(&base), "{base:#x}");
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        lines[1].split_whitespace().collect::<Vec<_>>()
    );
    assert_eq!(&lines[2..], ["0", "0"]);
    // The same name picks the same range next time: stable from the machine name.
    let again = run_in(&root, &["-U", "-M", "pick-a"], "cat /proc/self/uid_map");
    assert_eq!(uid_map(&again).1, base);
}

#[test]
fn map_ownership_leaves_the_tree_unshifted_on_disk() {
    let tmp = TempDir::new("ns-map");
    let root = busybox_copy(tmp.path());
    let o = run_in(
        &root,
        &["-U", "--private-users-ownership=map"],
        "grep ' / ' /proc/self/mounts; echo hi > /root/made; ls -ln /root/made; chown 1000:1000 /home/user/.x 2>/dev/null; touch /home/user/f; chown 1000:1000 /home/user/f",
    );
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("idmapped"), "{o:?}");
    assert!(
        o.stdout.contains(" 0        0 "),
        "root inside owns what it makes: {o:?}"
    );
    // On the host: unshifted, exactly as an unprivileged container would have written.
    let made = std::fs::metadata(root.join("root/made")).unwrap();
    assert_eq!((made.uid(), made.gid()), (0, 0));
    let f = std::fs::metadata(root.join("home/user/f")).unwrap();
    assert_eq!((f.uid(), f.gid()), (1000, 1000));
    assert_eq!(
        std::fs::metadata(&root).unwrap().uid(),
        0,
        "the tree's root was not chowned"
    );
}

#[test]
fn chown_ownership_shifts_the_tree_once_and_records_it() {
    let tmp = TempDir::new("ns-chown");
    let root = busybox_copy(tmp.path());
    let base = 0x7A00_0000u32;
    let arg = format!("--private-users={base}");
    let o = run_in(
        &root,
        &[&arg, "--private-users-ownership=chown"],
        "id -u; ls -ln /home | tail -1; touch /root/made",
    );
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.stdout.contains(" 1000     1000 "),
        "owners inside are the unshifted ones: {o:?}"
    );
    let md = |p: &str| std::fs::symlink_metadata(root.join(p)).unwrap();
    assert_eq!(md("").uid(), base, "the root records the shift");
    assert_eq!(md("home/user").uid(), base + 1000);
    assert_eq!(md("root/made").uid(), base);
    assert_eq!(md("bin/sh").uid(), base, "symlinks shifted too");
    // A second start finds the record and does not walk the tree again.
    let ctime = md("home/user").ctime_nsec();
    let o = run_in(&root, &[&arg, "--private-users-ownership=chown"], "true");
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(md("home/user").ctime_nsec(), ctime);
}

#[test]
fn host_owned_bind_is_not_writable_by_the_containers_root() {
    let tmp = TempDir::new("ns-bind");
    let root = busybox_copy(tmp.path());
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("secret"), "host\n").unwrap();
    let arg = format!("{}:/mnt", data.display());
    let o = run_in(
        &root,
        &["-U", "--bind", &arg],
        "ls -ln /mnt/secret; echo owned > /mnt/secret && echo WROTE; touch /mnt/new && echo CREATED; cat /mnt/secret",
    );
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.stdout.contains(" 65534    65534 "),
        "host root shows as nobody: {o:?}"
    );
    assert!(
        !o.stdout.contains("WROTE") && !o.stdout.contains("CREATED"),
        "{o:?}"
    );
    assert_eq!(
        std::fs::read_to_string(data.join("secret")).unwrap(),
        "host\n"
    );
}

#[test]
fn all_capabilities_inside_are_still_not_the_hosts() {
    let tmp = TempDir::new("ns-caps");
    let root = busybox_copy(tmp.path());
    let o = run_in(
        &root,
        &["-U", "--capability=all", "-q"],
        "grep CapEff /proc/self/status; \
         mkdir -p /mnt/p /mnt/s; \
         mount -t proc proc /mnt/p 2>/dev/null && echo 1 > /mnt/p/sys/kernel/core_pattern 2>/dev/null && echo CORE-VIA-FRESH-PROC; \
         mount -t sysfs sysfs /mnt/s 2>/dev/null && echo MOUNTED-SYSFS; \
         mknod /tmp/vda b 254 0 2>/dev/null && echo MKNOD; \
         insmod /nonexistent.ko 2>/dev/null; echo 1 > /proc/sys/kernel/core_pattern 2>/dev/null && echo CORE; \
         echo done",
    );
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.ends_with("done\n"), "{o:?}");
    for bad in ["CORE-VIA-FRESH-PROC", "MOUNTED-SYSFS", "MKNOD", "CORE"] {
        assert!(!o.stdout.contains(bad), "{bad}: {o:?}");
    }
    // The namespace's root does hold CAP_SYS_ADMIN, relative to its namespace.
    let eff = u64::from_str_radix(
        o.stdout
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap(),
        16,
    )
    .unwrap();
    assert_ne!(eff & (1 << 21), 0);
}

#[test]
fn concurrent_containers_with_one_name_get_different_ranges() {
    let tmp = TempDir::new("ns-two");
    let root = busybox_copy(tmp.path());
    let mut first = berth()
        .args([
            "run",
            "-D",
            root.to_str().unwrap(),
            "-U",
            "-M",
            "twin",
            "/bin/sh",
            "-c",
            "cat /proc/self/uid_map; exec sleep 30",
        ])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(first.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    let a: u32 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let o = run_in(
        &root,
        &["-U", "-M", "twin", "--private-users-ownership=off"],
        "cat /proc/self/uid_map",
    );
    let b = uid_map(&o).1;
    first.kill().unwrap();
    first.wait().unwrap();
    assert_ne!(a, b, "two living containers share a range");
    // A fixed range that is in use is refused.
    let mut holder = berth()
        .args([
            "run",
            "-D",
            root.to_str().unwrap(),
            "--private-users=2063597568",
            "/bin/sh",
            "-c",
            "echo up; exec sleep 30",
        ])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut up = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
        &mut up,
    )
    .unwrap();
    let o = run_in(&root, &["--private-users=2063597568"], "true");
    holder.kill().unwrap();
    holder.wait().unwrap();
    o.assert_one_line_error(125, "in use by another container");
}

#[test]
fn bad_ranges_fail_with_one_line_and_leave_nothing() {
    let tmp = TempDir::new("ns-bad");
    let root = busybox_copy(tmp.path());
    let before = host_mounts();
    let r = root.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        // Explicit ids over the host's own users; "identity" is the way to ask for those.
        (&["--private-users=0:65536"], "overlaps host user"),
        (&["--private-users=2080374784:100"], "too small"),
        (&["--private-users=2080374784:0"], "invalid"),
        (&["--private-users=4294901760:131072"], "invalid"),
        (&["--private-users=lots"], "expected no, yes"),
        (
            &["-U", "--private-users-ownership=sideways"],
            "expected off, chown",
        ),
    ];
    for (flags, needle) in cases {
        let mut args = vec!["run", "-D", r];
        args.extend_from_slice(flags);
        args.push("/bin/true");
        run_with(&args, None).assert_one_line_error(125, needle);
    }
    assert_eq!(host_mounts(), before);
    assert_eq!(
        std::fs::metadata(&root).unwrap().uid(),
        0,
        "the tree was not touched"
    );
}

/// In its own user namespace the container's root may mount, but what berth mounted before it
/// got there is locked (src/container/lock.rs): read-only stays read-only, masks stay. Runs
/// with every capability and the mount calls allowed, so only the kernel's locks refuse; the
/// tmpfs mount at the end shows that mounting as such works.
#[test]
fn the_containers_root_cannot_undo_berths_mounts() {
    let tmp = TempDir::new("ns-lock");
    let root = busybox_copy(tmp.path());
    let bind = format!("--bind-ro={}:/probe", probe().display());
    let o = run_in(
        &root,
        &[
            "-U",
            "--capability=all",
            "--system-call-filter=@mount",
            "--read-only",
            &bind,
        ],
        "for a in 'remount-rw /' 'remount-rw /sys' 'remount-rw /proc/sys' 'remount-rw /run/host' \
         'umount /proc/kallsyms' 'umount /proc/keys' 'umount /proc/sys' 'umount /run/host' \
         'mount proc /tmp'; do echo \"$a: $(/probe $a)\"; done; \
         echo \"tmpfs: $(/probe mount tmpfs /tmp)\"",
    );
    assert_eq!(o.code, 0, "{o:?}");
    for (attempt, errno) in [
        ("remount-rw /", "EPERM"),
        ("remount-rw /sys", "EPERM"),
        ("remount-rw /proc/sys", "EPERM"),
        ("remount-rw /run/host", "EPERM"),
        ("umount /proc/kallsyms", "EINVAL"),
        ("umount /proc/keys", "EINVAL"),
        ("umount /proc/sys", "EINVAL"),
        ("umount /run/host", "EINVAL"),
        // A new procfs would show what the masks hide: not while they are locked.
        ("mount proc /tmp", "EPERM"),
    ] {
        assert!(
            o.stdout.contains(&format!("{attempt}: errno={errno}")),
            "{attempt} must fail with {errno}: {o:?}"
        );
    }
    assert!(o.stdout.contains("tmpfs: ok"), "{o:?}");
}

/// On a host whose mounts are shared (every systemd host), nothing a container in a user
/// namespace mounts may reach the host's mount table: not its cgroup2 on the /sys the
/// supervisor lent it (which tucked the container's cgroup under the host's /sys/fs/cgroup and
/// kept that cgroup from ever being removed), not a mount on a bind from the host.
#[test]
fn mounts_made_inside_do_not_reach_a_shared_host() {
    let tmp = TempDir::new("ns-prop");
    let root = busybox_copy(tmp.path());
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let script = format!(
        "{berth} run --register=no -q -U -M nsprop -D {root} --pipe --bind={src}:/mnt \
         --capability=CAP_SYS_ADMIN /bin/sh -c 'mount -t tmpfs nsproptmp /mnt && echo mounted'; \
         echo rc=$?; cat /proc/self/mountinfo",
        berth = env!("CARGO_BIN_EXE_berth"),
        root = root.display(),
        src = src.display(),
    );
    let o = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "shared", "sh", "-c", &script])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("mounted\nrc=0\n"),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let leaked: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("machine-nsprop") || l.contains("nsproptmp"))
        .collect();
    assert!(leaked.is_empty(), "mounts leaked to the host: {leaked:?}");
}

/// The console is a pty bound onto /dev/console, and in a user namespace that bind is made
/// before the mounts are locked (src/container/lock.rs), so it is in the container's view.
#[test]
fn console_is_the_containers_pty_in_a_user_namespace() {
    let tmp = TempDir::new("ns-console");
    let root = busybox_copy(tmp.path());
    let o = run_in(
        &root,
        &["-U", "--console=read-only"],
        "grep -c ' /dev/console ' /proc/self/mountinfo; [ -c /dev/console ] && \
         echo via-console > /dev/console",
    );
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.starts_with("1\r\n"), "{o:?}");
    assert!(o.stdout.contains("via-console"), "{o:?}");
}
