# The two set-up commands of the README:
#   make book   create .venv, install advcore with its extras, build the book into _build/html
#   make test   the same install, then library tests + every notebook (nbval, smoke) + book build
# Offline, point at a data mirror first: export ADVCORE_DATA=../shared/data
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: book test install clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --editable ".[book,test]"
	touch $(INSTALLED)

install: $(INSTALLED)

book: $(INSTALLED)
	$(BIN)/jupyter-book build .

test: $(INSTALLED)
	ADVCORE_PROFILE=smoke $(BIN)/python -m pytest -n 2 --nbval-lax --nbval-current-env tests notebooks

clean:
	rm -rf _build
