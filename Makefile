# mito: `make demo` runs the system on this machine; `make test` runs every test.
CARGO ?= cargo

.PHONY: all build release test unit demo bench compat soak clean

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

# Release build measured by `mito bench` on a private PostgreSQL (see README: Performance).
bench: release
	bash tests/bench/run.sh

# Opt-in: checks wire compatibility against the released mitosis 0.6.8 (installed from
# crates.io into .compat/, which takes a while the first time).
compat: build
	bash tests/compat/run.sh

# Opt-in: ten minutes of random kill -9 of workers and a coordinator under steady load
# (MITO_SOAK_SECS=60 for a short run); prints submitted, finished, duplicated and p99.
soak:
	$(CARGO) test --test it faults::soak -- --ignored --nocapture --test-threads=1

clean:
	$(CARGO) clean
