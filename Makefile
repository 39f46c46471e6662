# `make run` and `make test` are all a new machine needs; both go through the idempotent `make setup`.
PYTHON_FOR_VENV := /usr/bin/python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BROWSER_STAMP := $(VENV)/.browser-installed

.PHONY: setup run demo test test-repeat lint format bench builder-images clean

setup: $(STAMP)

# libguestfs, rpm and createrepo_c Python bindings exist only as distro packages, hence the venv sees them.
$(STAMP): pyproject.toml scripts/install-system-packages.sh
	scripts/install-system-packages.sh
	test -x $(BIN)/python || $(PYTHON_FOR_VENV) -m venv --system-site-packages $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

run: setup
	$(BIN)/ofedrepo serve

# The whole job on synthetic inputs (no NVIDIA download), proven by a dnf install, then serving to browse.
demo: setup
	$(BIN)/ofedrepo demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	shellcheck --shell=bash elements/*/environment.d/* elements/*/*-install.d/*

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The browser test drives the distribution's Chromium (through Playwright, installed by `.[dev]`).
$(BROWSER_STAMP): scripts/install-system-packages.sh | $(STAMP)
	scripts/install-system-packages.sh --browser
	touch $@

test: lint $(BROWSER_STAMP)
	$(BIN)/pytest

# The timing-sensitive modules N times under CPU load (TESTS="path ..." for others): flakiness shows here first.
N ?= 3
test-repeat: setup
	scripts/test-repeat.sh $(N) $(TESTS)

# The production runner's images, one per EL major (OFEDREPO_BUILD_RUNNER=podman|docker uses these names).
ENGINE ?= podman
# Each image pins a minor release (ARG RELEASE in its Containerfile); EL8_RELEASE=8.8 (say) builds another.
EL7_RELEASE ?= 7
EL8_RELEASE ?= 8.10
EL9_RELEASE ?= 9.6
builder-images:
	$(ENGINE) build -t localhost/ofedrepo-builder:el7 --build-arg RELEASE=$(EL7_RELEASE) builders/el7
	$(ENGINE) build -t localhost/ofedrepo-builder:el8 --build-arg RELEASE=$(EL8_RELEASE) builders/el8
	$(ENGINE) build -t localhost/ofedrepo-builder:el9 --build-arg RELEASE=$(EL9_RELEASE) builders/el9

bench: setup
	scripts/install-system-packages.sh --bench
	$(BIN)/python bench/publish.py
	$(BIN)/python bench/inspection.py
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/feeds.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
