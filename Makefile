# fna_d2 entry points. Each target first runs scripts/setup_env.sh, which creates the
# environment when it is missing and reuses it when it is complete (idempotent).
SHELL := /bin/bash
SETUP := bash scripts/setup_env.sh
PY = $$($(SETUP) | tail -n 1)

.PHONY: env demo demo-seg demo-ssdlite test bench gpu-check clean-demo

env:            ## create or reuse the environment
	@$(SETUP) >/dev/null

demo:           ## the full FNA pipeline on the real tree-crown demo (detection)
	@py=$(PY) && $$py -m fna_d2.pipeline --config-file configs/demo/trees_pipeline.yaml

demo-seg:       ## the full FNA pipeline on the real nuclei demo (segmentation)
	@py=$(PY) && $$py -m fna_d2.pipeline --config-file configs/demo/nuclei_pipeline.yaml

demo-ssdlite:   ## the full FNA pipeline on the tree-crown demo with SSDLite (docs/ssdlite.md)
	@py=$(PY) && $$py -m fna_d2.pipeline --config-file configs/demo/trees_ssdlite_pipeline.yaml

test:           ## the test suite
	@py=$(PY) && $$py -m pytest tests -q -ra --timeout 900 $(PYTEST_ARGS)

bench:          ## benchmarks (not part of the tests); writes bench/results/ and docs/benchmarks.md
	@py=$(PY) && $$py bench/run_all.py

gpu-check:      ## the one-GPU check of the COCO configs (needs a GPU; docs/gpu.md)
	@py=$(PY) && PYTHON=$$py bash bench/gpu_check.sh

clean-demo:     ## remove demo outputs (not the environment or datasets)
	rm -rf output/demo
