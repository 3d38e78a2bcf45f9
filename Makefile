# The two commands of the README. Each creates .venv when missing and installs the project into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install lint docs bench clean browser

$(STAMP): pyproject.toml constraints.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	@# the pre-commit hook: ruff before each commit
	if [ -d .git ]; then $(BIN)/pre-commit install --allow-missing-config >/dev/null; fi
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python jobs/round.py --config demo

# The report's browser test drives Debian's Chromium through its ChromeDriver: installed when missing
# (as root, or through sudo).
APT := $(if $(filter 0,$(shell id -u)),,sudo) env DEBIAN_FRONTEND=noninteractive apt-get
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ $(APT) update -q && $(APT) install -y -q chromium chromium-driver; }

# Lint, then the docs (a broken link fails), then the suite.
test: $(STAMP) browser lint docs
	$(BIN)/python -m pytest -q --durations=25 tests

lint: $(STAMP)
	$(BIN)/ruff check .

# NO_MKDOCS_2_WARNING: no end-of-life banner from the theme on a successful build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

bench: $(STAMP)
	$(BIN)/python jobs/bench.py --quick

clean:
	rm -rf $(VENV) .raysal .pytest_cache site
