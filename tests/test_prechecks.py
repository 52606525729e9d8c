"""Checks before work starts: a NUM_CLASSES that is not the dataset's category count, a
torchvision-layout seed under the Keras seed's settings, seed weights that are not a seed (a
detectron2 checkpoint, an unknown layout), and the adaptation config run before its search."""
import json
import logging
import os

import pytest
import torch
from torchvision.models import mobilenet_v2

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.modeling import build_model

from fna_d2.arch import load_arch
from fna_d2.checkpoint import FNACheckpointer, remap_into_model
from fna_d2.config import get_fna_cfg
from fna_d2.engine import build_trainer
from fna_d2.engine.data import check_datasets
from fna_d2.errors import ArchError, ConfigError, RemapError
from fna_d2.modeling import arch_from_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RETINANET = os.path.join(REPO, "configs", "Base-FNA-RetinaNet.yaml")
TREES = os.path.join(REPO, "configs", "demo", "trees_baseline.yaml")
NUCLEI = os.path.join(REPO, "configs", "demo", "nuclei_baseline.yaml")
LIGHT = ["MODEL.DEVICE", "cpu", "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.RETINANET.NUM_CONVS", "1",
         "MODEL.RETINANET.NUM_CLASSES", "1", "MODEL.FNA.NETWORK", "seed"]


# ----------------------------------------------------------------------------- NUM_CLASSES
def test_detection_num_classes_other_than_the_dataset_fails_at_start(tmp_path):
    """fna_trees has one category ("tree"): 3 classes is refused by the trainer's first
    check, before any model or data loader is built."""
    cfg = get_fna_cfg(TREES, ["MODEL.RETINANET.NUM_CLASSES", "3", "OUTPUT_DIR", str(tmp_path)])
    with pytest.raises(ConfigError) as e:
        build_trainer(cfg)
    msg = str(e.value)
    assert "MODEL.RETINANET.NUM_CLASSES=3" in msg and "'fna_trees_train'" in msg
    assert "1 categories" in msg and "'tree'" in msg
    assert not os.listdir(tmp_path)  # nothing was written: it failed before work started


def test_segmentation_num_classes_is_checked_against_stuff_classes():
    cfg = get_fna_cfg(NUCLEI, ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3"])
    with pytest.raises(ConfigError, match=r"MODEL.SEM_SEG_HEAD.NUM_CLASSES=3 .*'fna_nuclei_val'"
                                          r".*2 categories \(stuff_classes"):
        check_datasets(cfg, train=False)
    check_datasets(get_fna_cfg(NUCLEI), train=False)  # the demo's own 2 classes pass


@pytest.fixture
def coco_dataset(tmp_path):
    """A COCO-format test set registered as the README says (register_coco_instances, which
    sets thing_classes only once the data is loaded), with two categories."""
    ann = {"images": [], "annotations": [],
           "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}
    path = tmp_path / "val.json"
    path.write_text(json.dumps(ann))
    name = "prechecks_pets_val"
    register_coco_instances(name, {}, str(path), str(tmp_path))
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_a_coco_json_test_set_is_checked_before_it_is_loaded(coco_dataset):
    cfg = get_fna_cfg(TREES, ["DATASETS.TEST", f"('{coco_dataset}',)"])
    with pytest.raises(ConfigError, match=rf"=1 but dataset '{coco_dataset}' \(DATASETS.TEST\) "
                                          r"has 2 categories .*'cat', 'dog'.*set "
                                          r"MODEL.RETINANET.NUM_CLASSES 2"):
        check_datasets(cfg, train=False)
    check_datasets(get_fna_cfg(TREES, ["DATASETS.TEST", f"('{coco_dataset}',)",
                                       "MODEL.RETINANET.NUM_CLASSES", "2"]), train=False)


# ----------------------------------------------------------------------------- seed settings
class _Warnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _remap_warnings(cfg):
    handler = _Warnings()
    log = logging.getLogger("fna_d2.checkpoint")
    log.addHandler(handler)
    try:
        report = remap_into_model(build_model(cfg), cfg)
    finally:
        log.removeHandler(handler)
    return report, handler.messages


@pytest.fixture(scope="module")
def torchvision_seed(tmp_path_factory):
    """A torchvision MobileNetV2 checkpoint as torchvision writes it (a bare state dict)."""
    path = tmp_path_factory.mktemp("seed") / "mobilenet_v2.pth"
    torch.manual_seed(0)
    torch.save(mobilenet_v2(weights=None).state_dict(), path)
    return str(path)


def test_torchvision_seed_with_keras_settings_warns_naming_keys_and_values(torchvision_seed):
    cfg = get_fna_cfg(RETINANET, LIGHT + ["MODEL.FNA.SEED_WEIGHTS", torchvision_seed])
    report, warnings = _remap_warnings(cfg)
    [msg] = [m for m in warnings if "torchvision-layout seed" in m]
    assert torchvision_seed in msg
    assert "MODEL.PIXEL_MEAN [123.675, 116.28, 103.53] (now [127.5, 127.5, 127.5])" in msg
    assert "MODEL.PIXEL_STD [58.395, 57.12, 57.375] (now [127.5, 127.5, 127.5])" in msg
    assert "MODEL.FNA.BN_EPS 1e-05 (now 0.001)" in msg
    assert report.meta["preprocessing_advice"]["MODEL.FNA.BN_EPS"] == 1e-5


def test_torchvision_seed_with_its_own_settings_is_quiet(torchvision_seed):
    cfg = get_fna_cfg(RETINANET, LIGHT + [
        "MODEL.FNA.SEED_WEIGHTS", torchvision_seed, "MODEL.FNA.BN_EPS", "1e-5",
        "MODEL.PIXEL_MEAN", "[123.675, 116.28, 103.53]", "MODEL.PIXEL_STD",
        "[58.395, 57.12, 57.375]"])
    assert _remap_warnings(cfg)[1] == []


def test_converted_keras_seed_is_quiet(torchvision_seed, tmp_path):
    """The Keras seed is torchvision-layout too, but its file says how it was preprocessed."""
    keras_like = tmp_path / "keras.pth"
    torch.save({"model": torch.load(torchvision_seed, weights_only=True),
                "meta": {"preprocessing": "RGB float x / 127.5 - 1", "bn_eps": 1e-3}},
               keras_like)
    cfg = get_fna_cfg(RETINANET, LIGHT + ["MODEL.FNA.SEED_WEIGHTS", str(keras_like)])
    assert _remap_warnings(cfg)[1] == []


# ----------------------------------------------------------------------------- wrong seed file
def test_a_detectron2_checkpoint_as_seed_says_to_use_model_weights(tmp_path):
    cfg = get_fna_cfg(RETINANET, LIGHT + ["OUTPUT_DIR", str(tmp_path)])
    FNACheckpointer(build_model(cfg), str(tmp_path)).save("model_final", iteration=99)
    trained = str(tmp_path / "model_final.pth")
    cfg = get_fna_cfg(RETINANET, LIGHT + ["MODEL.FNA.SEED_WEIGHTS", trained])
    with pytest.raises(RemapError) as e:
        remap_into_model(build_model(cfg), cfg)
    msg = str(e.value)
    assert f"MODEL.FNA.SEED_WEIGHTS={trained!r}" in msg and "unknown seed layout" in msg
    assert "detectron2 checkpoint" in msg and "MODEL.WEIGHTS instead" in msg


def test_an_unknown_seed_layout_names_the_file_and_the_key(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"encoder.conv.weight": torch.zeros(8, 3, 3, 3)}, path)
    cfg = get_fna_cfg(RETINANET, LIGHT + ["MODEL.FNA.SEED_WEIGHTS", str(path)])
    with pytest.raises(RemapError) as e:
        remap_into_model(build_model(cfg), cfg)
    msg = str(e.value)
    assert f"MODEL.FNA.SEED_WEIGHTS={str(path)!r}" in msg and "encoder.conv.weight" in msg
    assert "MODEL.WEIGHTS" not in msg  # not a detectron2 checkpoint: no such advice


# ----------------------------------------------------------------------------- arch not there yet
def test_adapt_config_before_its_search_says_what_to_do(tmp_path, monkeypatch):
    """configs/fna_retinanet_adapt.yaml names the search's output; run elsewhere before the
    search, the error says to run it or to use the published architecture, which exists."""
    monkeypatch.chdir(tmp_path)
    cfg = get_fna_cfg(os.path.join(REPO, "configs", "fna_retinanet_adapt.yaml"))
    with pytest.raises(ArchError) as e:
        arch_from_config(cfg)
    msg = str(e.value)
    assert "output/fna_retinanet_search/searched_arch.json" in msg and "does not exist" in msg
    assert "run the search first" in msg and "configs/archs/fna_retinanet_coco.json" in msg
    load_arch(os.path.join(REPO, "configs", "archs", "fna_retinanet_coco.json")).validate()
