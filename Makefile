# Two set-up commands on a fresh Linux machine with Python >= 3.10:
#   make book   build the HTML book into _build/html (warnings are errors)
#   make test   helper unit tests + every notebook executed in the smoke profile
# and, on a GPU machine, `make execute NB=notebooks/NN_x.ipynb` refreshes one chapter's stored outputs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
MATHJAX_VERSION ?= 3.2.2
WIDGETS_VERSION ?= 1.0.6
REQUIREJS_VERSION ?= 2.3.4

.PHONY: book test execute clean

$(BIN)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt -e .
	touch $@

# MathJax is served from the built book itself, so math renders with no network. Vendored files live in
# _vendor/, not _static/: Jupyter Book adds every .js file under _static/ to every page.
_vendor/mathjax/tex-chtml.js:
	rm -rf .mathjax-tmp && mkdir -p .mathjax-tmp _vendor
	cd .mathjax-tmp && npm pack --silent mathjax@$(MATHJAX_VERSION) >/dev/null && tar xzf mathjax-$(MATHJAX_VERSION).tgz
	rm -rf _vendor/mathjax && mv .mathjax-tmp/package/es5 _vendor/mathjax && rm -rf .mathjax-tmp

# So are the ipywidgets renderer (stored widget states: progress bars, explorers' first views) and require.js.
_vendor/widgets/embed-amd.js:
	rm -rf .widgets-tmp && mkdir -p .widgets-tmp _vendor
	cd .widgets-tmp && npm pack --silent @jupyter-widgets/html-manager@$(WIDGETS_VERSION) requirejs@$(REQUIREJS_VERSION) >/dev/null \
	  && tar xzf jupyter-widgets-html-manager-$(WIDGETS_VERSION).tgz && mv package widgets \
	  && tar xzf requirejs-$(REQUIREJS_VERSION).tgz && cp package/require.js widgets/dist/require.js
	rm -rf _vendor/widgets && mv .widgets-tmp/widgets/dist _vendor/widgets && rm -rf .widgets-tmp

book: $(BIN)/.installed _vendor/mathjax/tex-chtml.js _vendor/widgets/embed-amd.js
	$(BIN)/jupyter-book build -W -n --keep-going .

test: $(BIN)/.installed
	OMP_NUM_THREADS=1 COURSE_PROFILE=smoke $(BIN)/python -m pytest -n auto

execute: $(BIN)/.installed
	@test -n "$(NB)" || { echo "usage: make execute NB=notebooks/NN_name.ipynb"; exit 2; }
	COURSE_PROFILE=full $(BIN)/jupyter execute --inplace --timeout=-1 "$(NB)"

clean:
	rm -rf _build _vendor/mathjax .mathjax-tmp _vendor/widgets .widgets-tmp
