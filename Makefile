# Concierge: build, demo, test, lab, bench, install, deb, image.
# `make demo` needs nothing but Rust; `make test` also installs and starts the Zabbix labs (6.0, 7.0)
# (Debian 12, root) and runs every test against both.

CARGO ?= cargo
# Cargo's own variable, so that every path below follows a relocated target directory.
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
BIN   := $(TARGET_DIR)/debug
SAMPLE := tests/fixtures/metrics.json
TOOLS := concierge-discover concierge-courier concierge-heartbeat concierge-scale concierge-setup
STATIC_TARGET := x86_64-unknown-linux-gnu
STATIC_BIN := $(TARGET_DIR)/$(STATIC_TARGET)/release
# The release version (Cargo.toml) and the commit the tools say they were built from.
VERSION := $(shell sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
REVISION := $(or $(CONCIERGE_GIT_REVISION),$(shell git rev-parse --short=12 HEAD 2>/dev/null),unknown)
# Man pages are dated by the last commit, so that two builds of one commit are identical. (Not
# SOURCE_DATE_EPOCH in cargo's environment: ring's build script watches it and would rebuild.)
MAN_DATE := $(shell git log -1 --format=%cs 2>/dev/null)

.PHONY: all build demo test lint unit lab prometheus-peers compose-plugin test-swarm browser readme-screenshot lab-down lab-status lab-reset release \
	static install install-files uninstall assets deb image clean bench bench-prometheus

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

## test: lint, start both Zabbix labs, run every test against both (lab tests may not skip; a
## failing test binary does not hide the results of the others)
test: lint lab prometheus-peers compose-plugin browser build
	CONCIERGE_REQUIRE_LAB=1 CONCIERGE_REQUIRE_DOCKER=1 $(CARGO) test --workspace --no-fail-fast

## test-swarm: concierge-scale on a swarm of three Docker-in-Docker nodes (tests/swarm_multinode.rs;
## the node image, Debian's docker.io in a debootstrapped root, is built once per machine), its
## heartbeat hosts followed on both labs (started by `make lab`). Not part of `make test`:
## it takes minutes, most of them the first image build.
test-swarm: lab build
	bash scripts/swarm-node-image.sh
	CONCIERGE_REQUIRE_LAB=1 CONCIERGE_REQUIRE_DOCKER=1 $(CARGO) test -p concierge-e2e --test swarm_multinode -- --ignored

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## unit: the tests that need no lab (lab tests print SKIPPED)
unit: build
	$(CARGO) test --workspace

lab:
	bash scripts/zabbix-lab.sh up

## prometheus-peers: Debian's prometheus + node exporter and PyPI's prometheus-client, for the tests
prometheus-peers:
	bash scripts/install-prometheus-peers.sh

## compose-plugin: Docker Compose v2 as the docker CLI plugin (Debian 13's docker-compose 2.x;
## on Debian 12 the trixie .deb's plugin, beside Debian 12's docker-compose v1), for the tests
compose-plugin:
	bash scripts/install-compose-plugin.sh

## browser: Debian's headless Chromium, for the frontend test (tests/frontend_lab.rs)
browser:
	bash scripts/install-browser.sh

## readme-screenshot: the README's picture of the app dashboard, as tests/frontend_lab.rs last
## took it on the 7.0 lab (run that test first)
SCREENSHOT := $(TARGET_DIR)/frontend/app-dashboard-7.0.png
readme-screenshot:
	@test -f $(SCREENSHOT) || { echo "no $(SCREENSHOT): run cargo test --test frontend_lab first" >&2; exit 1; }
	install -D -m 0644 $(SCREENSHOT) docs/app-dashboard.png

lab-down:
	bash scripts/zabbix-lab.sh down

lab-status:
	bash scripts/zabbix-lab.sh status

lab-reset:
	bash scripts/zabbix-lab.sh reset

release:
	$(CARGO) build --release $(addprefix -p ,$(TOOLS))

## bench: release tools vs the talk's pipeline and zabbix_sender, on the running lab (`make lab`
## first); prints the table and rewrites BENCHMARKS.md. Not part of `make test`.
bench:
	python3 scripts/bench.py
	python3 scripts/bench_prometheus.py

## bench-prometheus: Prometheus sources only (edge time/RSS, server CPU vs an HTTP agent item)
bench-prometheus: prometheus-peers
	python3 scripts/bench_prometheus.py

## static: statically linked release binaries, for FROM-scratch container images
static:
	RUSTFLAGS='-C target-feature=+crt-static' $(CARGO) build --release --target $(STATIC_TARGET) \
		$(addprefix -p ,$(TOOLS))

## assets: man pages and bash/zsh/fish completions, generated from the clap definitions
ASSETS := $(TARGET_DIR)/assets
assets:
	rm -rf $(ASSETS)
	$(CARGO) run --quiet -p xtask -- assets $(ASSETS) --date '$(MAN_DATE)' >/dev/null

PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
DATADIR ?= $(PREFIX)/share
MANDIR ?= $(DATADIR)/man
DOCDIR ?= $(DATADIR)/doc/concierge
SYSCONFDIR ?= /etc
AGENT_CONF_D ?= $(SYSCONFDIR)/zabbix/zabbix_agentd.conf.d
LOGROTATE_D ?= $(SYSCONFDIR)/logrotate.d
SYSTEMD_UNIT_DIR ?= $(PREFIX)/lib/systemd/system
BASH_COMPLETION_DIR ?= $(DATADIR)/bash-completion/completions
ZSH_COMPLETION_DIR ?= $(DATADIR)/zsh/$(if $(filter /usr,$(PREFIX)),vendor-completions,site-functions)
FISH_COMPLETION_DIR ?= $(DATADIR)/fish/vendor_completions.d
STATE_DIR ?= /var/lib/concierge
# The binaries to install: the release build (make install) or the static one (make deb).
BUILT ?= $(TARGET_DIR)/release
# Installed files name the tools by their installed path.
AT_BINDIR := sed 's|/usr/local/bin/|$(BINDIR)/|g'

## install: the five tools, templates, UserParameters, man pages, completions, the heartbeat's
## systemd unit, logrotate, and (as root, without DESTDIR) the state directory for user zabbix
install: release assets install-files

install-files:
	install -d $(DESTDIR)$(BINDIR)
	install -m 0755 $(addprefix $(BUILT)/,$(TOOLS)) $(DESTDIR)$(BINDIR)/
	install -d $(DESTDIR)$(DATADIR)/concierge/templates $(DESTDIR)$(DOCDIR)/examples
	install -m 0644 zabbix-templates/*.yaml $(DESTDIR)$(DATADIR)/concierge/templates/
	install -m 0644 zabbix-templates/containerpilot.json5 $(DESTDIR)$(DOCDIR)/examples/
	install -m 0644 packaging/heartbeat.env $(DESTDIR)$(DOCDIR)/examples/
	install -m 0644 README.md $(DESTDIR)$(DOCDIR)/
	install -d $(DESTDIR)$(AGENT_CONF_D) $(DESTDIR)$(LOGROTATE_D) $(DESTDIR)$(SYSTEMD_UNIT_DIR) \
		$(DESTDIR)$(SYSCONFDIR)/concierge/heartbeat
	$(AT_BINDIR) zabbix-templates/userparameter_concierge.conf >$(DESTDIR)$(AGENT_CONF_D)/userparameter_concierge.conf
	install -m 0644 packaging/logrotate $(DESTDIR)$(LOGROTATE_D)/concierge
	$(AT_BINDIR) 'packaging/concierge-heartbeat@.service' >'$(DESTDIR)$(SYSTEMD_UNIT_DIR)/concierge-heartbeat@.service'
	install -d $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(BASH_COMPLETION_DIR) \
		$(DESTDIR)$(ZSH_COMPLETION_DIR) $(DESTDIR)$(FISH_COMPLETION_DIR)
	for t in $(TOOLS); do \
		gzip -9nc $(ASSETS)/man1/$$t.1 >$(DESTDIR)$(MANDIR)/man1/$$t.1.gz && \
		install -m 0644 $(ASSETS)/completions/bash/$$t $(DESTDIR)$(BASH_COMPLETION_DIR)/ && \
		install -m 0644 $(ASSETS)/completions/zsh/_$$t $(DESTDIR)$(ZSH_COMPLETION_DIR)/ && \
		install -m 0644 $(ASSETS)/completions/fish/$$t.fish $(DESTDIR)$(FISH_COMPLETION_DIR)/ || exit 1; \
	done
	chmod 0644 $(DESTDIR)$(AGENT_CONF_D)/userparameter_concierge.conf \
		'$(DESTDIR)$(SYSTEMD_UNIT_DIR)/concierge-heartbeat@.service' $(DESTDIR)$(MANDIR)/man1/concierge-*.1.gz
	@if [ -n "$(DESTDIR)" ]; then :; \
	elif id zabbix >/dev/null 2>&1; then install -d -m 0750 -o zabbix -g zabbix $(STATE_DIR); \
	else echo "make install: no user zabbix: create $(STATE_DIR) for it once Zabbix is installed"; fi

## uninstall: what install put there (the state directory and its records stay)
uninstall:
	rm -f $(addprefix $(DESTDIR)$(BINDIR)/,$(TOOLS)) \
		$(addprefix $(DESTDIR)$(MANDIR)/man1/,$(addsuffix .1.gz,$(TOOLS))) \
		$(addprefix $(DESTDIR)$(BASH_COMPLETION_DIR)/,$(TOOLS)) \
		$(addprefix $(DESTDIR)$(ZSH_COMPLETION_DIR)/_,$(TOOLS)) \
		$(addprefix $(DESTDIR)$(FISH_COMPLETION_DIR)/,$(addsuffix .fish,$(TOOLS))) \
		$(DESTDIR)$(AGENT_CONF_D)/userparameter_concierge.conf $(DESTDIR)$(LOGROTATE_D)/concierge \
		'$(DESTDIR)$(SYSTEMD_UNIT_DIR)/concierge-heartbeat@.service'
	rm -rf $(DESTDIR)$(DATADIR)/concierge $(DESTDIR)$(DOCDIR)

## deb: target/debian/concierge_<version>_amd64.deb from the static binaries (one package for
## Debian 12 and 13): `make install` into a staging tree, then dpkg-deb (scripts/deb.sh)
DEB_DIR := $(TARGET_DIR)/debian
deb: static assets
	rm -rf $(DEB_DIR)/stage
	$(MAKE) --no-print-directory install-files BUILT=$(STATIC_BIN) PREFIX=/usr DESTDIR=$(abspath $(DEB_DIR)/stage)
	bash scripts/deb.sh $(DEB_DIR)/stage $(DEB_DIR)

## image: the container image $(IMAGE):latest and :$(VERSION), FROM scratch + the static
## binaries (packaging/Dockerfile), built by the local Docker engine; no registry
IMAGE ?= concierge
IMAGE_CONTEXT := $(TARGET_DIR)/image
image: static
	rm -rf $(IMAGE_CONTEXT)
	install -d $(IMAGE_CONTEXT)
	install -m 0755 $(addprefix $(STATIC_BIN)/,$(TOOLS)) $(IMAGE_CONTEXT)/
	docker build --quiet -f packaging/Dockerfile --build-arg VERSION=$(VERSION) \
		--build-arg REVISION=$(REVISION) -t $(IMAGE):latest -t $(IMAGE):$(VERSION) $(IMAGE_CONTEXT)

clean:
	$(CARGO) clean
