"""A trained model needs nothing but itself: ``train_net.py`` trains the tree demo's instant
config (and logs fna_d2's messages into ``log.txt``), then its ``model_final.pth`` is
evaluated with ``--eval-only`` and run by detectron2's ``DefaultPredictor`` with the seed
weights gone and the arch file moved away. Checkpoints carry the architecture (checked against
the published one, an independent oracle), a config without one builds from the checkpoint,
and one of another architecture is an error naming both."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model

from fna_d2.arch import (CHECKPOINT_ARCH_KEY, fna_retinanet_arch, mobilenetv2_arch,
                         record_arch, save_arch, to_authors_format)
from fna_d2.checkpoint import FNACheckpointer
from fna_d2.config import get_fna_cfg
from fna_d2.errors import ArchMismatchError, FNAError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTANT = os.path.join(REPO, "configs", "instant_test", "trees_adapt.yaml")
ENV = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _keras_seed_available() -> bool:
    try:
        from fna_d2.seeds.keras_mobilenetv2 import seed_weights_path

        seed_weights_path("keras_mobilenetv2")
        return True
    except Exception:  # package missing or conversion impossible here
        return False


def _train_net(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(REPO, "train_net.py"), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO, env=ENV)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``train_net.py`` on the instant tree config (2 iterations, 128 px) with FNA's
    published RetinaNet architecture, remapped from the Keras seed when it is available."""
    root = tmp_path_factory.mktemp("trained")
    arch_file = save_arch(fna_retinanet_arch(), str(root / "arch" / "fna.json"))
    seed = "fna_d2://keras_mobilenetv2" if _keras_seed_available() else ""
    out = root / "adapt"
    proc = _train_net("--config-file", INSTANT, "MODEL.FNA.ARCH", arch_file,
                      "MODEL.FNA.SEED_WEIGHTS", seed, "DATASETS.TEST", "()",
                      "OUTPUT_DIR", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"root": root, "out": out, "weights": str(out / "model_final.pth"),
            "arch_file": arch_file, "seed": seed}


def _state(path: str):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_train_net_logs_fna_d2_messages_into_log_txt(trained):
    if not trained["seed"]:
        pytest.skip("Keras MobileNetV2 seed unavailable: no remap summary to log")
    log = (trained["out"] / "log.txt").read_text()
    assert "fna_d2.checkpoint INFO: Remapped seed fna_d2://keras_mobilenetv2" in log
    assert "Remapping report written to" in log


def test_checkpoint_carries_its_architecture(trained):
    """Read with weights_only=True: the record is the published architecture (skips at the
    end of their stage, as built) and names the arch file it came from."""
    obj = torch.load(trained["weights"], map_location="cpu", weights_only=True)
    record = obj[CHECKPOINT_ARCH_KEY]
    assert record["network"] == "derived" and record["search_space"] is None
    assert record_arch(record, "model_final.pth") == fna_retinanet_arch().skips_to_end()
    assert trained["arch_file"] in record["source"]


@pytest.mark.parametrize("arch", ["", "moved"])
def test_config_without_arch_builds_from_the_checkpoint(trained, arch, tmp_path):
    """MODEL.FNA.ARCH empty, or naming a file that is gone (the run's folder was moved): the
    network is the checkpoint's, and every saved tensor loads into it."""
    arch = str(tmp_path / "gone" / "arch.json") if arch else ""
    cfg = get_fna_cfg(INSTANT, ["MODEL.FNA.ARCH", arch, "MODEL.WEIGHTS", trained["weights"],
                                "MODEL.FNA.SEED_WEIGHTS", ""])
    model = build_model(cfg)
    assert model.backbone.bottom_up.arch == fna_retinanet_arch().skips_to_end()
    DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    saved = _state(trained["weights"])
    assert set(saved) == set(model.state_dict())
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


def test_another_architecture_is_an_error_naming_both(trained, tmp_path):
    other = save_arch(mobilenetv2_arch(), str(tmp_path / "mbv2.json"))
    cfg = get_fna_cfg(INSTANT, ["MODEL.FNA.ARCH", other, "MODEL.WEIGHTS", trained["weights"]])
    with pytest.raises(ArchMismatchError) as e:
        build_model(cfg)
    msg = str(e.value)
    assert isinstance(e.value, FNAError)
    assert to_authors_format(fna_retinanet_arch().skips_to_end()) in msg
    assert to_authors_format(mobilenetv2_arch()) in msg
    assert trained["weights"] in msg and other in msg


def test_resuming_with_another_architecture_is_an_error(trained, tmp_path):
    """OUTPUT_DIR holds a run of the published architecture; the config now asks for the
    seed's: resuming names the checkpoint and both architectures."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "model_final.pth").write_bytes(open(trained["weights"], "rb").read())
    (run / "last_checkpoint").write_text("model_final.pth")
    cfg = get_fna_cfg(INSTANT, ["MODEL.FNA.ARCH", "", "MODEL.FNA.SEED_WEIGHTS", "",
                                "OUTPUT_DIR", str(run)])
    ck = FNACheckpointer(build_model(cfg), str(run), cfg=cfg)
    with pytest.raises(ArchMismatchError) as e:
        ck.resume_or_load("", resume=True)
    msg = str(e.value)
    assert str(run / "model_final.pth") in msg and "new OUTPUT_DIR" in msg
    assert to_authors_format(mobilenetv2_arch()) in msg


def test_eval_only_needs_nothing_but_the_model(trained, tmp_path):
    """--eval-only with the seed weights missing and the arch file moved away: evaluates the
    trained model, reads no seed and writes no remap report."""
    out = tmp_path / "eval"
    proc = _train_net("--config-file", INSTANT, "--eval-only",
                      "MODEL.WEIGHTS", trained["weights"],
                      "MODEL.FNA.SEED_WEIGHTS", str(tmp_path / "no_such_seed.pth"),
                      "MODEL.FNA.ARCH", str(tmp_path / "moved" / "arch.json"),
                      "OUTPUT_DIR", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "bbox" in proc.stdout + proc.stderr  # COCO AP of fna_trees_val was printed
    written = [f for _, _, files in os.walk(out) for f in files]
    assert not [f for f in written if f.startswith("remap_report")], written


def test_default_predictor_needs_nothing_but_the_model(trained, tmp_path):
    cfg = get_fna_cfg(INSTANT, ["MODEL.WEIGHTS", trained["weights"], "MODEL.FNA.ARCH", "",
                                "MODEL.FNA.SEED_WEIGHTS", str(tmp_path / "no_such_seed.pth"),
                                "OUTPUT_DIR", str(tmp_path / "out")])
    predictor = DefaultPredictor(cfg)
    saved = _state(trained["weights"])
    assert all(torch.equal(v, saved[k]) for k, v in predictor.model.state_dict().items())
    image = np.random.default_rng(0).integers(0, 256, (140, 150, 3), dtype=np.uint8)
    inst = predictor(image)["instances"]
    assert inst.image_size == (140, 150) and len(inst) > 0  # score threshold 0: all kept
    assert not (tmp_path / "out").exists()
