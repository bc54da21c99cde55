# `make demo` and `make test` bootstrap .venv themselves on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch is pinned: 2.13.0 is a CPU build on local disk; an unpinned torch may pull GBs of CUDA.
TORCH := torch==2.13.0
DEMO_DIR ?= runs/demo

.PHONY: demo test lint venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@# Off-screen MuJoCo rendering (MUJOCO_GL=egl) needs Mesa's software EGL.
	@ldconfig -p | grep -q libEGL.so.1 && ldconfig -p | grep -q libOpenGL.so.0 || \
		(apt-get update -qq && apt-get install -y -qq libegl1 libopengl0 libgl1-mesa-dri)
	@# The live views' tests: a real X server for MuJoCo's viewer, a headless browser for the web view.
	@command -v Xvfb >/dev/null && command -v chromium-headless-shell >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq xvfb chromium-headless-shell)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev]' $(TORCH)
	touch $(STAMP)

# Train, export and evaluate cartpole, then run the policy through ROS 2 (robot_node,
# policy_node, recorder) against SimRobot with the pole hanging, and print the deploy figures.
demo: $(STAMP)
	$(BIN)/s2r demo --out $(DEMO_DIR)
	$(BIN)/s2r deploy $(DEMO_DIR)/cartpole.onnx --driver sim:hardware/configs/cartpole_hanging.yaml \
		--duration 8 --record $(DEMO_DIR)/deploy.mcap --out $(DEMO_DIR)/deploy

test: lint
	$(BIN)/python -m pytest -q

# The import contracts of pyproject.toml (import-linter), checked on the installed layout: the
# folders map to s2r.*, so the working tree is installed into a stage first, as pip installs it
# for a user (from a copy, so that nothing is built inside the working tree).
LINT_STAGE ?= $(VENV)/lint-stage
lint: $(STAMP)
	@rm -rf $(LINT_STAGE) && mkdir -p $(LINT_STAGE)/src
	@tar -c --exclude=./.venv --exclude=./.git --exclude=./runs --exclude=./data --exclude='__pycache__' . | tar -x -C $(LINT_STAGE)/src
	@$(BIN)/pip install -q --no-deps --no-build-isolation --no-compile --target $(LINT_STAGE)/site $(LINT_STAGE)/src 2>/dev/null
	cd $(LINT_STAGE)/site && $(CURDIR)/$(BIN)/lint-imports --no-cache $(CURDIR)/pyproject.toml
