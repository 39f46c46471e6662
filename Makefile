# `make run` and `make test` are all a new machine needs; both go through the idempotent `make setup`.
PYTHON_FOR_VENV := /usr/bin/python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BROWSER_STAMP := $(VENV)/.browser-installed

.PHONY: setup run test lint format bench builder-images clean

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

# The production runner's images, one per EL major (OFEDREPO_BUILD_RUNNER=podman|docker uses these names).
ENGINE ?= podman
BUILDER_RELEASES := 7 8 9
builder-images:
	for release in $(BUILDER_RELEASES); do \
		$(ENGINE) build -t localhost/ofedrepo-builder:el$$release -f builders/el$$release/Containerfile \
			builders/el$$release || exit 1; \
	done

bench: setup
	scripts/install-system-packages.sh --bench
	$(BIN)/python bench/publish.py
	$(BIN)/python bench/inspection.py
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/feeds.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
