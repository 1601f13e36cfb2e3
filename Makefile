# gpudnn: `make test` and `make demo` do all set-up on a fresh machine (a .venv with a CPU torch).
PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
# Tested pins: torch 2.13.0 resolves to a local CPU build here (plain `torch` pulls GBs of CUDA);
# triton 3.9 is the first whose interpreter works with numpy >= 2.4. The GPU machines run
# triton 3.6: a second venv checks the suite and the sm_90 compile with it (numpy < 2.4).
TORCH_VERSION ?= 2.13.0
TRITON_VERSION ?= 3.9.0
GPU_TRITON_VERSION ?= 3.6.0
VENV_GPU_TRITON ?= .venv-triton$(subst .,,$(basename $(GPU_TRITON_VERSION)))
JOBS ?= auto

.PHONY: test test-latest test-gpu-triton demo fuzz test-gpu gpu-check profile kernel-report clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip setuptools
	$(VPY) -m pip install -q "torch==$(TORCH_VERSION)" "triton==$(TRITON_VERSION)"
	$(VPY) -m pip install -q -e ".[test,data]"
	touch $@

$(VENV_GPU_TRITON)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV_GPU_TRITON)
	$(VENV_GPU_TRITON)/bin/python -m pip install -q --upgrade pip setuptools
	$(VENV_GPU_TRITON)/bin/python -m pip install -q "torch==$(TORCH_VERSION)" \
		"triton==$(GPU_TRITON_VERSION)" "numpy<2.4"
	$(VENV_GPU_TRITON)/bin/python -m pip install -q -e ".[test,data]" "numpy<2.4"
	touch $@

# CPU: Triton kernels run under the interpreter and are compared with the NumPy reference, with
# the latest Triton and with the GPU machines' (3.6). Every launch configuration compiles for
# sm_90 once, with 3.6's compiler (tests/test_aot.py), the one that builds them on the GPUs
# (`make kernel-report` compiles them with the latest). Tests that run no Triton code (the CLI,
# checkpoints, the GPU-check script, the NumPy reference) run in the first leg only.
NO_TRITON_TESTS ?= tests/test_cli.py tests/test_checkpoint_kill.py tests/test_gpu_check.py \
	tests/test_quant_cli.py tests/test_nn_namespace.py tests/test_reference_core.py \
	tests/test_reference_conv.py tests/test_profiling.py
test: test-latest test-gpu-triton

test-latest: $(VENV)/.installed
	TRITON_INTERPRET=1 $(VPY) -m pytest -n $(JOBS) -q --ignore=tests/test_aot.py

test-gpu-triton: $(VENV_GPU_TRITON)/.installed
	TRITON_INTERPRET=1 $(VENV_GPU_TRITON)/bin/python -m pytest -n $(JOBS) -q \
		$(addprefix --ignore=,$(NO_TRITON_TESTS))

demo: $(VENV)/.installed
	$(VPY) -m gpudnn demo

# Long randomized runs, not part of `make test`: FUZZ_TESTS are the pytest targets and FUZZ_ENV
# the settings that scale them up (add yours to both). GPUDNN_KILL_TRIES: SIGKILLs of the trainer
# in tests/test_checkpoint_kill.py (24 in `make test`); GPUDNN_FUZZ_EXAMPLES: hypothesis examples
# per op and backend in tests/test_fuzz.py (5 with a fixed seed in `make test`), drawn with a
# random seed under GPUDNN_FUZZ_RANDOM=1.
FUZZ_TESTS ?= tests/test_checkpoint_kill.py tests/test_fuzz.py
FUZZ_ENV ?= GPUDNN_KILL_TRIES=300 GPUDNN_FUZZ_EXAMPLES=300 GPUDNN_FUZZ_RANDOM=1

fuzz: $(VENV)/.installed
	$(FUZZ_ENV) TRITON_INTERPRET=1 $(VPY) -m pytest -n 0 -q -s $(FUZZ_TESTS)

# On a machine with CUDA (its own torch, triton, cupy): the same suite on CUDA tensors.
test-gpu:
	GPUDNN_TEST_DEVICE=cuda PYTHONPATH=$(CURDIR) $(PYTHON) -m pytest -q

profile:
	PYTHONPATH=$(CURDIR) $(PYTHON) -m profiling $(PROFILE_ARGS)

# The one prepared check for a lent GPU (profiling/GPU.md): environment and ceilings, the suite
# on CUDA, compute-sanitizer, the quick profile, a summary; in 8.5 minutes. Results land in
# profiling/results/<gpu>/, a tarball and the summary in OUT_DIR (the device tool's $$OUT).
# DRY=1: every phase on this CPU with tiny shapes and fake times (tests/test_gpu_check.py).
GPU_CHECK_PY = $(if $(DRY),TRITON_INTERPRET=1 $(VPY),$(PYTHON))
gpu-check: $(if $(DRY),$(VENV)/.installed)
	PYTHONPATH=$(CURDIR) $(GPU_CHECK_PY) -m profiling.gpu_check $(if $(DRY),--dry-run) \
		$(if $(OUT_DIR),--out "$(OUT_DIR)") $(GPU_CHECK_ARGS)

kernel-report: $(VENV)/.installed
	$(VPY) -m profiling.kernel_report

clean:
	rm -rf $(VENV) $(VENV_GPU_TRITON) build *.egg-info .pytest_cache
