# Two set-up commands on a fresh Linux machine with Python >= 3.10:
#   make book   build the HTML book into _build/html (warnings are errors)
#   make test   helper unit tests + every notebook executed in the smoke profile
# and, on a GPU machine, `make execute NB=notebooks/NN_x.ipynb` refreshes one chapter's stored outputs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
MATHJAX_VERSION ?= 3.2.2

.PHONY: book test execute clean

$(BIN)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt -e .
	touch $@

# MathJax is served from the built book itself, so math renders with no network.
_static/mathjax/tex-chtml.js:
	rm -rf .mathjax-tmp && mkdir -p .mathjax-tmp _static
	cd .mathjax-tmp && npm pack --silent mathjax@$(MATHJAX_VERSION) >/dev/null && tar xzf mathjax-$(MATHJAX_VERSION).tgz
	rm -rf _static/mathjax && mv .mathjax-tmp/package/es5 _static/mathjax && rm -rf .mathjax-tmp

book: $(BIN)/.installed _static/mathjax/tex-chtml.js
	$(BIN)/jupyter-book build -W -n --keep-going .

test: $(BIN)/.installed
	OMP_NUM_THREADS=1 COURSE_PROFILE=smoke $(BIN)/python -m pytest -n auto

execute: $(BIN)/.installed
	@test -n "$(NB)" || { echo "usage: make execute NB=notebooks/NN_name.ipynb"; exit 2; }
	COURSE_PROFILE=full $(BIN)/jupyter execute --inplace --timeout=-1 "$(NB)"

clean:
	rm -rf _build _static/mathjax .mathjax-tmp
