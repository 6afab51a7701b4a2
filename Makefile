# SPDX-License-Identifier: MIT
# ortoo - one non-recursive Makefile.  Each directory's module.mk appends to
# SRCS (objects of the ortoo binary and its library), UNIT_TESTS (cmocka test
# programs, one per source file) and BENCH_BINS.
#
#   make                  build ./ortoo (MODE=release: -O2 -g)
#   make MODE=asan test   ASan+UBSan build, unit tests then e2e tests
#   make run              deps, build, start on a generated dev config
#   make test             deps, build, unit tests, e2e tests (both io backends)
#   make TLS=boringssl check-tls   the TLS layer and its unit test on BoringSSL
#   make bench            benchmarks (QUICK=1 for a short run)

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
LIBS := -luring -lssl -lcrypto -lsodium -linih
TEST_LIBS := -lcmocka

SRCS :=
MAIN_SRCS :=
UNIT_TESTS :=
BENCH_BINS :=

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
LIB := $(BUILD)/libortoo.a
BIN := $(BUILD)/ortoo
UNIT_BINS := $(UNIT_TESTS:%=$(BUILD)/%)

.PHONY: all deps run test unit e2e bench fuzz fmt clean check-tls bench-bins
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
	@bash .ci/deps

unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; $$t; done

e2e: $(BIN)
	ORTOO_BIN=$(abspath $(BIN)) $(PY) -m pytest -q -p no:cacheprovider tests/e2e $(PYTEST_ARGS)

test: deps
	$(MAKE) all
	$(MAKE) unit
	$(MAKE) TLS=boringssl check-tls
	$(MAKE) e2e

run: deps
	$(MAKE) MODE=release all
	./ortoo -c var/dev init dev.test --dev --hostname localhost --if-missing
	./ortoo -c var/dev serve

bench: deps
	$(MAKE) MODE=release all bench-bins
	bash bench/run.sh $(if $(QUICK),--quick,)

bench-bins: $(BENCH_BINS:%=$(BUILD)/%)

fuzz:
	@bash .ci/deps fuzz
	$(MAKE) fuzz-run

fmt:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build ortoo

# BoringSSL build of the TLS layer (RECIPES.md: Debian's android-libboringssl-dev).
BSSL_CFLAGS := -I/usr/include/android
BSSL_LIBS := -L/usr/lib/x86_64-linux-gnu/android -Wl,-rpath,/usr/lib/x86_64-linux-gnu/android -lssl -lcrypto
check-tls:
ifeq ($(TLS),boringssl)
	@mkdir -p build/boringssl
	$(CC) $(CFLAGS_BASE) -O1 -g $(BSSL_CFLAGS) -o build/boringssl/test_tls \
	    tests/unit/io/test_tls.c io/tls.c io/log.c $(BSSL_LIBS) $(TEST_LIBS)
	build/boringssl/test_tls
else
	$(MAKE) $(BUILD)/tests/unit/io/test_tls
	$(BUILD)/tests/unit/io/test_tls
endif

-include $(shell find build -name '*.d' 2>/dev/null)
