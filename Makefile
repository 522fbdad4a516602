# berth's task runner. The two commands a fresh Debian/Ubuntu machine needs:
#   make demo   build berth and the busybox image, run a container that shows its isolated view
#   make test   every test (needs root, as CI runs it)

PREFIX  ?= /usr/local
BUILD   ?= build
# The shipped binary is static: no dynamic loader at start, and a supervisor that stays under
# 2 MiB resident (libc's shared text no longer counts against it).
TARGET  := $(shell rustc -vV | sed -n 's/^host: //p')
BERTH   := target/$(TARGET)/release/berth
IMAGE   := $(BUILD)/images/busybox
CARGO   ?= cargo

.PHONY: all deps build image demo test check bench man install clean

all: build

deps:
	.ci/install-deps

build: deps
	LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH=$$(dirname $$(gcc -print-file-name=libseccomp.a)) \
	    RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --release --target $(TARGET)

image: deps
	images/busybox/build $(IMAGE)

demo: build image
	$(BERTH) run -D $(IMAGE) -M demo --pipe /bin/sh -c '\
	    echo "I am PID $$$$ on host $$(hostname), uid $$(id -u)"; \
	    echo "--- processes I can see:"; ps -o pid,user,args; \
	    echo "--- my capabilities:"; grep Cap /proc/self/status; \
	    echo "--- my mounts:"; cat /proc/self/mounts; \
	    echo "--- /dev:"; ls /dev'

check: deps
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

# Debug test builds: linking a dozen test binaries with LTO costs more than it saves. Every
# failure is reported, not only the first failing binary's.
test: check
	$(CARGO) test --no-fail-fast

bench: build image
	tests/bench/start $(BERTH) $(IMAGE)
	tests/bench/registered $(BERTH) $(IMAGE)

# Rewrites man/ from the clap definitions and man pages' hand-written text (src/docs/); the
# test suite fails while the committed pages are stale.
man:
	BERTH_UPDATE_MAN=1 $(CARGO) test --bin berth man_pages

# The binary, its man pages, the completion scripts (printed by the binary itself, so they
# match it) and the systemd units, whose ExecStart names the binary where this install puts it.
MANDIR  := $(DESTDIR)$(PREFIX)/share/man
BASHDIR := $(DESTDIR)$(PREFIX)/share/bash-completion/completions
ZSHDIR  := $(DESTDIR)$(PREFIX)/share/zsh/site-functions
FISHDIR := $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d
UNITDIR := $(DESTDIR)$(PREFIX)/lib/systemd/system

install: build
	install -Dm755 $(BERTH) $(DESTDIR)$(PREFIX)/bin/berth
	install -d $(MANDIR)/man1 $(MANDIR)/man8 $(BASHDIR) $(ZSHDIR) $(FISHDIR)
	install -m644 man/*.1 $(MANDIR)/man1/
	if ls man/*.8 >/dev/null 2>&1; then install -m644 man/*.8 $(MANDIR)/man8/; fi
	$(BERTH) completion bash > $(BASHDIR)/berth
	$(BERTH) completion zsh > $(ZSHDIR)/_berth
	$(BERTH) completion fish > $(FISHDIR)/berth.fish
	for u in units/*; do sed 's|/usr/local/bin/berth|$(PREFIX)/bin/berth|' $$u \
	    | install -Dm644 /dev/stdin $(UNITDIR)/$$(basename $$u); done

clean:
	rm -rf $(BUILD)
