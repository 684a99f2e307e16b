# Concierge: build, demo, test, lab, bench.
# `make demo` needs nothing but Rust; `make test` also installs and starts the Zabbix lab
# (Debian 12, root) and runs every test against it.

CARGO ?= cargo
BIN   := target/debug
SAMPLE := tests/fixtures/metrics.json

.PHONY: all build demo test lint unit lab lab-down lab-status lab-reset release static install clean bench

all: build

build:
	$(CARGO) build --workspace

## demo: discover and deliver (to stdout) the bundled sample document; no Zabbix needed
demo: build
	@echo '$$ concierge-discover timers $(SAMPLE)'
	@$(BIN)/concierge-discover timers $(SAMPLE)
	@echo
	@echo '$$ concierge-courier timers $(SAMPLE) --dry-run -s demo-app'
	@$(BIN)/concierge-courier timers $(SAMPLE) --dry-run -s demo-app

## test: lint, start the Zabbix lab, run every test (lab tests may not skip)
test: lint lab build
	CONCIERGE_REQUIRE_LAB=1 CONCIERGE_REQUIRE_DOCKER=1 $(CARGO) test --workspace

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## unit: the tests that need no lab (lab tests print SKIPPED)
unit: build
	$(CARGO) test --workspace

lab:
	bash scripts/zabbix-lab.sh up

lab-down:
	bash scripts/zabbix-lab.sh down

lab-status:
	bash scripts/zabbix-lab.sh status

lab-reset:
	bash scripts/zabbix-lab.sh reset

release:
	$(CARGO) build --workspace --release

## bench: release tools vs the talk's pipeline and zabbix_sender, on the running lab (`make lab`
## first); prints the table and rewrites BENCHMARKS.md. Not part of `make test`.
bench:
	python3 scripts/bench.py

## static: statically linked release binaries, for FROM-scratch container images
static:
	RUSTFLAGS='-C target-feature=+crt-static' $(CARGO) build --workspace --release --target x86_64-unknown-linux-gnu

PREFIX ?= /usr/local
AGENT_CONF_D ?= /etc/zabbix/zabbix_agentd.conf.d

## install: the tools into $(PREFIX)/bin, the UserParameters into the agent's conf.d
install: release
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(AGENT_CONF_D)
	install -m 0755 target/release/concierge-discover target/release/concierge-courier \
		target/release/concierge-heartbeat $(DESTDIR)$(PREFIX)/bin/
	install -m 0644 zabbix-templates/userparameter_concierge.conf $(DESTDIR)$(AGENT_CONF_D)/

clean:
	$(CARGO) clean
