"""``SyncBN`` (``MODEL.FNA.NORM`` of the COCO configs) on 2 CPU processes: torch's
``SyncBatchNorm`` refuses CPU modules under DDP, so the trainers fall back to detectron2's
``naiveSyncBN``; one training iteration runs and the BN statistics agree across ranks."""
from __future__ import annotations

import os

import pytest
import torch

from detectron2.data import MetadataCatalog
from detectron2.engine import launch
from detectron2.layers import NaiveSyncBatchNorm
from torch import nn

from fna_d2.modeling.ops import naive_sync_bn

from _search_cfg import REPO


#: per config: the demo data standing in for COCO / Cityscapes, and a small input
SMALL = {
    "fna_retinanet_adapt.yaml": [
        "MODEL.FNA.SEED_WEIGHTS", "", "MODEL.FNA.ARCH", "", "DATASETS.TRAIN", "('fna_trees_train',)",
        "MODEL.RETINANET.NUM_CLASSES", "1", "INPUT.MIN_SIZE_TRAIN", "(96,)",
        "INPUT.MAX_SIZE_TRAIN", "128"],
    "fna_deeplabv3_search_8gpu.yaml": [
        "MODEL.FNA.SEED_WEIGHTS", "", "MODEL.FNA.SEARCH_DEPTHS", "[1, 1, 1, 1, 1, 1]",
        "MODEL.FNA.SEARCH.WARMUP_ITERS", "0", "DATASETS.TRAIN", "('fna_nuclei_train',)",
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "2", "INPUT.MIN_SIZE_TRAIN", "(64, 96)",
        "INPUT.MAX_SIZE_TRAIN", "96", "INPUT.CROP.SIZE", "(65, 65)"],
}


def _worker(name: str, out_dir: str, result_path: str, datasets_root: str) -> None:
    """One iteration of a paper config (SyncBN) on demo data, in each of 2 processes."""
    from detectron2.utils import comm

    from fna_d2.config import get_fna_cfg
    from fna_d2.data import demo
    from fna_d2.engine import build_trainer

    torch.set_num_threads(1)  # 2 processes on 2 cores
    demo.register_demo_datasets(datasets_root)
    cfg = get_fna_cfg(os.path.join(REPO, "configs", name), SMALL[name] + [
        "MODEL.DEVICE", "cpu", "DATASETS.TEST", "()", "SOLVER.IMS_PER_BATCH", "2",
        "SOLVER.MAX_ITER", "1", "DATALOADER.NUM_WORKERS", "0", "TEST.EVAL_PERIOD", "0",
        "MODEL.FNA.REMAP.RECALIBRATE_BN_ITERS", "0", "SOLVER.CHECKPOINT_PERIOD", "1000",
        "OUTPUT_DIR", out_dir])
    assert cfg.MODEL.FNA.NORM == "SyncBN"
    cfg.freeze()
    trainer = build_trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    bns = [m for m in trainer.model.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
    mine = {"naive": sum(isinstance(m, NaiveSyncBatchNorm) for m in bns),
            "sync": sum(isinstance(m, nn.SyncBatchNorm) for m in bns),
            "means": [m.running_mean.clone() for m in bns if m.running_mean is not None],
            "iter": trainer.iter}
    gathered = comm.all_gather(mine)
    if comm.is_main_process():
        torch.save(gathered, result_path)
    comm.synchronize()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", sorted(SMALL))
def test_syncbn_config_trains_on_two_cpu_processes(name, tmp_path):
    json_file = MetadataCatalog.get("fna_trees_train").json_file
    root = os.path.dirname(os.path.dirname(os.path.dirname(json_file)))
    result = tmp_path / "gathered.pt"
    launch(_worker, 2, dist_url="auto", args=(name, str(tmp_path / "out"), str(result), root))
    r0, r1 = torch.load(result, weights_only=False)
    assert r0["iter"] == r1["iter"] == 1
    assert r0["sync"] == 0 and r0["naive"] > 0  # every SyncBN became naiveSyncBN
    # statistics were synchronised: both ranks saw different images yet hold the same means
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(r0["means"], r1["means"]))
    assert any(not torch.allclose(m, torch.zeros_like(m)) for m in r0["means"])


def test_naive_sync_bn_keeps_settings_and_state():
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.SyncBatchNorm(4, eps=1e-3, momentum=0.01),
                        nn.Sequential(nn.SyncBatchNorm(4)))
    net[1].running_mean.fill_(0.5)
    net[1].weight.data.fill_(2.0)
    net.eval()
    keys = set(net.state_dict())
    assert naive_sync_bn(net) == 2
    assert isinstance(net[1], NaiveSyncBatchNorm) and isinstance(net[2][0], NaiveSyncBatchNorm)
    assert (net[1].eps, net[1].momentum, net[1].training) == (1e-3, 0.01, False)
    assert torch.equal(net[1].running_mean, torch.full((4,), 0.5))
    assert torch.equal(net[1].weight.detach(), torch.full((4,), 2.0))
    assert set(net.state_dict()) == keys  # checkpoints load either way
