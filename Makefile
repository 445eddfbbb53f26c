# vfio-user DMA access modes: QEMU client series, server, tests, benchmarks.
#
#   make run            build what is missing, boot a guest whose vfio-user
#                       device is served by our server, show its DMA
#   make check          every test (qtest, guest boots, interop, the series)
#   make check-fresh    README's commands on a Debian 12 made fresh (as CI does)
#   make help           everything else
#
# See README.md and docs/.

-include config.mk

TOP := $(abspath .)
BUILD ?= $(TOP)/build
QEMU_SRC_USER ?=
PYTHON := /usr/bin/python3

QEMU_TREE := $(BUILD)/qemu/src
QEMU_BUILD := $(BUILD)/qemu/build
QEMU := $(QEMU_BUILD)/qemu-system-x86_64
# The same tree built with AddressSanitizer and UBSan, for the fuzzer.
ASAN_BUILD := $(BUILD)/qemu-asan/build
ASAN_QEMU := $(ASAN_BUILD)/qemu-system-x86_64
BASELINE_TREE := $(BUILD)/baseline/src
BASELINE_BUILD := $(BUILD)/baseline/build
BASELINE_QEMU := $(BASELINE_BUILD)/qemu-system-x86_64
PROJECT_BUILD := $(BUILD)/project
SERVER := $(PROJECT_BUILD)/server/vfio-user-dma-server
GUEST_DIR := $(BUILD)/guest
LVU_PREFIX := $(BUILD)/libvfio-user
INTEROP_SERVER := $(PROJECT_BUILD)/tests/interop/lvu-interop-server
LVU_UPSTREAM_SRC := $(BUILD)/download/libvfio-user-upstream
LVU_UPSTREAM_PREFIX := $(BUILD)/libvfio-user-upstream
INTEROP_SERVER_UPSTREAM := $(PROJECT_BUILD)/tests/interop/lvu-interop-server-upstream
PROJECT_OPTIONS := -Dlibvfio_user_prefix=$(LVU_PREFIX) \
	-Dlibvfio_user_upstream_prefix=$(LVU_UPSTREAM_PREFIX)

# Options of `make run`.
MEMORY ?= memfd
DMA_ACCESS ?= auto
RUN_ARGS ?=

# The patched, baseline and series-check trees are laid out alike
# (<dir>/src, <dir>/build) so ccache can share their objects.
export CCACHE_BASEDIR := $(BUILD)
export CCACHE_NOHASHDIR := 1
export BUILD_DIR := $(BUILD)

.PHONY: all help deps deps-check deps-bench qemu-src qemu qemu-baseline qemu-asan check-fuzz \
        qemu-with-tests qemu-qtests project libvfio-user libvfio-user-upstream \
        guest run check check-quick \
        check-series check-qtest check-qemu-qtest check-qtest-exclusions check-features \
        check-guest check-interop check-harness check-fresh check-functional export-series bench \
        clean distclean

all: qemu project

help:
	@sed -n '2,9p' Makefile | sed 's/^# \{0,1\}//'
	@echo "  make                build patched QEMU and the project's programs"
	@echo "  make qemu-src       the scratch QEMU git tree (base + one commit per patch)"
	@echo "  make export-series  write that tree's commits back to patches/"
	@echo "  make check-series   apply, checkpatch and build every patch in order"
	@echo "  make check-quick    make check without check-series"
	@echo "  make check-qemu-qtest       QEMU's own x86_64 qtests (qemu/qtest-x86_64.conf)"
	@echo "  make qemu-asan      the patched QEMU with ASan/UBSan (build/qemu-asan/build)"
	@echo "  make check-fuzz     fuzz the client with a hostile server (FUZZ_ARGS='--seed N ...')"
	@echo "  make check-functional  QEMU functional test: Linux's NVMe driver, device served by QEMU"
	@echo "  make check-qtest-exclusions the excluded ones fail the same way unpatched"
	@echo "  make bench          benchmarks (build/bench/results.{json,md,png})"
	@echo "  make run MEMORY=memfd|ram|file-private|file-shared DMA_ACCESS=auto|mmap|file-io|message RUN_ARGS=--legacy"
	@echo "  ./configure --qemu-src=DIR   use your own QEMU 10.2.x tree as the base"

deps:
	@scripts/install-deps.sh build
deps-check:
	@scripts/install-deps.sh check
deps-bench:
	@scripts/install-deps.sh bench

# The tree is (re)made from patches/ when they change; work committed in it
# but not exported is never thrown away (the script stops instead).
qemu-src: deps
	@scripts/qemu-tree.sh sync $(QEMU_TREE) $(QEMU_SRC_USER)
	@echo "scratch tree: $(QEMU_TREE) (commit there, then 'make export-series')"

qemu: qemu-src
	@scripts/build-qemu.sh $(QEMU_TREE) $(QEMU_BUILD) qemu-system-x86_64

qemu-with-tests: qemu-src
	@scripts/build-qemu.sh $(QEMU_TREE) $(QEMU_BUILD) qemu-system-x86_64 \
		tests/qtest/vfio-user-test

# Every program of QEMU's qtest-x86_64 suite (the vfio-user qtest among them).
qemu-qtests: qemu-src
	@scripts/build-qemu.sh $(QEMU_TREE) $(QEMU_BUILD) qemu-system-x86_64 @qtest-x86_64

# QEMU 10.2.2 without the series, for benchmarks.
qemu-baseline: qemu-src
	@if [ ! -e $(BASELINE_TREE)/.git ]; then \
		git -C $(QEMU_TREE) -c safe.directory='*' worktree prune; \
		git -C $(QEMU_TREE) -c safe.directory='*' worktree add -q --detach $(BASELINE_TREE) base; \
		scripts/qemu-tree.sh placeholders $(BASELINE_TREE); \
	fi
	@scripts/build-qemu.sh $(BASELINE_TREE) $(BASELINE_BUILD) qemu-system-x86_64

# The patched tree with AddressSanitizer and UBSan (tests/fuzz runs
# against it); a build directory of its own, the same compiler cache.
qemu-asan: qemu-src
	@QEMU_EXTRA_CONFIG="--enable-asan --enable-ubsan" \
		scripts/build-qemu.sh $(QEMU_TREE) $(ASAN_BUILD) qemu-system-x86_64

# libvfio-user as bundled in the QEMU base (for the interop tests only),
# taken from the base commit: the series patches QEMU's copy for QEMU's own
# vfio-user server, the interop tests describe the copy QEMU 10.2.2 ships.
# A base whose git tree lacks it (a QEMU checkout, where it is a wrap) gives
# the tree's own copy.
LVU_LEGACY_SRC := $(BUILD)/download/libvfio-user-legacy
libvfio-user: qemu-src
	@rm -rf $(LVU_LEGACY_SRC) && mkdir -p $(LVU_LEGACY_SRC)/subprojects
	@if git -C $(QEMU_TREE) -c safe.directory='*' cat-file -e \
			base:subprojects/libvfio-user/meson.build 2>/dev/null; then \
		git -C $(QEMU_TREE) -c safe.directory='*' archive base \
			subprojects/libvfio-user | tar -x -C $(LVU_LEGACY_SRC); \
	else \
		cp -a $(QEMU_TREE)/subprojects/libvfio-user $(LVU_LEGACY_SRC)/subprojects/; \
	fi
	@tests/interop/build-libvfio-user.sh $(LVU_LEGACY_SRC)/subprojects/libvfio-user $(BUILD)/libvfio-user

# Current libvfio-user at the commit tests/interop/libvfio-user-upstream.conf
# pins: from its repository, else from ../shared/libvfio-user (a warning).
libvfio-user-upstream: deps
	@scripts/fetch-libvfio-user.sh $(LVU_UPSTREAM_SRC)
	@tests/interop/build-libvfio-user.sh $(LVU_UPSTREAM_SRC)/src $(LVU_UPSTREAM_PREFIX)

# A build directory made with other options (an older checkout) is
# reconfigured rather than used as it is.
project: deps libvfio-user libvfio-user-upstream
	@if [ ! -f $(PROJECT_BUILD)/build.ninja ]; then \
		meson setup $(PROJECT_OPTIONS) $(PROJECT_BUILD) $(TOP) >/dev/null; \
	elif [ "$$(cat $(PROJECT_BUILD)/.options 2>/dev/null)" != "$(PROJECT_OPTIONS)" ]; then \
		meson configure $(PROJECT_OPTIONS) $(PROJECT_BUILD) >/dev/null; \
	fi
	@echo "$(PROJECT_OPTIONS)" > $(PROJECT_BUILD)/.options
	@ninja -C $(PROJECT_BUILD) >/dev/null

guest: deps-check project
	@guest/build-image.sh $(GUEST_DIR) $(PROJECT_BUILD)/guest/dmatest

run: deps-check qemu project guest
	@$(PYTHON) scripts/run-guest.py --qemu $(QEMU) --server $(SERVER) \
		--guest-dir $(GUEST_DIR) --memory $(MEMORY) \
		--dma-access $(DMA_ACCESS) $(RUN_ARGS)

QTEST_CONF := qemu/qtest-x86_64.conf
QTEST_EXCLUDED := $(shell awk '!/^\#/ && $$2 == "exclude" { print "tests/qtest/" $$1 }' $(QTEST_CONF))
# The hostile-server fuzzer against the sanitizer build: >= 100000 cases
# in at most 9 minutes, a fresh seed each run (printed); FUZZ_ARGS adds
# options, e.g. FUZZ_ARGS='--seed 123' to repeat a run.
FUZZ_ARGS ?=
FUZZ_SUITE = "fuzz@660=$(PYTHON) tests/fuzz/vfio-user-fuzz.py --qemu $(ASAN_QEMU) $(FUZZ_ARGS)"
QEMU_QTEST_SUITE = "qemu-qtest=$(PYTHON) scripts/run-qemu-qtests.py $(QEMU_BUILD)"
FEATURES_SUITE = "qemu-features=$(PYTHON) tests/qemu/features-test.py --qemu $(QEMU)"
# The series' test in QEMU's functional framework: an NVMe controller served
# by QEMU's x-vfio-user-server, driven by Linux in a client QEMU, with shared
# memfd RAM (mmap), plain RAM (DMA messages) and dma-access=file-io.  Its
# Debian .debs go into a cache of our own (with apt; see
# scripts/prefill-functional-assets.py), the guest image's downloads first.
FUNCTIONAL_CACHE := $(BUILD)/functional-cache
FUNCTIONAL_SUITE = "functional@900=scripts/run-functional.sh $(QEMU_TREE) $(QEMU_BUILD) $(FUNCTIONAL_CACHE) $(GUEST_DIR)/cache"

SUITES_QUICK = \
	"harness=tests/harness/harness-tests.sh" \
	"qtest=scripts/run-qtest.sh $(QEMU_BUILD)" \
	$(FEATURES_SUITE) \
	$(FUNCTIONAL_SUITE) \
	"server-proto=$(PYTHON) tests/server/protocol-tests.py --server $(SERVER)" \
	"guest-boot=$(PYTHON) tests/guest/boot-tests.py --qemu $(QEMU) --server $(SERVER) --guest-dir $(GUEST_DIR)" \
	"interop-probe=$(PYTHON) tests/interop/probe-library.py --server $(INTEROP_SERVER)" \
	"interop=$(PYTHON) tests/interop/qemu-tests.py --qemu $(QEMU) --server $(INTEROP_SERVER)" \
	$(INTEROP_UPSTREAM_SUITES) \
	"bench-smoke=$(BENCH_SMOKE)" \
	$(FUZZ_SUITE) \
	$(QEMU_QTEST_SUITE)

# Current libvfio-user: what it accepts (raw client), and QEMU against it for
# every memory backend x dma-access value (about 45 s on 2 cores).
INTEROP_UPSTREAM_SUITES = \
	"interop-upstream-probe@120=$(PYTHON) tests/interop/probe-library.py --library upstream --server $(INTEROP_SERVER_UPSTREAM)" \
	"interop-upstream@300=$(PYTHON) tests/interop/upstream-tests.py --qemu $(QEMU) --server $(INTEROP_SERVER_UPSTREAM)" \
	"interop-twin@600=$(PYTHON) tests/interop/twin-tests.py --qemu $(QEMU) --lvu-server $(INTEROP_SERVER_UPSTREAM) --dma-server $(SERVER)"

# The benchmark machinery, briefly, for its data checks (no timing claims).
BENCH_SMOKE = $(PYTHON) bench/run-bench.py --smoke --qemu $(QEMU) --baseline-qemu $(QEMU) \
	--server $(SERVER) --memcpy $(PROJECT_BUILD)/bench/memcpy-bench \
	--socket-limit $(PROJECT_BUILD)/bench/socket-limit \
	--out $(BUILD)/bench-smoke --modes mmap,file-io-fd,file-io-procmem,message,message-1sock

# The unpatched client's known failures (wrong message layout, private file
# RAM offered for mmap), asserted so that the tests are seen to catch them.
SUITE_BASELINE = \
	"guest-boot-baseline=$(PYTHON) tests/guest/boot-tests.py --baseline --qemu $(BASELINE_QEMU) --server $(SERVER) --guest-dir $(GUEST_DIR)"

check-quick: deps-check qemu-with-tests qemu-qtests qemu-asan project guest
	@$(PYTHON) scripts/run-tests.py $(SUITES_QUICK)

check: deps-check qemu-with-tests qemu-qtests qemu-baseline qemu-asan project guest
	@$(PYTHON) scripts/run-tests.py $(SUITES_QUICK) $(SUITE_BASELINE) \
		"series@14400=scripts/check-series.sh $(QEMU_TREE) $(BUILD)/series-check $(INTEROP_SERVER)"

# What CI runs: a minimal Debian 12 root made anew (debootstrap), git and make
# installed in it as README says, a clone of the committed HEAD, then
# `make run` and `make check` there.  Needs root; takes the build's full time
# (ccache is shared, so a warm cache makes it much faster).
check-fresh:
	@scripts/check-fresh.sh $(TOP)

check-series: qemu-src project
	@$(PYTHON) scripts/run-tests.py \
		"series@14400=scripts/check-series.sh $(QEMU_TREE) $(BUILD)/series-check $(INTEROP_SERVER)"

check-qtest: qemu-with-tests
	@$(PYTHON) scripts/run-tests.py "qtest=scripts/run-qtest.sh $(QEMU_BUILD)"

check-qemu-qtest: deps-check qemu-qtests
	@$(PYTHON) scripts/run-tests.py $(QEMU_QTEST_SUITE)

# The excluded qtests, on the patched and the unpatched build.
check-qtest-exclusions: deps-check qemu-qtests qemu-baseline
	@scripts/build-qemu.sh $(BASELINE_TREE) $(BASELINE_BUILD) qemu-system-x86_64 $(QTEST_EXCLUDED)
	@$(PYTHON) scripts/run-tests.py \
		"qtest-exclusions=$(PYTHON) scripts/compare-qtest-exclusions.py $(QEMU_BUILD) $(BASELINE_BUILD)"

check-fuzz: deps-check qemu-asan
	@$(PYTHON) scripts/run-tests.py $(FUZZ_SUITE)

check-features: deps-check qemu
	@$(PYTHON) scripts/run-tests.py $(FEATURES_SUITE)

check-functional: deps-check qemu
	@$(PYTHON) scripts/run-tests.py $(FUNCTIONAL_SUITE)

check-guest: deps-check qemu project guest
	@$(PYTHON) scripts/run-tests.py \
		"guest-boot=$(PYTHON) tests/guest/boot-tests.py --qemu $(QEMU) --server $(SERVER) --guest-dir $(GUEST_DIR)"

check-interop: deps-check qemu project
	@$(PYTHON) scripts/run-tests.py \
		"interop-probe=$(PYTHON) tests/interop/probe-library.py --server $(INTEROP_SERVER)" \
		"interop=$(PYTHON) tests/interop/qemu-tests.py --qemu $(QEMU) --server $(INTEROP_SERVER)" \
		$(INTEROP_UPSTREAM_SUITES)

check-harness:
	@$(PYTHON) scripts/run-tests.py "harness=tests/harness/harness-tests.sh"

export-series:
	@scripts/qemu-tree.sh export $(QEMU_TREE)

bench: deps-bench qemu qemu-baseline project
	@$(PYTHON) bench/run-bench.py --qemu $(QEMU) --baseline-qemu $(BASELINE_QEMU) \
		--server $(SERVER) --memcpy $(PROJECT_BUILD)/bench/memcpy-bench \
		--socket-limit $(PROJECT_BUILD)/bench/socket-limit --out $(BUILD)/bench

clean:
	rm -rf $(PROJECT_BUILD) $(GUEST_DIR) $(BUILD)/bench $(BUILD)/bench-smoke
	-ninja -C $(QEMU_BUILD) clean >/dev/null 2>&1

# Everything but the downloaded base; refuses to drop unexported work.
distclean:
	@if [ -d $(QEMU_TREE)/.git ] && [ -n "$$(git -C $(QEMU_TREE) -c safe.directory='*' status --porcelain --untracked-files=no)" ]; then \
		echo "distclean: $(QEMU_TREE) has uncommitted changes; export or discard them first" >&2; exit 1; fi
	rm -rf $(BUILD)/qemu $(BUILD)/qemu-asan $(BUILD)/baseline $(BUILD)/series-check $(BUILD)/project \
		$(BUILD)/guest $(BUILD)/libvfio-user $(BUILD)/libvfio-user-upstream \
		$(BUILD)/bench $(BUILD)/bench-smoke
