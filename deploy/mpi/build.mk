# deploy/mpi/build.mk - shoal-mpi (the mpirun bootstrap, like dask-mpi) and
# libshoal_mpi (include/shoal_mpi.h: the C call for MPI programs).  Built with
# Open MPI's compiler flags (mpicc --showme), so `make deps` installs it.
#
#   bin/shoal-mpi                       the launcher
#   lib/libshoal_mpi.{a,so}             the C call (link -lshoal_mpi -lshoal + MPI, any order)
#   build/deploy/mpi/shoal-mpi-testprog an MPI test program for tests/test_deploy_mpi.c

# The main Makefile sets .DEFAULT_GOAL := all, so the rules below may come
# before its own.

DEPLOY_BINS += bin/shoal-mpi
DEPLOY_PKGS += libopenmpi-dev openmpi-bin

MPI_HAVE_MPICC := $(shell command -v mpicc 2>/dev/null)
# -isystem: MPI's headers are not ours to hold to -Werror.
MPI_CFLAGS := $(if $(MPI_HAVE_MPICC),$(patsubst -I%,-isystem %,$(shell mpicc --showme:compile 2>/dev/null)))
MPI_LIBS   := $(if $(MPI_HAVE_MPICC),$(shell mpicc --showme:link 2>/dev/null))
# Debian's Open MPI uses the system libevent, and libev exports libevent's
# names too (event_add...): a program with both would give Open MPI whichever
# the loader meets first, and libev's crashes MPI_Init.  Nothing here links
# libev: libshoal does not use it (its I/O thread runs on zmq_poll), and the
# MPI programs are linked with LIB_LDLIBS, the libraries without -lev.

MPI_LIB_OBJ  := build/deploy/mpi/mpirole.o build/deploy/mpi/shoal_mpi.o
MPI_LIB_OUT  := lib/libshoal_mpi.a lib/libshoal_mpi.so
MPI_TESTPROG := build/deploy/mpi/shoal-mpi-testprog

.PHONY: shoal-mpi-check install-mpi

all: $(MPI_LIB_OUT)

shoal-mpi-check:
	@command -v mpicc >/dev/null 2>&1 || { \
	  echo "shoal-mpi needs Open MPI's mpicc: run 'make deps'" \
	       "(or apt-get install libopenmpi-dev openmpi-bin)" >&2; exit 1; }

build/deploy/mpi/%.o: deploy/mpi/%.c | shoal-mpi-check
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(MPI_CFLAGS) -Ideploy/mpi -MMD -MP -c $< -o $@

bin/shoal-mpi: build/deploy/mpi/main.o build/deploy/mpi/mpirole.o build/libshoal_common.a
	@mkdir -p bin
	$(CC) $(LDFLAGS) -o $@ $^ $(MPI_LIBS) $(LIB_LDLIBS)

# The static library carries the log and util modules it uses: libshoal.so
# exports only the public API (shoal_*).  With libshoal.a as well, the
# linker takes each from whichever archive it meets first (same code).
MPI_LIB_COMMON := build/common/log.o build/common/util.o
lib/libshoal_mpi.a: $(MPI_LIB_OBJ) $(MPI_LIB_COMMON)
	@mkdir -p lib
	rm -f $@ && ar rcs $@ $^

# The shared one carries its own copy of them, hidden (--exclude-libs).
lib/libshoal_mpi.so: $(MPI_LIB_OBJ) build/libshoal_common.a
	@mkdir -p lib
	$(CC) -shared -Wl,-soname,libshoal_mpi.so $(LDFLAGS) -o $@ $(MPI_LIB_OBJ) \
	      build/libshoal_common.a -Wl,--exclude-libs,ALL $(MPI_LIBS) $(LIB_LDLIBS)

$(MPI_TESTPROG): build/deploy/mpi/test_prog.o lib/libshoal_mpi.so lib/libshoal.so
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $< -Llib -lshoal -lshoal_mpi \
	      -Wl,-rpath,'$$ORIGIN/../../../lib' \
	      $(MPI_LIBS) $(LIB_LDLIBS)

# The end-to-end test runs the test program (and bin/shoal-mpi, in `all`).
build/test/e2e/test_deploy_mpi: $(MPI_TESTPROG)
build/test/e2e/test_deploy_mpi_slurm: bin/shoal-mpi bin/shoal-scheduler bin/shoal-worker build/examples/primes build/examples/libprimes.so

install: install-mpi
install-mpi: $(MPI_LIB_OUT)
	install -d $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include
	install -m 755 lib/libshoal_mpi.so $(DESTDIR)$(PREFIX)/lib/
	install -m 644 lib/libshoal_mpi.a $(DESTDIR)$(PREFIX)/lib/
	install -m 644 include/shoal_mpi.h $(DESTDIR)$(PREFIX)/include/
