"""The search under DistributedDataParallel: 2 CPU processes (detectron2's ``launch`` uses the
gloo backend when there is no GPU). Every rank must sample the same paths and end with the same
alphas and weights; only rank 0 writes the outputs."""
from __future__ import annotations

import json
import os

import pytest
import torch

from detectron2.data import MetadataCatalog
from detectron2.engine import launch

from _gather import save_gathered
from _search_cfg import search_cfg


def _worker(out_dir: str, result_path: str, datasets_root: str) -> None:
    """Run in each spawned process (must be importable at module level)."""
    from detectron2.utils import comm

    from fna_d2.data import demo
    from fna_d2.engine import build_trainer

    torch.set_num_threads(1)  # 2 processes on 2 cores
    demo.register_demo_datasets(datasets_root)
    cfg = search_cfg(out_dir, **{"SOLVER.MAX_ITER": 3, "MODEL.FNA.SEARCH.WARMUP_ITERS": 1,
                                 "MODEL.FNA.SEARCH.DERIVE_PERIOD": 0,
                                 "SOLVER.CHECKPOINT_PERIOD": 100})
    trainer = build_trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    runner = trainer.runner
    mine = {
        "rank": comm.get_rank(),
        "world": comm.get_world_size(),
        "alphas": [a.detach().clone() for a in trainer.net.arch_parameters()],
        "params": {k: v.detach().clone() for k, v in trainer.model.module.named_parameters()},
        "paths": list(runner.recent_paths),
        "mismatches": runner.path_mismatches,
        "consumed": (runner.weight_stream.consumed, runner.arch_stream.consumed),
    }
    save_gathered(mine, result_path)


@pytest.mark.timeout(600)
def test_two_process_search_agrees_across_ranks(tmp_path):
    json_file = MetadataCatalog.get("fna_trees_train").json_file
    root = os.path.dirname(os.path.dirname(os.path.dirname(json_file)))
    result = tmp_path / "gathered.pt"
    launch(_worker, 2, dist_url="auto", args=(str(tmp_path / "out"), str(result), root))
    r0, r1 = torch.load(result, weights_only=False)
    assert (r0["rank"], r1["rank"], r0["world"]) == (0, 1, 2)
    assert r0["paths"] == r1["paths"] and len(r0["paths"]) == 3
    assert [m for _, m, _ in r0["paths"]] == ["uniform", "softmax", "softmax"]
    assert r0["mismatches"] == r1["mismatches"] == 0
    assert all(torch.equal(a, b) for a, b in zip(r0["alphas"], r1["alphas"]))
    assert all(torch.equal(r0["params"][k], r1["params"][k]) for k in r0["params"])
    assert r0["consumed"] == r1["consumed"] == (3, 2)
    arch = tmp_path / "out" / "searched_arch.json"
    assert arch.is_file()
    meta = json.loads(arch.read_text())["meta"]
    assert meta["world_size"] == 2 and meta["total_batch"] == 2
