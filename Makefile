# mito: `make demo` runs the system on this machine; `make test` runs every test.
CARGO ?= cargo

.PHONY: all build release test unit demo bench bench-compare bench-deep compat soak dist deb package-test clean

all: build

build:
	$(CARGO) build

release:
	$(CARGO) build --release

# Unit tests, doc tests and the integration suite (tests/it). The suite starts its own
# PostgreSQL (initdb in a temp dir on a free port) unless MITO_TEST_DATABASE_URL is set.
test:
	$(CARGO) test --all-targets -- --test-threads=4
	$(CARGO) test --doc

unit:
	$(CARGO) test --lib

# Starts PostgreSQL (installing it if missing), a coordinator, and shows it working.
demo: build
	bash packaging/demo.sh

# The release code (profile `profiling`: release with its symbols, for callgrind) measured
# by `mito bench` on a private PostgreSQL: absolute rates, the database's own ceiling
# (pgbench), statements, system CPU and context switches per task, and instructions per
# task under callgrind (MITO_BENCH_INSTRUCTIONS=0 skips those); see README: Performance.
bench:
	$(CARGO) build --profile profiling
	bash tests/bench/run.sh

# Opt-in: the same `mito bench` load against mito and the released mitosis 0.6.8 in turn,
# then mito/mitosis ratios (installs mitosis into .compat/ first if missing, as make compat).
bench-compare:
	$(CARGO) build --profile profiling
	bash tests/bench/compare.sh

# Opt-in, about 10 minutes: the claim, `tasks query` and the per-group stats with
# 1,100,000 queued tasks in 100 groups and an archive of 10,000,000 (README: Performance).
bench-deep: release
	bash tests/bench/deep.sh

# Opt-in: checks wire compatibility against the released mitosis 0.6.8 (installed from
# crates.io into .compat/, which takes a while the first time).
compat: build
	bash tests/compat/run.sh

# Opt-in: ten minutes of random kill -9 of workers and a coordinator under steady load
# (MITO_SOAK_SECS=60 for a short run); prints submitted, finished, duplicated and p99.
soak:
	$(CARGO) test --test it faults::soak -- --ignored --nocapture --test-threads=1

# The static x86_64 musl binary, packed with README, LICENSE, config and systemd units:
# dist/mito-<version>-x86_64-unknown-linux-musl.tar.gz (README: Install).
dist:
	bash packaging/dist.sh

# dist/mito_<version>-1_amd64.deb (dpkg-deb only) around the binary `make dist` built.
deb: dist
	bash packaging/deb.sh

# Root only, on a throwaway machine: runs the static binary alone in an empty root, then
# installs the .deb with dpkg, runs its units' commands, and purges it.
package-test: deb
	bash tests/packaging/run.sh

clean:
	$(CARGO) clean
