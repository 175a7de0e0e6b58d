# Two commands do everything on a fresh machine: `make run` and `make test`.
# Every install step the tests need (oracles, packaging tools) lives here.

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        := .venv
PYTHON      := $(VENV)/bin/python
NODE_ORACLE := tests/oracles/node
RUN_PORT    := 7071
# The API tests spend most of their time waiting on the binaries they start (refresh intervals,
# drains, timeouts), not on the CPU: four at a time halves the suite's wall time on 2 cores.
TEST_THREADS ?= 4

.PHONY: help run test test-tools lint oracles tools package bench fuzz supply-chain soak clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

run: ## serve the app on http://127.0.0.1:7071 with local settings (func start when Core Tools is installed)
	@cargo xtask run-local --port $(RUN_PORT)

test: test-tools lint supply-chain infra-check ## everything CI runs
	cargo test --locked --benches
	RUST_TEST_THREADS=$(TEST_THREADS) cargo test --locked --workspace --lib --bins --tests

test-tools: oracles infra-tools package ## install, once, what `cargo test` checks against (SDK oracles, schemathesis, nginx, the package)

lint: ## fmt, clippy and rustdoc with warnings denied (the handler and xtask/)
	cargo fmt --all -- --check
	cargo clippy --locked --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc --locked --workspace --no-deps --quiet

oracles: $(VENV)/.installed $(NODE_ORACLE)/node_modules/.installed ## install the official Azure IoT SDKs used as test oracles

$(VENV)/.installed: tests/oracles/python/requirements.txt
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r $<
	touch $@

$(NODE_ORACLE)/node_modules/.installed: $(NODE_ORACLE)/package.json $(NODE_ORACLE)/package-lock.json
	cd $(NODE_ORACLE) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

tools: ## install what make package builds with, when missing: the Rust musl target, Debian's musl-tools
	@scripts/tools.sh

package: tools ## dist/handler.zip for zip deploy (static x86_64 Linux binary; cargo xtask package)
	@cargo xtask package

bench: ## benchmark the handler against the seed function and the loopback floor (docs/benchmarks.md)
	@bench/run.sh

fuzz: ## run each fuzz target for FUZZ_SECONDS (default 60) on nightly; prints executions reached (docs/security.md)
	@fuzz/run.sh

supply-chain: ## cargo-deny: licences, duplicate crates, bans, sources, RustSec advisories from ../shared (offline)
	@scripts/supply-chain.sh

soak: ## 60 s, 256 connections of mixed requests against the release binary: no 5xx, no drops, flat memory
	SOAK_SECONDS=$${SOAK_SECONDS:-60} SOAK_CONNECTIONS=$${SOAK_CONNECTIONS:-256} \
	  cargo test --release --locked --test api soak -- --nocapture

clean: ## remove build outputs and installed oracles
	cargo clean
	rm -rf $(VENV) .venv-infra .tools $(NODE_ORACLE)/node_modules dist fuzz/target

.PHONY: infra-check infra-tools deploy verify

infra-check: ## infra/, openapi/, azure.yaml: checkov, Bicep, policies, deploy.sh bounds, azd schema; installs the tools the infra tests use
	@infra/check.sh

infra-tools: ## only install what infra-check and the API tests use: .venv-infra (schemathesis, checkov), Debian's nginx and shellcheck
	@infra/check.sh tools

deploy: package ## deploy infra/main.bicep and dist/handler.zip with the Azure CLI (an operator's machine, never CI; infra/README.md)
	@infra/deploy.sh

verify: ## after make deploy: probe every layer of the live deployment (RESOURCE_GROUP; VERIFY_* override; infra/verify.py)
	@python3 infra/verify.py
