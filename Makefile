# MaxAI Platform. `make run` runs everything in one process; `make test` runs every test.
SHELL := /bin/bash
BUF := node_modules/.bin/buf
CARGO ?= cargo

.PHONY: run test lint fmt bench demo tools buf-lint buf-breaking clean-data

## run: build and start the whole platform (SQLite under ./data, no external services)
run:
	$(CARGO) run -p maxai-platform --bin maxai -- up

## test: every test; PostgreSQL + Redis are used when reachable (required when CI=true)
test:
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast; \
	else \
		$(CARGO) test --workspace --no-fail-fast; \
	fi

## lint: formatting, clippy (warnings are errors), buf lint and buf breaking
lint: tools
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(MAKE) buf-lint buf-breaking

buf-lint: tools
	$(BUF) lint
	$(BUF) format --diff --exit-code

## buf-breaking: the contracts only grow; compared with the previous commit
buf-breaking: tools
	@if git rev-parse --verify -q HEAD~1 >/dev/null && git cat-file -e HEAD~1:buf.yaml 2>/dev/null; then \
		$(BUF) breaking --against '.git#ref=HEAD~1'; \
	else \
		echo "buf breaking: no previous commit with contracts; nothing to compare"; \
	fi

fmt:
	$(CARGO) fmt --all
	$(BUF) format -w

## demo: the agency story against a running `make run` (start it first, in another terminal)
demo:
	$(CARGO) run -q -p maxai-platform --bin maxai -- demo

## bench: release build, in-process load on 127.0.0.1, table printed and written to bench/results/
# One cargo invocation builds both binaries with one feature resolution, so the workspace is
# compiled once (built separately, the platform and the bench resolved features differently and
# a cold cache compiled it twice); the binary built is the one measured (`--maxai`).
bench:
	$(CARGO) build --release -p maxai-platform -p maxai-bench
	"$${CARGO_TARGET_DIR:-target}/release/maxai-bench" --out bench/results \
		--maxai "$${CARGO_TARGET_DIR:-target}/release/maxai"

## tools: buf from npm (package.json pins it)
tools: $(BUF)
$(BUF): package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $(BUF)

clean-data:
	rm -rf ./data
