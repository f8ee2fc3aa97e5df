# Thin wrappers: the logic lives in the package (one-drivers lab/demo) and in .ci/ scripts.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
ONE_DRIVERS := $(VENV)/bin/one-drivers
export ONE_DRIVERS_LAB_DIR ?= /var/tmp/one-drivers-lab

.PHONY: help deps venv setup lab-up lab-down lab-status demo test lint unit integration e2e bench clean \
	molecule molecule-setup wheelhouse

help:
	@echo "make demo    - install everything needed, bring the lab up, run the demo"
	@echo "make test    - install everything needed, bring the lab up, lint + the whole suite,"
	@echo "               then the Molecule scenarios"
	@echo "make bench   - benchmarks against the upstream way, printing ratios"
	@echo "make lab-up / lab-down / lab-status"
	@echo "make molecule - the Ansible roles in podman containers (Molecule)"

deps:
	@bash .ci/install-debian-packages packages-debian.txt

$(VENV)/.installed: pyproject.toml requirements.txt requirements-dev.txt
	/usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	@touch $@

venv: deps
	@$(MAKE) --no-print-directory $(VENV)/.installed

setup: venv

lab-up: setup
	$(ONE_DRIVERS) lab up

lab-down:
	@if [ -x $(ONE_DRIVERS) ]; then $(ONE_DRIVERS) lab down; fi

lab-status: setup
	$(ONE_DRIVERS) lab status

demo: lab-up
	$(ONE_DRIVERS) demo

lint: setup
	$(VENV)/bin/ruff check drivers tests bench molecule
	$(VENV)/bin/mypy

unit: setup
	bash .ci/pytest $(PY) tests/unit

test: lint lab-up
	bash .ci/pytest $(PY) tests
	@$(MAKE) --no-print-directory molecule

# our drivers under a real oned: a self-contained OpenNebula install outside this repository
# (ONE_DRIVERS_E2E_LOCATION, default /var/tmp/opennebula); skipped, with the reason, without one
e2e: lab-up
	ONE_DRIVERS_E2E_LOCATION=$${ONE_DRIVERS_E2E_LOCATION:-/var/tmp/opennebula} \
		bash .ci/pytest $(PY) tests/e2e -ra

bench: lab-up
	$(PY) bench/run.py

# Molecule: the roles in ansible/ in podman containers (image built once, locally)
$(VENV)/.molecule: requirements-molecule.txt $(VENV)/.installed
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-molecule.txt
	@touch $@

# the package and its pinned pure-Python dependencies as wheels, for the Ansible role
wheelhouse: venv
	rm -rf dist/wheelhouse
	$(PY) -m pip wheel -q --disable-pip-version-check --no-deps -w dist/wheelhouse .
	$(PY) -m pip wheel -q --disable-pip-version-check -w dist/wheelhouse \
		$$(grep -v -e '^#' -e '^libvirt-python' requirements.txt)

molecule-setup: venv wheelhouse
	@$(MAKE) --no-print-directory $(VENV)/.molecule
	$(PY) molecule/images/build.py

MOLECULE_ENV = PATH=$(abspath $(VENV))/bin:$$PATH CONTAINERS_CONF=$(abspath molecule/containers.conf) \
	ANSIBLE_ROLES_PATH=$(abspath ansible/roles)

molecule: molecule-setup
	$(MOLECULE_ENV) $(VENV)/bin/ansible-lint --profile production ansible molecule
	$(MOLECULE_ENV) $(VENV)/bin/molecule test --all

clean: lab-down
	rm -rf $(VENV) build *.egg-info drivers/*.egg-info .mypy_cache .ruff_cache .pytest_cache
