# shoal: plain Makefile.  `make` builds everything, `make check` runs every test,
# `make demo` runs the examples on a local cluster.  Both install missing Debian
# packages first (tools/deps.sh).
#
# Layout of the build:
#   build/common/*.o      common/ modules, archived into build/libshoal_common.a
#   lib/libshoal.{so,a}   client library = common + client/*.c (minus the CLI)
#   bin/                  shoal-scheduler, shoal-worker, shoal
#   build/test/           unit tests (*/test/*.c) and end-to-end tests (tests/*.c)
#   build/examples/       example task libraries and client programs

.DEFAULT_GOAL := all
PREFIX  ?= /usr/local
CC      ?= cc
PKGS    := libzmq msgpack
OPT     ?= -O2
SAN     ?=
CFLAGS  ?=
CFLAGS  += -std=gnu11 $(OPT) -g -Wall -Wextra -Werror -Wno-missing-field-initializers \
           -fPIC -pthread -Iinclude -Icommon $(SAN) \
           $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS  := $(shell pkg-config --libs $(PKGS) 2>/dev/null || echo -lzmq -lmsgpackc) -lev -lpthread -ldl -lm
# The client library links no libev: libev exports libevent's function names,
# and an MPI program (Open MPI uses the system libevent) would get libev's.
LIB_LDLIBS := $(filter-out -lev,$(LDLIBS))
LDFLAGS += $(SAN) -pthread
CHECK_LIBS := $(shell pkg-config --libs check 2>/dev/null || echo -lcheck -lsubunit -lrt -lm)

COMMON_SRC := $(wildcard common/*.c)
SCHED_SRC  := $(wildcard scheduler/*.c)
WORKER_SRC := $(wildcard worker/*.c)
CLI_SRC    := client/cli.c
LIB_SRC    := $(filter-out $(CLI_SRC),$(wildcard client/*.c))

obj = $(patsubst %.c,build/%.o,$(1))
COMMON_OBJ := $(call obj,$(COMMON_SRC))
SCHED_OBJ  := $(call obj,$(SCHED_SRC))
WORKER_OBJ := $(call obj,$(WORKER_SRC))
LIB_OBJ    := $(call obj,$(LIB_SRC))
CLI_OBJ    := $(call obj,$(CLI_SRC))

# The client library's share of common/: all but zwatch.o (the libev glue,
# which only the scheduler and worker use, through build/libshoal_common.a).
LIB_COMMON_OBJ := $(filter-out build/common/zwatch.o,$(COMMON_OBJ))
# libshoal.so exports the public API (shoal_*) and nothing else.
LIB_MAP := client/libshoal.map

# Module objects without their main(), for the unit tests that sit beside them.
SCHED_LIBOBJ  := $(filter-out build/scheduler/main.o,$(SCHED_OBJ))
WORKER_LIBOBJ := $(filter-out build/worker/main.o,$(WORKER_OBJ))

BINS := bin/shoal-scheduler bin/shoal-worker bin/shoal
LIBS := lib/libshoal.so lib/libshoal.a

UNIT_SRC := $(wildcard common/test/*.c scheduler/test/*.c worker/test/*.c client/test/*.c)
UNIT_BIN := $(patsubst %.c,build/test/%,$(subst /test/,/,$(UNIT_SRC)))
E2E_SRC  := $(wildcard tests/*.c)
E2E_BIN  := $(patsubst tests/%.c,build/test/e2e/%,$(E2E_SRC))
TEST_HELPER_SRC := $(wildcard tests/lib/*.c)
TEST_HELPER_OBJ := $(call obj,$(TEST_HELPER_SRC))

EX_LIB_SRC := $(wildcard examples/*/tasks.c)
EX_LIBS    := $(patsubst examples/%/tasks.c,build/examples/lib%.so,$(EX_LIB_SRC))
EX_BIN_SRC := $(wildcard examples/*/main.c)
EX_BINS    := $(patsubst examples/%/main.c,build/examples/%,$(EX_BIN_SRC))
# Task libraries used only by the tests.
TLIB_SRC   := $(wildcard tests/tasklibs/*.c)
TLIBS      := $(patsubst tests/tasklibs/%.c,build/test/lib%.so,$(TLIB_SRC))

# Each launcher in deploy/NAME/ contributes a build.mk that adds its programs to
# DEPLOY_BINS (installed with the rest) and may add packages to DEPLOY_PKGS.
DEPLOY_BINS :=
DEPLOY_PKGS :=
include $(wildcard deploy/*/build.mk)

.PHONY: all deps check unit e2e demo asan ubsan valgrind install clean lint examples bench bench-quick
all: $(BINS) $(LIBS) $(EX_LIBS) $(EX_BINS) $(TLIBS) $(DEPLOY_BINS)

deps:
	@SHOAL_EXTRA_PKGS="$(DEPLOY_PKGS)" sh tools/deps.sh

build/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

build/libshoal_common.a: $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

lib/libshoal.a: $(LIB_COMMON_OBJ) $(LIB_OBJ)
	@mkdir -p lib
	rm -f $@ && ar rcs $@ $^

lib/libshoal.so: $(LIB_COMMON_OBJ) $(LIB_OBJ) $(LIB_MAP)
	@mkdir -p lib
	$(CC) -shared -Wl,-soname,libshoal.so -Wl,--version-script=$(LIB_MAP) $(LDFLAGS) -o $@ \
	      $(LIB_COMMON_OBJ) $(LIB_OBJ) $(LIB_LDLIBS)

# The executables export their symbols (-rdynamic) is not needed: task libraries
# use only the header-only API of shoal_task.h.
bin/shoal-scheduler: $(SCHED_OBJ) build/libshoal_common.a
	@mkdir -p bin
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

bin/shoal-worker: $(WORKER_OBJ) build/libshoal_common.a
	@mkdir -p bin
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

bin/shoal: $(CLI_OBJ) lib/libshoal.a
	@mkdir -p bin
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Task libraries: plain shared objects exporting `shoal_tasks`.
build/examples/lib%.so: examples/%/tasks.c include/shoal_task.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -shared -o $@ $< $(LDLIBS)

build/test/lib%.so: tests/tasklibs/%.c include/shoal_task.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -shared -o $@ $< $(LDLIBS)

# Example client programs link the shared client library; the rpath lets them
# (and libshoal's local-cluster launcher, which finds bin/ next to lib/) run in tree.
build/examples/%: examples/%/main.c examples/example.h lib/libshoal.so
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< -Llib -lshoal -Wl,-rpath,'$$ORIGIN/../../lib' $(LDLIBS)

build/test/common/%: common/test/%.c build/libshoal_common.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(CHECK_LIBS) $(LDLIBS)

build/test/scheduler/%: scheduler/test/%.c $(SCHED_LIBOBJ) build/libshoal_common.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Ischeduler $(LDFLAGS) -o $@ $^ $(CHECK_LIBS) $(LDLIBS)

build/test/worker/%: worker/test/%.c $(WORKER_LIBOBJ) build/libshoal_common.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Iworker $(LDFLAGS) -o $@ $^ $(CHECK_LIBS) $(LDLIBS)

build/test/client/%: client/test/%.c lib/libshoal.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Iclient $(LDFLAGS) -o $@ $^ $(CHECK_LIBS) $(LDLIBS)

# libshoal.so exports only the public API: an end-to-end test that also uses
# common/ modules (proto_*, util_*...) gets its own copy from the archive.
build/test/e2e/%: tests/%.c $(TEST_HELPER_OBJ) lib/libshoal.so build/libshoal_common.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/lib $(LDFLAGS) -o $@ $< $(TEST_HELPER_OBJ) -Llib -lshoal \
	      build/libshoal_common.a -Wl,-rpath,'$$ORIGIN/../../../lib' $(CHECK_LIBS) $(LDLIBS)

# Test helper objects are prerequisites of every e2e test; keep make from
# deleting them as intermediates.
.SECONDARY: $(TEST_HELPER_OBJ)

examples: $(EX_LIBS) $(EX_BINS)

unit: all $(UNIT_BIN)
	@sh tools/runtests.sh $(UNIT_BIN)

e2e: all $(E2E_BIN)
	@sh tools/runtests.sh $(E2E_BIN)

# `make check` = install what is missing, build, run every unit and end-to-end test.
check: deps
	@$(MAKE) --no-print-directory all $(UNIT_BIN) $(E2E_BIN)
	@sh tools/runtests.sh $(UNIT_BIN) $(E2E_BIN)

demo: deps
	@$(MAKE) --no-print-directory all
	@sh examples/run-demo.sh

# Benchmarks against Dask distributed, same layout, same run (bench/run.sh
# installs python3-distributed and gnuplot if missing).  Results: bench/results.*
bench:
	@sh bench/run.sh

bench-quick:
	@sh bench/run.sh --quick

asan:
	@$(MAKE) --no-print-directory clean
	@$(MAKE) --no-print-directory check OPT=-O1 SAN="-fsanitize=address,undefined -fno-omit-frame-pointer"

ubsan:
	@$(MAKE) --no-print-directory clean
	@$(MAKE) --no-print-directory check OPT=-O1 SAN="-fsanitize=undefined -fno-sanitize-recover=undefined"

valgrind: all $(UNIT_BIN) $(E2E_BIN)
	@SHOAL_VALGRIND=1 sh tools/runtests.sh $(UNIT_BIN) $(E2E_BIN)

# No banned unbounded string functions in our sources.
lint:
	@! grep -nE '\b(sprintf|vsprintf|strcpy|strcat|sscanf|gets|strtok)\s*\(' \
	    common/*.c common/*.h scheduler/*.c worker/*.c client/*.c include/*.h deploy/*/*.[ch] \
	    || (echo "banned function used (see above)"; exit 1)

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include \
	           $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 755 $(BINS) $(DEPLOY_BINS) $(DESTDIR)$(PREFIX)/bin/
	install -m 755 lib/libshoal.so $(DESTDIR)$(PREFIX)/lib/
	install -m 644 lib/libshoal.a $(DESTDIR)$(PREFIX)/lib/
	install -m 644 include/shoal.h include/shoal_task.h $(DESTDIR)$(PREFIX)/include/
	sed -e 's|@PREFIX@|$(PREFIX)|g' tools/shoal.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/shoal.pc

clean:
	rm -rf build bin lib

-include $(shell find build -name '*.d' 2>/dev/null)
