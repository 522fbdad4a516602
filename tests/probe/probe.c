/* probe: one escape attempt from inside a container, for berth's security tests.
 *
 * Usage: probe ATTEMPT [ARGS...]
 * Prints one line, "ok" if the attempt succeeded (exit 0) or "errno=NAME" if it failed
 * (exit 1); 2 for a usage error. The tests build it with `gcc -static -O2` at run time.
 *
 * Attempts (raw system calls, no libc wrappers that could hide the errno):
 *   keyctl | add_key | bpf | perf_event_open | userfaultfd | kexec_load | init_module |
 *   finit_module | open_by_handle_at | unshare-user | unshare-ns | clone3 | clone-newuser
 *   mount TYPE DIR [DATA]      mount a fresh file system (proc, sysfs, tmpfs, cgroup, ...)
 *   remount-rw DIR             make a read-only mount read-write
 *   umount PATH                detach a mount (e.g. a masked /proc file)
 *   write PATH TEXT            open for writing and write TEXT
 *   read PATH                  open and read; reading nothing counts as failure (ENODATA)
 *   mknod-blk PATH MAJ MIN     make a block device node and open it read-write
 *   mknod-chr PATH MAJ MIN     the same with a character device node
 *   ptrace PID | kill PID      attach to / signal 0 another process
 *   fd N                       use an inherited descriptor N (fstat)
 *   cwd-escape                 climb above / from the working directory (EXDEV if it stays)
 *   i386 CALL | x32 CALL       CALL (keyctl, unshare-user, bpf, kexec_load, init_module,
 *                              mount, userfaultfd, getpid) through the i386 (int $0x80) or
 *                              x32 (nr | 0x40000000) ABI
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *errname(int e)
{
	switch (e) {
#define E(x) case x: return #x
	E(EPERM); E(ENOENT); E(ESRCH); E(EIO); E(ENXIO); E(EBADF); E(ECHILD); E(EAGAIN);
	E(ENOMEM); E(EACCES); E(EFAULT); E(EBUSY); E(EEXIST); E(EXDEV); E(ENODEV); E(ENOTDIR);
	E(EISDIR); E(EINVAL); E(EMFILE); E(ENOSPC); E(EROFS); E(ENOSYS); E(ENODATA);
	E(EOPNOTSUPP); E(EAFNOSUPPORT); E(ENOEXEC); E(ESTALE); E(ENOKEY); E(ELOOP);
#undef E
	default: return "E?";
	}
}

static int report(long r)
{
	if (r >= 0) {
		puts("ok");
		return 0;
	}
	printf("errno=%s\n", errname(errno));
	return 1;
}

static int fail(int e)
{
	errno = e;
	return report(-1);
}

/* i386 ABI from a 64-bit process: int $0x80 with 32-bit registers and i386 numbers. */
static long sys_i386(long nr, long a, long b, long c, long d)
{
	long r;
	__asm__ volatile("int $0x80"
			 : "=a"(r)
			 : "a"(nr), "b"(a), "c"(b), "d"(c), "S"(d)
			 : "memory");
	if (r < 0 && r > -4096) {
		errno = -r;
		return -1;
	}
	return r;
}

#define X32_BIT 0x40000000L

struct abi_call { const char *name; long x32_nr, i386_nr, a, b, c, d; };

/* Arguments make the call fail harmlessly (EFAULT, EINVAL) if a filter lets it through. */
static const struct abi_call abi_calls[] = {
	{ "keyctl",       SYS_keyctl,      288, 0 /* GET_KEYRING_ID */, -3, 0, 0 },
	{ "unshare-user", SYS_unshare,     310, CLONE_NEWUSER, 0, 0, 0 },
	{ "bpf",          SYS_bpf,         357, 0, 0, 0, 0 },
	{ "kexec_load",   528,             283, 0, 0, 0, 0xdead0000 },
	{ "init_module",  SYS_init_module, 128, 0, 0, 0, 0 },
	{ "mount",        SYS_mount,       21,  0, 0, 0, 0 },
	{ "userfaultfd",  SYS_userfaultfd, 374, O_CLOEXEC, 0, 0, 0 },
	{ "getpid",       SYS_getpid,      20,  0, 0, 0, 0 },
};

static int other_abi(const char *abi, const char *name)
{
	for (size_t i = 0; i < sizeof abi_calls / sizeof abi_calls[0]; i++) {
		const struct abi_call *c = &abi_calls[i];
		if (strcmp(c->name, name) != 0)
			continue;
		if (strcmp(abi, "i386") == 0)
			return report(sys_i386(c->i386_nr, c->a, c->b, c->c, c->d));
		return report(syscall(c->x32_nr | X32_BIT, c->a, c->b, c->c, c->d));
	}
	fprintf(stderr, "probe: unknown %s call %s\n", abi, name);
	return 2;
}

/* Runs a clone-like call; a child that appears exits at once. */
static int forked(long r)
{
	if (r == 0)
		_exit(0);
	if (r > 0)
		waitpid(r, NULL, __WALL);
	return report(r);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: probe ATTEMPT [ARGS...]\n");
		return 2;
	}
	const char *a = argv[1];
	const char *x = argc > 2 ? argv[2] : "", *y = argc > 3 ? argv[3] : "";
	const char *z = argc > 4 ? argv[4] : "";

	if (!strcmp(a, "keyctl"))
		return report(syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3 /* session */, 1));
	if (!strcmp(a, "add_key"))
		return report(syscall(SYS_add_key, "user", "berth-probe", "x", 1, -3));
	if (!strcmp(a, "bpf")) {
		unsigned int attr[16] = { 2 /* ARRAY */, 4, 4, 1 }; /* BPF_MAP_CREATE */
		return report(syscall(SYS_bpf, 0, attr, sizeof attr));
	}
	if (!strcmp(a, "perf_event_open")) {
		unsigned int attr[32] = { 1 /* SOFTWARE */, sizeof attr, 0 /* CPU_CLOCK */ };
		return report(syscall(SYS_perf_event_open, attr, 0, -1, -1, 0));
	}
	if (!strcmp(a, "userfaultfd"))
		return report(syscall(SYS_userfaultfd, O_CLOEXEC));
	if (!strcmp(a, "kexec_load"))
		return report(syscall(SYS_kexec_load, 0, 0, NULL, 0xdead0000UL));
	if (!strcmp(a, "init_module"))
		return report(syscall(SYS_init_module, "\0asm", 4, ""));
	if (!strcmp(a, "finit_module")) {
		int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
		return report(syscall(SYS_finit_module, fd, "", 0));
	}
	if (!strcmp(a, "open_by_handle_at")) {
		/* "shocker": a handle for the root inode of the file system "." lives on. */
		struct { unsigned int bytes; int type; unsigned char h[128]; } fh = { .bytes = 128 };
		int mnt;
		if (syscall(SYS_name_to_handle_at, AT_FDCWD, "/", &fh, &mnt, 0) < 0)
			return report(-1);
		int dir = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		return report(syscall(SYS_open_by_handle_at, dir, &fh, O_RDONLY));
	}
	if (!strcmp(a, "unshare-user"))
		return report(syscall(SYS_unshare, CLONE_NEWUSER));
	if (!strcmp(a, "unshare-ns"))
		return report(syscall(SYS_unshare, CLONE_NEWNS));
	if (!strcmp(a, "clone3")) {
		struct clone_args ca = { .exit_signal = SIGCHLD };
		return forked(syscall(SYS_clone3, &ca, sizeof ca));
	}
	if (!strcmp(a, "clone-newuser"))
		return forked(syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0));
	if (!strcmp(a, "mount"))
		return report(syscall(SYS_mount, "berth-probe", y, x, 0, *z ? z : NULL));
	if (!strcmp(a, "remount-rw"))
		return report(syscall(SYS_mount, NULL, x, NULL, MS_REMOUNT | MS_BIND, NULL));
	if (!strcmp(a, "umount"))
		return report(syscall(SYS_umount2, x, MNT_DETACH));
	if (!strcmp(a, "write")) {
		int fd = open(x, O_WRONLY | O_CLOEXEC);
		if (fd < 0)
			return report(-1);
		return report(write(fd, y, strlen(y)));
	}
	if (!strcmp(a, "read")) {
		char buf[256];
		int fd = open(x, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return report(-1);
		long n = read(fd, buf, sizeof buf);
		return n == 0 ? fail(ENODATA) : report(n);
	}
	if (!strcmp(a, "mknod-blk") || !strcmp(a, "mknod-chr")) {
		mode_t type = a[6] == 'b' ? S_IFBLK : S_IFCHR;
		if (mknod(x, type | 0600, makedev(atoi(y), atoi(z))) < 0)
			return report(-1);
		int fd = open(x, O_RDWR | O_CLOEXEC);
		unlink(x);
		return report(fd);
	}
	if (!strcmp(a, "ptrace")) {
		long r = syscall(SYS_ptrace, 0x4206 /* PTRACE_SEIZE */, atoi(x), 0, 0);
		if (r == 0)
			syscall(SYS_ptrace, 17 /* PTRACE_DETACH */, atoi(x), 0, 0);
		return report(r);
	}
	if (!strcmp(a, "kill"))
		return report(kill(atoi(x), 0));
	if (!strcmp(a, "fd")) {
		struct stat st;
		return report(fstat(atoi(x), &st));
	}
	if (!strcmp(a, "cwd-escape")) {
		struct stat root, here;
		for (int i = 0; i < 64; i++)
			if (chdir("..") < 0)
				return report(-1);
		if (stat("/", &root) < 0 || stat(".", &here) < 0)
			return report(-1);
		return root.st_dev == here.st_dev && root.st_ino == here.st_ino ? fail(EXDEV) : report(0);
	}
	if (!strcmp(a, "i386") || !strcmp(a, "x32"))
		return other_abi(a, x);
	fprintf(stderr, "probe: unknown attempt %s\n", a);
	return 2;
}
