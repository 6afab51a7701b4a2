# SPDX-License-Identifier: MIT
# ortoo - one non-recursive Makefile.  Each directory's module.mk appends to
# SRCS (objects of the ortoo binary and its library), UNIT_TESTS (cmocka test
# programs, one per source file) and BENCH_BINS.
#
#   make                  build ./ortoo (MODE=release: -O2 -g); installs nothing
#   make MODE=asan test   ASan+UBSan build, unit tests then e2e tests
#   make run              build deps, build, start on a generated dev config
#   make test             test deps, build, unit tests, e2e tests (both io backends)
#   make TLS=boringssl check-tls   the TLS layer and its unit test on BoringSSL
#   make bench            bench deps, benchmarks (QUICK=1 for a short run)
#   make fuzz             clang, then each libFuzzer target (FUZZ_SECONDS=30)
#   make deps             the packages of `make test` (.ci/deps MODE for others)
#   make fresh-check      `make test` and `make` from a clean clone in a fresh
#                         Debian 12 chroot (root, debootstrap; minutes)
#   make install          PREFIX=/usr/local DESTDIR=: binary, sendmail links,
#                         systemd unit, sysusers/tmpfiles, man pages, docs
#   make uninstall        the same files removed

.DEFAULT_GOAL := all

MODE ?= release
TLS ?= openssl
BUILD := build/$(MODE)
CC := gcc
PY := /usr/bin/python3

CFLAGS_BASE := -std=c17 -D_GNU_SOURCE -Wall -Wextra -Werror -Wno-unused-parameter \
               -I. -MMD -MP -pthread -fno-strict-aliasing
ifeq ($(MODE),release)
  CFLAGS_MODE := -O2 -g
else ifeq ($(MODE),debug)
  CFLAGS_MODE := -O0 -g3
else ifeq ($(MODE),asan)
  CFLAGS_MODE := -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all \
                 -fno-omit-frame-pointer
  LDFLAGS_MODE := -fsanitize=address,undefined
else
  $(error MODE must be release, debug or asan)
endif
CFLAGS := $(CFLAGS_BASE) $(CFLAGS_MODE) $(EXTRA_CFLAGS)
LDFLAGS := -pthread $(LDFLAGS_MODE)
LIBS := -luring -lssl -lcrypto -lsodium -linih -lunbound -lidn2
TEST_LIBS := -lcmocka

SRCS :=
MAIN_SRCS :=
UNIT_TESTS :=
BENCH_BINS :=
# Before the module.mk files: their rules name the library as a prerequisite,
# and a prerequisite is expanded when the rule is read.
LIB := $(BUILD)/libortoo.a
BIN := $(BUILD)/ortoo

include io/module.mk
include spool/module.mk
include dkim/module.mk
include resolver/module.mk
include delivery/module.mk
include core/module.mk
include cli/module.mk
include tests/unit/module.mk
include bench/module.mk
include tests/fuzz/module.mk

OBJS := $(SRCS:%.c=$(BUILD)/%.o)
MAIN_OBJS := $(MAIN_SRCS:%.c=$(BUILD)/%.o)
UNIT_BINS := $(UNIT_TESTS:%=$(BUILD)/%)

.PHONY: all deps run test unit e2e bench fuzz fmt clean check-tls bench-bins install uninstall \
        fresh-check
all: ortoo

ortoo: $(BIN)
ifeq ($(MODE),release)
	cp -f $(BIN) ortoo
endif

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(LIB): $(OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BIN): $(MAIN_OBJS) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $(MAIN_OBJS) $(LIB) $(LIBS)

# A unit test is tests/unit/<module>/test_<file>.c; it may #include the
# source file it tests to reach statics, and links the library for the rest.
$(BUILD)/tests/unit/%: tests/unit/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(LIB) $(LDFLAGS) $(LIBS) $(TEST_LIBS)

deps:
	@bash .ci/deps test

unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; $$t; done

e2e: $(BIN)
	ORTOO_BIN=$(abspath $(BIN)) $(PY) -m pytest -q -p no:cacheprovider tests/e2e $(PYTEST_ARGS)

test:
	@bash .ci/deps test
	$(MAKE) all
	$(MAKE) unit
	$(MAKE) TLS=boringssl check-tls
	$(MAKE) e2e

run:
	@bash .ci/deps build
	$(MAKE) MODE=release all
	./ortoo -c var/dev init dev.test --dev --hostname localhost --if-missing
	./ortoo -c var/dev serve

bench:
	@bash .ci/deps bench
	$(MAKE) MODE=release all bench-bins
	SCENARIOS="$(SCENARIOS)" bash bench/run.sh $(if $(QUICK),--quick,)

bench-bins: $(BENCH_BINS:%=$(BUILD)/%)

fuzz:
	@bash .ci/deps fuzz
	$(MAKE) fuzz-run

# Not part of .ci/run (too slow for CI): see README, "Working on ortoo".
fresh-check:
	bash .ci/fresh-check

fmt:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build ortoo

# ---- install ----
# Creates nothing outside $(DESTDIR) (no account, no spool, no systemctl):
# the README's install section and the unit's header say what to run then.
# Debian's places: the binary in bin (users run `ortoo send`), sendmail in
# sbin (/usr/sbin/sendmail with PREFIX=/usr) and lib (the historical
# /usr/lib/sendmail), units and sysusers/tmpfiles under lib, man pages and
# docs under share.
PREFIX ?= /usr/local
DESTDIR ?=
BINDIR := $(PREFIX)/bin
SBINDIR := $(PREFIX)/sbin
LIBDIR := $(PREFIX)/lib
MANDIR := $(PREFIX)/share/man
DOCDIR := $(PREFIX)/share/doc/ortoo
UNITDIR := $(LIBDIR)/systemd/system
INSTALL_FILES := $(BINDIR)/ortoo $(SBINDIR)/sendmail $(LIBDIR)/sendmail \
    $(UNITDIR)/ortoo.service $(LIBDIR)/sysusers.d/ortoo.conf $(LIBDIR)/tmpfiles.d/ortoo.conf \
    $(MANDIR)/man8/ortoo.8 $(MANDIR)/man5/ortoo.conf.5 \
    $(DOCDIR)/README.md $(DOCDIR)/config.md $(DOCDIR)/setup.md $(DOCDIR)/control.md \
    $(DOCDIR)/doctor.md $(DOCDIR)/metrics.md

install: all
	@test -x ortoo || { echo "make install: ./ortoo is missing (MODE=release builds it)"; exit 1; }
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SBINDIR) $(DESTDIR)$(LIBDIR) \
	    $(DESTDIR)$(UNITDIR) $(DESTDIR)$(LIBDIR)/sysusers.d $(DESTDIR)$(LIBDIR)/tmpfiles.d \
	    $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(DOCDIR)
	install -m 0755 ortoo $(DESTDIR)$(BINDIR)/ortoo
	ln -sfn $(shell realpath -m --relative-to=$(SBINDIR) $(BINDIR)/ortoo) $(DESTDIR)$(SBINDIR)/sendmail
	ln -sfn $(shell realpath -m --relative-to=$(LIBDIR) $(SBINDIR)/sendmail) $(DESTDIR)$(LIBDIR)/sendmail
	sed 's|/usr/local/bin/ortoo|$(BINDIR)/ortoo|g' systemd/ortoo.service > $(DESTDIR)$(UNITDIR)/ortoo.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/ortoo.service
	install -m 0644 systemd/ortoo.sysusers $(DESTDIR)$(LIBDIR)/sysusers.d/ortoo.conf
	install -m 0644 systemd/ortoo.tmpfiles $(DESTDIR)$(LIBDIR)/tmpfiles.d/ortoo.conf
	install -m 0644 man/ortoo.8 $(DESTDIR)$(MANDIR)/man8/ortoo.8
	install -m 0644 man/ortoo.conf.5 $(DESTDIR)$(MANDIR)/man5/ortoo.conf.5
	install -m 0644 README.md docs/config.md docs/setup.md docs/control.md docs/doctor.md \
	    docs/metrics.md $(DESTDIR)$(DOCDIR)/

uninstall:
	rm -f $(addprefix $(DESTDIR),$(INSTALL_FILES))
	-rmdir $(DESTDIR)$(DOCDIR) 2>/dev/null

# BoringSSL build of the TLS layer (Debian's android-libboringssl-dev).
BSSL_CFLAGS := -I/usr/include/android
BSSL_LIBS := -L/usr/lib/x86_64-linux-gnu/android -Wl,-rpath,/usr/lib/x86_64-linux-gnu/android -lssl -lcrypto
check-tls:
ifeq ($(TLS),boringssl)
	@mkdir -p build/boringssl
	$(CC) $(CFLAGS_BASE) -O1 -g $(BSSL_CFLAGS) -o build/boringssl/test_tls \
	    tests/unit/io/test_tls.c io/tls.c io/log.c io/metrics.c io/text.c $(BSSL_LIBS) $(TEST_LIBS)
	build/boringssl/test_tls
else
	$(MAKE) $(BUILD)/tests/unit/io/test_tls
	$(BUILD)/tests/unit/io/test_tls
endif

-include $(shell find build -name '*.d' 2>/dev/null)
