# cnm.core: build, test and demo targets. Run as root on Debian 12 (CI: .ci/run).
#
#   make demo   build a simulated host (network namespace) and run playbooks/demo.yml on it
#   make fleet-demo   N simulated hosts + etcd on one LAN, overlay ov1 across them (FLEET=50)
#   make test   deps, then unit, integration, modules, sanity, lint and molecule tests
#
# Nothing here touches the real host's network: tests and the demo work inside
# throwaway network namespaces.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

REPO := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
VENV := $(REPO)/.venv
PY := $(VENV)/bin/python
PYTEST := $(VENV)/bin/pytest
PYTHON ?= python3
REQUIREMENTS_STAMP := $(VENV)/.requirements.stamp
COLLECTION_LINK := $(REPO)/build/collections/ansible_collections/cnm/core
# ansible-test bootstraps pip in its venvs with this cached get-pip.py (see the script).
GET_PIP_CACHE := $(HOME)/.ansible/test/cache/get_pip_24_2.py
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

APT_PACKAGES := iproute2 iptables nftables python3-nftables util-linux iputils-ping \
	bind9-dnsutils dnsperf conntrack procps netcat-openbsd socat curl python3-dnspython graphviz tcpdump
# The cluster store's tests run etcd members inside throwaway namespaces
# (tests/cluster_harness.py); the package's own system service (localhost:2379) must not
# run: right after installing it, deps stops and disables it (systemd, or the init.d
# script's own pidfile; a policy-rc.d that denies starts, as here, keeps it from starting).
CLUSTER_APT_PACKAGES := etcd-server
# molecule/vm boots a Debian 12 VM under QEMU (TCG) from an image debootstrap builds
# (scripts/vm/build-image.sh, cached under build/vm/); only `make molecule-vm` needs them.
VM_APT_PACKAGES := qemu-system-x86 qemu-utils debootstrap e2fsprogs openssh-client

# Passed through to pytest / ansible-test, e.g. make unit PYTEST_ARGS="-k ipam -x"
PYTEST_ARGS ?=
SANITY_ARGS ?=

export PATH := $(VENV)/bin:$(PATH)
# Molecule and ansible resolve cnm.core from this checkout, never from an installed copy.
export ANSIBLE_COLLECTIONS_PATH := $(REPO)/build/collections

.PHONY: help deps unit integration modules sanity lint molecule test demo demo-clean bench \
	golden clean distclean firewall-restore deps-2.18 compat vm-deps molecule-vm fleet-demo fleet-demo-clean molecule-multihost

help:
	@echo "targets: deps unit integration modules sanity lint molecule molecule-vm test demo"
	@echo "         demo-clean vm-deps"
	@echo "         bench golden clean distclean fleet-demo fleet-demo-clean molecule-multihost"
	@echo "         deps-2.18 compat (ansible-core 2.18 and 2.19: sanity + smoke play)"

# Idempotent and fast (~0.3 s) when everything is in place already. Debian's own python3
# needs python3-venv (ensurepip) to create the venv; pyenv's Python has it built in.
deps:
	@missing=""; \
	for p in $(APT_PACKAGES) $(CLUSTER_APT_PACKAGES); do \
	  [ "$$(dpkg-query -W -f='$${db:Status-Abbrev}' $$p 2>/dev/null)" = "ii " ] || missing="$$missing $$p"; \
	done; \
	if ! [ -x $(PY) ]; then \
	  if ! $(PYTHON) -c 'import ensurepip' 2>/dev/null || { \
	       [ "$$($(PYTHON) -c 'import sys; print(sys.base_prefix)')" = /usr ] && \
	       [ "$$(dpkg-query -W -f='$${db:Status-Abbrev}' python3-venv 2>/dev/null)" != "ii " ]; }; then \
	    missing="$$missing python3-venv"; \
	  fi; \
	fi; \
	command -v git >/dev/null || missing="$$missing git"; \
	if [ -n "$$missing" ]; then \
	  echo "deps: apt-get install$$missing"; \
	  $(SUDO) apt-get update -qq; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  if [[ " $$missing " == *" etcd-server "* ]]; then \
	    if [ -d /run/systemd/system ]; then \
	      $(SUDO) systemctl disable --now etcd.service >/dev/null 2>&1 || true; \
	    elif [ -x /etc/init.d/etcd ]; then \
	      $(SUDO) /etc/init.d/etcd stop >/dev/null 2>&1 || true; \
	      $(SUDO) update-rc.d etcd disable >/dev/null 2>&1 || true; \
	    fi; \
	  fi; \
	fi
	@if ! [ -x $(PY) ] || ! $(PY) -c 'import sys' 2>/dev/null; then \
	  echo "deps: creating $(VENV)"; rm -rf $(VENV); $(PYTHON) -m venv $(VENV); rm -f $(REQUIREMENTS_STAMP); \
	fi
	@if ! [ -f $(REQUIREMENTS_STAMP) ] || [ $(REPO)/requirements.txt -nt $(REQUIREMENTS_STAMP) ]; then \
	  echo "deps: pip install -r requirements.txt"; \
	  $(PY) -m pip install -q --disable-pip-version-check -r $(REPO)/requirements.txt; \
	  touch $(REQUIREMENTS_STAMP); \
	fi
	@site=$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	[ -e "$$site/nftables" ] || ln -sfn /usr/lib/python3/dist-packages/nftables "$$site/nftables"
	@mkdir -p $(dir $(COLLECTION_LINK)); \
	[ -L $(COLLECTION_LINK) ] || ln -sfn ../../../.. $(COLLECTION_LINK)
	@cmp -s $(REPO)/scripts/get_pip_standin.py $(GET_PIP_CACHE) || \
	  install -D -m 0644 $(REPO)/scripts/get_pip_standin.py $(GET_PIP_CACHE)

# pytest over one directory; exit 5 ("no tests collected") is not a failure.
define run_pytest
	@cd $(REPO); \
	if [ -d $(1) ]; then \
	  rc=0; $(2) $(PYTEST) $(1) $(PYTEST_ARGS) || rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "$(1): no tests collected"; rc=0; fi; \
	  exit $$rc; \
	else \
	  echo "$(1): no such directory yet, nothing to run"; \
	fi
endef

unit: deps
	$(call run_pytest,tests/unit)

integration: deps
	$(call run_pytest,tests/integration)

modules: deps
	$(call run_pytest,tests/modules)

# Re-apply every cnm firewall rule from the store (after `nft flush ruleset`, a firewalld
# reload). Uses CNM_STATE_DIR etc. like the modules; run it in the host's namespace.
firewall-restore: deps
	$(PY) $(REPO)/scripts/cnm-firewall-restore

# Regenerate the firewall golden files (tests/unit/golden/...); review the diff after.
golden: PYTEST_ARGS += -k golden
golden: deps
	$(call run_pytest,tests/unit,CNM_UPDATE_GOLDEN=1)

# ansible-test wants the collection at .../ansible_collections/cnm/core: copy the files
# git knows (tracked, plus untracked but not ignored; ignored ones are dropped even when
# tracked) into a temporary tree and run there. No --test selection: every sanity test
# runs here; the only network they need is PyPI, for pip installs into ansible-test's
# venvs (get-pip.py comes from the stand-in that deps installs).
sanity: deps
	@tmp=$$(mktemp -d /tmp/cnm-sanity.XXXXXX); trap 'rm -rf "$$tmp"' EXIT; \
	dest=$$tmp/ansible_collections/cnm/core; mkdir -p $$dest; \
	cd $(REPO); \
	git -c core.quotePath=false ls-files --cached --others --exclude-standard > $$tmp/all; \
	git check-ignore --no-index --stdin < $$tmp/all > $$tmp/ignored || true; \
	grep -vxF -f $$tmp/ignored $$tmp/all \
	  | while IFS= read -r f; do if [ -e "$$f" ] || [ -L "$$f" ]; then printf '%s\n' "$$f"; fi; done \
	  > $$tmp/keep; \
	tar -cf - --verbatim-files-from -T $$tmp/keep | tar -xf - -C $$dest; \
	echo "sanity: $$(wc -l < $$tmp/keep) files in $$dest"; \
	cd $$dest && ansible-test sanity --venv --python 3.11 --color no $(SANITY_ARGS)

# Lint the collection as Galaxy and the docsite would, offline: ansible-lint (production
# profile, .ansible-lint, --strict so warnings count), antsibull-changelog (fragments and
# changelog.yaml), antsibull-docs (plugin docs: schema, semantic markup, references) and
# galaxy-importer on a freshly built tarball (galaxy-importer.cfg: flake8 on every plugin,
# required tags, changelog; ansible-test off, so no container runtime and no network).
# Every tool runs even when an earlier one failed; any finding fails the target. Caches,
# the tarball and the importer's output go to a temporary directory, not into the tree.
# The tools (requirements-lint.txt) are installed into .venv when missing.
LINT_REQUIREMENTS_STAMP := $(VENV)/.requirements-lint.stamp
lint: deps
	@if ! [ -f $(LINT_REQUIREMENTS_STAMP) ] || \
	    [ $(REPO)/requirements-lint.txt -nt $(LINT_REQUIREMENTS_STAMP) ] || \
	    [ $(REQUIREMENTS_STAMP) -nt $(LINT_REQUIREMENTS_STAMP) ]; then \
	  echo "lint: pip install -r requirements-lint.txt"; \
	  $(PY) -m pip install -q --disable-pip-version-check \
	    -r $(REPO)/requirements.txt -r $(REPO)/requirements-lint.txt; \
	  touch $(LINT_REQUIREMENTS_STAMP); \
	fi
	@tmp=$$(mktemp -d /tmp/cnm-lint.XXXXXX); cd $(REPO); \
	had_dot_ansible=$$([ -e .ansible ] && echo yes || echo no); \
	trap 'rm -rf "$$tmp"; [ $$had_dot_ansible = yes ] || rm -rf $(REPO)/.ansible' EXIT; \
	export ANSIBLE_HOME=$$tmp/ansible-home ANSIBLE_LOCAL_TEMP=$$tmp/ansible-tmp \
	  XDG_CACHE_HOME=$$tmp/cache; \
	failed=""; \
	echo "--- ansible-lint --strict (profile production, offline)"; \
	ansible-lint --strict || failed="$$failed ansible-lint"; \
	echo "--- antsibull-changelog lint"; \
	{ antsibull-changelog lint && \
	  antsibull-changelog lint-changelog-yaml changelogs/changelog.yaml; } || \
	  failed="$$failed antsibull-changelog"; \
	echo "--- antsibull-docs lint-collection-docs --plugin-docs"; \
	antsibull-docs lint-collection-docs --plugin-docs . && echo "antsibull-docs: no findings" || \
	  failed="$$failed antsibull-docs"; \
	echo "--- galaxy-importer (flake8 on)"; \
	if ansible-galaxy collection build --output-path $$tmp/dist > $$tmp/build.log 2>&1; then \
	  rc=0; ( cd $$tmp && GALAXY_IMPORTER_CONFIG=$(REPO)/galaxy-importer.cfg \
	    GALAXY_IMPORTER_TMP_ROOT_DIR=$$tmp GALAXY_IMPORTER_ANSIBLE_LOCAL_TMP=$$tmp/ansible-tmp \
	    $(PY) -m galaxy_importer.main dist/cnm-core-*.tar.gz ) > $$tmp/importer.log 2>&1 || rc=$$?; \
	  grep -vE '^(Loading|Linting|\.\.\.)' $$tmp/importer.log || true; \
	  if [ $$rc -ne 0 ] || grep -qE '^(WARNING|ERROR|CRITICAL)' $$tmp/importer.log || \
	     ! grep -q '^Importer processing completed successfully' $$tmp/importer.log; then \
	    failed="$$failed galaxy-importer"; \
	  fi; \
	else \
	  cat $$tmp/build.log; failed="$$failed ansible-galaxy-build"; \
	fi; \
	if [ -n "$$failed" ]; then echo "make lint: FAILED:$$failed"; exit 1; fi; \
	echo "make lint: no findings"

# Molecule 26, default driver: the instance is a network namespace (molecule/default).
# MOLECULE_GLOB: scenarios live in molecule/, not in Molecule 26's extensions/molecule/.
molecule: deps
	cd $(REPO) && MOLECULE_GLOB='molecule/*/molecule.yml' molecule test -s default

# Three simulated hosts and an etcd cluster (molecule/multihost): overlay ov1 across them.
molecule-multihost: deps
	cd $(REPO) && MOLECULE_GLOB='molecule/*/molecule.yml' molecule test -s multihost

# The host packages of molecule/vm (QEMU, qemu-img, debootstrap); idempotent.
vm-deps:
	@missing=""; \
	for p in $(VM_APT_PACKAGES); do \
	  [ "$$(dpkg-query -W -f='$${db:Status-Abbrev}' $$p 2>/dev/null)" = "ii " ] || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "vm-deps: apt-get install$$missing"; \
	  $(SUDO) apt-get update -qq; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# Molecule on a real VM (molecule/vm): a Debian 12 VM under QEMU/TCG, reached over SSH,
# for ipvlan, 802.1q and a reboot with systemd. The first run builds the image (~2 min,
# needs root and the Debian mirror); later runs reuse it from build/vm/.
# Its plays run under Mitogen's strategy (molecule/vm/molecule.yml), found in the venv.
molecule-vm: deps vm-deps
	cd $(REPO) && CNM_MITOGEN_STRATEGY_PLUGINS=$$($(PY) -c 'import ansible_mitogen, os; \
	  print(os.path.join(os.path.dirname(ansible_mitogen.__file__), "plugins", "strategy"))') \
	  MOLECULE_GLOB='molecule/*/molecule.yml' molecule test -s vm

# ansible-core 2.18, the oldest version meta/runtime.yml admits, beside .venv's 2.19:
# .venv-2.18 (requirements-2.18.txt) is made on demand like deps makes .venv (a stamp;
# ~0.1 s when in place). `make compat` runs on it the whole sanity target (its
# ansible-test, through PATH) and the smoke play tests/compat/smoke.yml, then the smoke
# play again with .venv's 2.19 (its sanity is the sanity target): both versions get
# sanity + smoke. The smoke play works in throwaway namespaces (tests/compat/test_smoke.py).
VENV_218 := $(REPO)/.venv-2.18
PY_218 := $(VENV_218)/bin/python
REQUIREMENTS_218_STAMP := $(VENV_218)/.requirements.stamp
deps-2.18: deps
	@if ! [ -x $(PY_218) ] || ! $(PY_218) -c 'import sys' 2>/dev/null; then \
	  echo "deps-2.18: creating $(VENV_218)"; rm -rf $(VENV_218); $(PYTHON) -m venv $(VENV_218); \
	  rm -f $(REQUIREMENTS_218_STAMP); \
	fi
	@if ! [ -f $(REQUIREMENTS_218_STAMP) ] || \
	    [ $(REPO)/requirements-2.18.txt -nt $(REQUIREMENTS_218_STAMP) ]; then \
	  echo "deps-2.18: pip install -r requirements-2.18.txt"; \
	  $(PY_218) -m pip install -q --disable-pip-version-check -r $(REPO)/requirements-2.18.txt; \
	  touch $(REQUIREMENTS_218_STAMP); \
	fi
	@site=$$($(PY_218) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	[ -e "$$site/nftables" ] || ln -sfn /usr/lib/python3/dist-packages/nftables "$$site/nftables"

compat: deps-2.18
	@failed=""; SECONDS=0; \
	echo "--- ansible-core $$($(VENV_218)/bin/ansible --version | sed -n 's/.*core \([0-9.]*\).*/\1/p'): sanity"; \
	$(MAKE) --no-print-directory -C $(REPO) sanity PATH="$(VENV_218)/bin:$(PATH)" || failed="$$failed sanity-2.18"; \
	echo "--- ansible-core 2.18: smoke play ($$SECONDS s so far)"; \
	cd $(REPO); \
	CNM_COMPAT_ANSIBLE=2.18 $(VENV_218)/bin/pytest tests/compat $(PYTEST_ARGS) || failed="$$failed smoke-2.18"; \
	echo "--- ansible-core 2.18: payload cache and slim payloads ($$SECONDS s so far)"; \
	CNM_TEST_VENV_BIN=$(VENV_218)/bin $(VENV_218)/bin/pytest -p no:cacheprovider \
	  tests/modules/test_payload_cache_playbooks.py $(PYTEST_ARGS) || failed="$$failed payload-2.18"; \
	echo "--- ansible-core 2.19: smoke play ($$SECONDS s so far)"; \
	CNM_COMPAT_ANSIBLE=2.19 $(PYTEST) tests/compat $(PYTEST_ARGS) || failed="$$failed smoke-2.19"; \
	if [ -n "$$failed" ]; then echo "make compat: FAILED:$$failed ($$SECONDS s)"; exit 1; fi; \
	echo "make compat: ansible-core 2.18 and 2.19 passed ($$SECONDS s)"

# Everything CI runs. Each suite runs even when an earlier one failed; the exit status
# is non-zero when any failed.
test: deps
	@failed=""; \
	for t in unit integration modules sanity lint molecule molecule-multihost molecule-vm compat; do \
	  echo "=== make $$t ==="; start=$$SECONDS; \
	  if $(MAKE) --no-print-directory -C $(REPO) $$t; then res=ok; else res=FAILED; failed="$$failed $$t"; fi; \
	  echo "=== make $$t: $$res ($$((SECONDS - start)) s) ==="; \
	done; \
	if [ -n "$$failed" ]; then echo "make test: FAILED:$$failed"; exit 1; fi; \
	echo "make test: all suites passed"

demo: deps
	cd $(REPO) && $(PY) scripts/demo.py

demo-clean:
	cd $(REPO) && $(if $(wildcard $(PY)),$(PY),$(PYTHON)) scripts/demo.py --clean

# A simulated fleet (scripts/fleet_demo.py): FLEET hosts (network namespaces) and a
# 3-member etcd cluster (etcd-server, installed by deps) on one LAN in namespaces of their
# own; playbooks/fleet-demo.yml builds overlay ov1 with one sandbox per host, twice (the
# second run must report changed=0), then a cross-host ping matrix and DNS answers.
# The fleet stays up (build/fleet/inventory.yml) until fleet-demo-clean.
# FLEET_DRIVER=bridge runs the same play with a local bridge ov1 per host; FLEET_MITOGEN=1
# runs the plays under Mitogen (build/fleet/inventory-mitogen.yml).
FLEET ?= 3
FLEET_DRIVER ?= overlay
fleet-demo: deps
	cd $(REPO) && $(PY) scripts/fleet_demo.py --hosts $(FLEET) --driver $(FLEET_DRIVER)

fleet-demo-clean:
	cd $(REPO) && $(if $(wildcard $(PY)),$(PY),$(PYTHON)) scripts/fleet_demo.py --clean

# Every bench/bench_*.py (or BENCH="bench/bench_ipam.py ..."), each in its own throwaway
# namespace; the output (JSON, then a table) is kept in bench/results/<name>-<time>.out.
BENCH ?= $(sort $(wildcard $(REPO)/bench/bench_*.py))
bench: deps
	@cd $(REPO); mkdir -p bench/results; stamp=$$(date +%Y%m%d-%H%M%S); failed=""; \
	for b in $(BENCH); do \
	  n=$$(basename $$b .py); echo "=== $$n ==="; \
	  $(PY) $$b 2>&1 | tee bench/results/$$n-$$stamp.out || failed="$$failed $$n"; \
	done; \
	if [ -n "$$failed" ]; then echo "bench: FAILED:$$failed"; exit 1; fi

clean:
	rm -rf $(REPO)/build $(REPO)/tests/output $(REPO)/.pytest_cache
	find $(REPO) -path $(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: fleet-demo-clean clean demo-clean
	rm -rf $(VENV)
	rm -rf $(VENV_218)
