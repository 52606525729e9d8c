"""Collectives under a process group that refuses CPU tensors on the default group, as NCCL
does (``_nccl_like``): the control plane (paths, flags, the latency table) and BN buffer
averaging must go where CPU tensors are served, and 2 CPU processes must still agree on every
path and alpha, share rank 0's latency table and resume where the checkpoint left off, ending
bit-exactly where the uninterrupted run did (every rank restores its own state)."""
from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from detectron2.data import MetadataCatalog
from detectron2.engine import launch

from _nccl_like import NCCL_CPU_ERROR, install_nccl_like
from _gather import save_gathered
from _search_cfg import search_cfg


def _datasets_root() -> str:
    json_file = MetadataCatalog.get("fna_trees_train").json_file
    return os.path.dirname(os.path.dirname(os.path.dirname(json_file)))


def _helpers_worker(result_path: str) -> None:
    import torch.distributed as dist
    from detectron2.utils import comm

    from fna_d2.engine.ddp import average_bn_buffers

    install_nccl_like()
    rank = comm.get_rank()
    try:
        dist.all_reduce(torch.ones(1))
        refused = ""
    except RuntimeError as e:
        refused = str(e)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.BatchNorm2d(4, affine=False, track_running_stats=False))
    bn = model[1]
    with torch.no_grad():
        bn.running_mean.copy_(torch.arange(4.0) + 10 * rank)
        bn.running_var.copy_(torch.full((4,), 1.0 + rank))
    average_bn_buffers(model)  # what adaptation does after recalibrating BN

    from fna_d2.utils.collectives import all_reduce_mean_, broadcast_object
    pair = [torch.tensor([1.0, 2.0]) * (rank + 1), torch.tensor([3.0], dtype=torch.float64) * rank]
    all_reduce_mean_(pair)
    mine = {"rank": rank, "refused": refused,
            "obj": broadcast_object({"from": rank, "path": [rank, 2]}),
            "flag": broadcast_object(rank == 0),
            "mean": bn.running_mean.clone(), "var": bn.running_var.clone(), "pair": pair}
    save_gathered(mine, result_path)


@pytest.mark.timeout(300)
def test_control_plane_and_bn_averaging_under_nccl_like_group(tmp_path):
    result = tmp_path / "gathered.pt"
    launch(_helpers_worker, 2, dist_url="auto", args=(str(result),))
    for r in torch.load(result, weights_only=False):
        assert r["refused"] == NCCL_CPU_ERROR  # the condition is real
        assert r["obj"] == {"from": 0, "path": [0, 2]} and r["flag"] is True
        assert torch.equal(r["mean"], torch.arange(4.0) + 5)
        assert torch.equal(r["var"], torch.full((4,), 1.5))
        assert torch.equal(r["pair"][0], torch.tensor([1.5, 3.0]))
        assert r["pair"][1].dtype == torch.float64 and r["pair"][1].item() == 1.5


def _snapshot(trainer):
    from fna_d2.engine.search.state import module_attrs

    return {"alphas": [a.detach().clone() for a in trainer.net.arch_parameters()],
            "loss_normalizer": module_attrs(trainer.model),
            "params": {k: v.detach().clone() for k, v in trainer.model.module.named_parameters()},
            "paths": list(trainer.runner.recent_paths), "start": trainer.start_iter,
            "mismatches": trainer.runner.path_mismatches}


def _search_worker(out_dir: str, table: str, result_path: str, datasets_root: str) -> None:
    from detectron2.utils import comm

    from fna_d2.data import demo
    from fna_d2.engine import build_trainer

    install_nccl_like()
    torch.set_num_threads(1)  # 2 processes on 2 cores
    demo.register_demo_datasets(datasets_root)
    cfg = search_cfg(out_dir, **{"SOLVER.MAX_ITER": 3, "MODEL.FNA.SEARCH.WARMUP_ITERS": 1,
                                 "MODEL.FNA.SEARCH.DERIVE_PERIOD": 0,
                                 "SOLVER.CHECKPOINT_PERIOD": 2,
                                 "MODEL.FNA.SEARCH.COST": "latency",
                                 "MODEL.FNA.SEARCH.LATENCY_TABLE": table,
                                 "MODEL.FNA.SEARCH.LATENCY_REPEATS": 1,
                                 "MODEL.FNA.SEARCH.LATENCY_THREADS": 1,
                                 "MODEL.FNA.SEARCH.LATENCY_TUNE_MALLOC": False})
    straight = build_trainer(cfg)
    straight.resume_or_load(resume=False)
    straight.train()
    mine = {"rank": comm.get_rank(), "straight": _snapshot(straight),
            "cost_table": straight.cost_table, "madds_table": straight.madds_table}
    if comm.is_main_process():  # as if killed after the checkpoint of iteration 2
        with open(os.path.join(out_dir, "last_checkpoint"), "w") as f:
            f.write("model_0000001.pth")
    comm.synchronize()
    resumed = build_trainer(cfg)
    resumed.resume_or_load(resume=True)
    mine["resumed_start"] = resumed.start_iter
    resumed.train()
    mine["resumed"] = _snapshot(resumed)
    mine["resumed_table"] = resumed.cost_table
    save_gathered(mine, result_path)


@pytest.mark.timeout(900)
def test_search_latency_table_and_resume_under_nccl_like_group(tmp_path):
    result, table = tmp_path / "gathered.pt", tmp_path / "lat.json"
    launch(_search_worker, 2, dist_url="auto",
           args=(str(tmp_path / "out"), str(table), str(result), _datasets_root()))
    r0, r1 = torch.load(result, weights_only=False)
    assert (r0["rank"], r1["rank"]) == (0, 1) and table.is_file()
    # rank 0 measured the table; rank 1 got the same one, calibration scale included
    assert r0["cost_table"] == r1["cost_table"] != r0["madds_table"]
    assert r0["resumed_table"] == r1["resumed_table"] == r0["cost_table"]
    s0, s1 = r0["straight"], r1["straight"]
    assert s0["paths"] == s1["paths"] and len(s0["paths"]) == 3
    assert [m for _, m, _ in s0["paths"]] == ["uniform", "softmax", "softmax"]
    assert s0["mismatches"] == s1["mismatches"] == 0
    assert all(torch.equal(a, b) for a, b in zip(s0["alphas"], s1["alphas"]))
    assert all(torch.equal(s0["params"][k], s1["params"][k]) for k in s0["params"])
    assert r0["resumed_start"] == r1["resumed_start"] == 2
    q0, q1 = r0["resumed"], r1["resumed"]  # the resumed run: same paths, ranks agree
    assert q0["paths"] == q1["paths"] == s0["paths"][2:]
    assert q0["mismatches"] == q1["mismatches"] == 0
    assert all(torch.equal(a, b) for a, b in zip(q0["alphas"], q1["alphas"]))
    assert all(torch.equal(q0["params"][k], q1["params"][k]) for k in q0["params"])
    # each rank keeps its own loss normaliser (RetinaNet's EMA of its positive anchors) ...
    assert s0["loss_normalizer"] != s1["loss_normalizer"]
    # ... and gets it back on resume: the resumed run ends where the straight one did
    for r in (r0, r1):
        s, q = r["straight"], r["resumed"]
        assert q["loss_normalizer"] == s["loss_normalizer"]
        assert all(torch.equal(a, b) for a, b in zip(s["alphas"], q["alphas"]))
        assert all(torch.equal(s["params"][k], q["params"][k]) for k in s["params"])
