"""int8 post-training quantization of a trained model's tensor-only parts with torch.ao's FX
graph mode (``prepare_fx`` / ``convert_fx``, the x86 backend's default qconfig mapping).

detectron2's meta-architectures have Python control flow (image lists, anchors, NMS, the
segmentor's training branch), so only the networks are quantized: the **backbone** (FPN
included) and the **head** (RetinaNet's or SSDLite's class/box towers, the DeepLabv3 ASPP and
classifier). Pixel normalisation, padding, anchors, box decoding, NMS and the segmentor's
upsampling stay in float. Each quantized part takes and returns float tensors (FX inserts the
quantize / dequantize at its borders), so the meta-architecture runs unchanged around it.

:func:`quantize_model` returns a new model (the float one is left as it was): prepare, run the
calibration batches through the whole model (the observers see real activations), convert.
"""
from __future__ import annotations

import copy
import logging
import warnings
from typing import Any, Dict, Iterable, List, Sequence

import torch
from detectron2.layers import Conv2d as D2Conv2d
from detectron2.modeling import Backbone, ShapeSpec
from detectron2.modeling.meta_arch.retinanet import RetinaNetHead
from torch import nn
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

from ..errors import QuantizationError

__all__ = ["BACKEND", "BACKENDS", "quantize_model", "quantized_parts", "slow_int8_convs",
           "QuantizedBackbone"]

logger = logging.getLogger(__name__)

#: torch's quantized engine and qconfig mapping by default: fbgemm ("x86" within noise of it
#: on the nuclei backbone once the dilated depthwise convs stay float, 21.7 vs 22.5 ms on the
#: loaded benchmark VM; qnnpack, ARM's, 42 ms: docs/quantization.md)
BACKEND = "fbgemm"
#: the last layers left in float (the 1x1 classifier / the class and box predictors): the
#: outputs the metric reads, cheap, and the most sensitive to int8 rounding
SEG_FLOAT = ("predictor",)
DET_FLOAT = tuple(f"levels.{i}.{name}" for i in range(8) for name in ("cls_score", "bbox_pred"))
# (SSDLite's per-level predictors are quantized: they are depthwise-separable, not one conv)
#: the backbone's first conv, its ``stem`` at any depth (FPN: ``bottom_up.stem``): 3 input
#: channels, cheap, and it sees the raw normalised pixels
BACKBONE_FLOAT = "stem"
#: the engines ``backend=`` accepts (torch's server and mobile int8 kernels)
BACKENDS = ("fbgemm", "x86", "qnnpack")


def _slow_in_int8(conv: nn.Conv2d, backend: str) -> bool:
    """Whether ``backend`` has no fast int8 kernel for ``conv``, which then stays in float.
    Measured on the benchmark VM, 1 thread (``docs/quantization.md``, "Where int8 loses"):
    fbgemm's (and x86's) depthwise fast path takes dilation 1 only, a dilated depthwise conv
    (the output-stride-16 stages, the ASPP) falls back to a generic path 28-200x slower than
    float; qnnpack has depthwise kernels for 3x3 and 5x5 only, a 7x7 one was 4-24x slower."""
    depthwise = conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels
    if not depthwise:
        return False
    if backend == "qnnpack":
        return max(conv.kernel_size) > 5
    return max(conv.dilation) > 1


def slow_int8_convs(part: nn.Module, backend: str) -> List[str]:
    """The modules of ``part`` kept in float for ``backend`` (:func:`_slow_in_int8`): each
    such conv's block (its conv + norm + activation, when the conv is the block's first
    child), so the float island is the whole block, entered and left once."""
    names = []
    for name, mod in part.named_modules():
        if isinstance(mod, nn.Conv2d) and _slow_in_int8(mod, backend):
            parent, _, leaf = name.rpartition(".")
            first = next(iter(part.get_submodule(parent).named_children()))[0] if parent else None
            names.append(parent if parent and first == leaf else name)
    return names


class QuantizedBackbone(Backbone):
    """A converted FX graph in the place of a detectron2 backbone: same ``output_shape()``,
    ``size_divisibility`` and ``padding_constraints`` as the float one, float in and out."""

    def __init__(self, graph: nn.Module, float_backbone: Backbone) -> None:
        super().__init__()
        self.graph = graph
        self._shapes = dict(float_backbone.output_shape())
        self._size_divisibility = int(float_backbone.size_divisibility)
        self._padding_constraints = dict(getattr(float_backbone, "padding_constraints", {}))
        self._out_features = list(self._shapes)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return self.graph(x)

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return dict(self._shapes)

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    @property
    def padding_constraints(self) -> Dict[str, int]:
        return dict(self._padding_constraints)


class _ListHead(nn.Module):
    """A head taking a list of feature maps (RetinaNet, SSDLite) as a module taking a dict with
    fixed keys, so FX traces it (a list argument cannot be iterated symbolically), with one
    copy of the head per level: a head shared by all levels would get one int8 output scale
    for levels whose activations differ by orders of magnitude (FX keeps one quantized module
    per module, with the scale of one of its calls). Returns what the head returns, a tuple
    of per-level lists."""

    def __init__(self, head: nn.Module, n: int) -> None:
        super().__init__()
        # only a head whose modules all levels share (RetinaNet's) is copied per level;
        # SSDLite's has its own modules per level and takes the whole list
        self.shared = isinstance(head, RetinaNetHead)
        self.levels = nn.ModuleList(copy.deepcopy(head) for _ in range(n if self.shared else 1))
        for level in self.levels:
            if hasattr(level, "_num_features"):  # RetinaNetHead checks the number of levels
                level._num_features = 1
        self.keys = [f"p{i}" for i in range(n)]

    def forward(self, features: Dict[str, torch.Tensor]):
        if not self.shared:
            return self.levels[0]([features[k] for k in self.keys])
        outs = [head([features[k]]) for head, k in zip(self.levels, self.keys)]
        return tuple([o[j][0] for o in outs] for j in range(len(outs[0])))


class _QuantizedListHead(nn.Module):
    """The converted :class:`_ListHead` called the way the meta-architecture calls its head."""

    def __init__(self, graph: nn.Module, n: int) -> None:
        super().__init__()
        self.graph = graph
        self.keys = [f"p{i}" for i in range(n)]

    def forward(self, features: List[torch.Tensor]):
        return self.graph({k: f for k, f in zip(self.keys, features)})


class _SegLayers(nn.Module):
    """The DeepLabv3 head's ``layers`` (ASPP + classifier), the part FX can trace."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.aspp, self.predictor = head.aspp, head.predictor
        self.in_feature = head.in_feature

    def forward(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        # detectron2's ASPP.forward in eval mode, without its size check (control flow FX
        # cannot trace); the image-pooling branch is upsampled back as there
        x = features[self.in_feature]
        res = [conv(x) for conv in self.aspp.convs]
        res[-1] = nn.functional.interpolate(res[-1], size=x.shape[-2:], mode="bilinear",
                                            align_corners=False)
        return self.predictor(self.aspp.project(torch.cat(res, dim=1)))


def _plain(conv: D2Conv2d) -> nn.Module:
    """detectron2's ``Conv2d`` (a conv with optional norm and activation, and a branch on
    empty inputs FX cannot trace) as ``nn.Sequential(nn.Conv2d, norm, activation)`` sharing
    its parameters, the pattern FX fuses and quantizes."""
    plain = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                      conv.padding, conv.dilation, conv.groups, conv.bias is not None,
                      conv.padding_mode)
    plain.weight = conv.weight
    if conv.bias is not None:
        plain.bias = conv.bias
    parts: List[nn.Module] = [plain]
    if conv.norm is not None:
        parts.append(conv.norm)
    act = conv.activation
    if act is not None:
        if isinstance(act, nn.Module):
            parts.append(act)
        elif act in (nn.functional.relu, torch.relu):
            parts.append(nn.ReLU())
        else:
            raise QuantizationError(f"a detectron2 Conv2d with activation {act!r}: fna_d2 "
                                    "quantizes nn.Module activations and F.relu only")
    return nn.Sequential(*parts) if len(parts) > 1 else plain


def _plain_convs(module: nn.Module) -> nn.Module:
    """``module`` with every detectron2 ``Conv2d`` below it replaced by :func:`_plain`, in
    the module tree and in the plain lists that also hold them (detectron2's FPN keeps its
    lateral and output convs in lists as well as registered)."""
    swapped: Dict[int, nn.Module] = {}
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, D2Conv2d):
                swapped[id(child)] = _plain(child)
                setattr(parent, name, swapped[id(child)])
    for parent in module.modules():
        for name, value in list(vars(parent).items()):
            if isinstance(value, (list, tuple)) and any(id(v) in swapped for v in value):
                new = [swapped.get(id(v), v) for v in value]
                object.__setattr__(parent, name, type(value)(new))
    return module


class _QuantizedSegHead(nn.Module):
    """The DeepLabv3 head for inference with its layers quantized; the upsampling in float."""

    def __init__(self, graph: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.graph = graph
        self.common_stride = int(head.common_stride)
        self.ignore_value = head.ignore_value  # SemanticSegmentor pads targets with it

    def forward(self, features: Dict[str, torch.Tensor], targets=None):
        if self.training:
            raise QuantizationError("an int8 model is for inference only: call .eval()")
        x = self.graph(features)
        size = (x.shape[-2] * self.common_stride, x.shape[-1] * self.common_stride)
        return nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False), {}


def _head_name(model: nn.Module) -> str:
    for name in ("head", "sem_seg_head"):
        if isinstance(getattr(model, name, None), nn.Module):
            return name
    raise QuantizationError(f"{type(model).__name__}: no 'head' or 'sem_seg_head' to quantize "
                            "(fna_d2 quantizes RetinaNet, SSDLite and DeepLabv3 models)")


def quantized_parts(model: nn.Module) -> List[str]:
    """The attribute names of ``model``'s parts that :func:`quantize_model` quantizes."""
    return ["backbone", _head_name(model)]


def _prepare(part: nn.Module, example: Any, what: str, backend: str,
             keep_float: Sequence[str] = ()) -> nn.Module:
    mapping = get_default_qconfig_mapping(backend)
    # a quantized cat needs one scale for all its inputs, which the ASPP's branches (the image
    # pooling one above all) do not share: torch warns of "large numerical inaccuracies".
    # It concatenates in float instead (its inputs dequantized, the next conv re-quantizes).
    mapping.set_object_type(torch.cat, None)
    for name in keep_float:
        mapping.set_module_name(name, None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's FX-mode deprecation notice, once per part
            return prepare_fx(part.eval(), mapping, example_inputs=(example,))
    except Exception as e:  # FX tracing errors come as many types
        raise QuantizationError(f"{what} ({type(part).__name__}) cannot be traced by torch.fx "
                                f"for quantization: {type(e).__name__}: {e}") from None


def _convert(prepared: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert_fx(prepared)


@torch.no_grad()
def quantize_model(model: nn.Module, calibration: Iterable[List[Dict[str, Any]]],
                   backend: str = BACKEND) -> nn.Module:
    """An int8 copy of the eval-mode detectron2 ``model`` (RetinaNet, SSDLite or
    SemanticSegmentor with an fna_d2 backbone), calibrated on ``calibration``: batches in the
    meta-architecture's input format (``list[dict]`` with ``"image"``, as the test loader
    gives them). Runs on the CPU (torch's int8 kernels are CPU kernels)."""
    batches = list(calibration)
    if not batches:
        raise QuantizationError("no calibration images: give --calib-images N with N >= 1 and "
                                "a non-empty DATASETS.TRAIN")
    if backend not in BACKENDS or backend not in torch.backends.quantized.supported_engines:
        raise QuantizationError(f"backend {backend!r}: use one of {', '.join(BACKENDS)} "
                                "that this torch build supports "
                                f"({', '.join(torch.backends.quantized.supported_engines)})")
    torch.backends.quantized.engine = backend
    qmodel = _plain_convs(copy.deepcopy(model).cpu().eval())
    head_name = _head_name(qmodel)
    head = getattr(qmodel, head_name)
    # one real forward, the backbone's input and output caught on the way: each part's example
    backbone = qmodel.backbone
    seen: Dict[str, Any] = {}
    hook = backbone.register_forward_hook(lambda mod, args, out: seen.update(x=args[0], f=out))
    try:
        qmodel(batches[0])
    finally:
        hook.remove()
    if "x" not in seen:
        raise QuantizationError(f"{type(qmodel).__name__}: its forward did not call the "
                                "backbone; not a meta-architecture fna_d2 can quantize")
    x, feats = seen["x"], seen["f"]
    float_backbone = backbone
    stems = [n for n, _ in backbone.named_modules() if n.split(".")[-1] == BACKBONE_FLOAT]
    pb = _prepare(backbone, x, "the backbone", backend,
                  stems + slow_int8_convs(backbone, backend))
    if head_name == "sem_seg_head":
        layers = _SegLayers(head)
        ph = _prepare(layers, feats, "the segmentation head", backend,
                      SEG_FLOAT + tuple(slow_int8_convs(layers, backend)))
    else:
        names = list(getattr(qmodel, "head_in_features", None) or feats)
        flist = [feats[f] for f in names]
        lhead = _ListHead(head, len(flist))
        ph = _prepare(lhead, {f"p{i}": t for i, t in enumerate(flist)}, "the detection head",
                      backend, DET_FLOAT + tuple(slow_int8_convs(lhead, backend)))
    # calibrate: the prepared parts in place, the whole model run on each batch
    qmodel.backbone = _Observed(pb, float_backbone)
    if head_name == "sem_seg_head":
        setattr(qmodel, head_name, _QuantizedSegHead(ph, head))
    else:
        setattr(qmodel, head_name, _QuantizedListHead(ph, len(flist)))
    qmodel.eval()  # the new wrappers, and the observers in eval mode (BN folded, not trained)
    for batch in batches:
        qmodel(batch)
    qmodel.backbone = QuantizedBackbone(_convert(pb), float_backbone)
    if head_name == "sem_seg_head":
        setattr(qmodel, head_name, _QuantizedSegHead(_convert(ph), head))
    else:
        setattr(qmodel, head_name, _QuantizedListHead(_convert(ph), len(flist)))
    logger.info(f"quantized {type(model).__name__}: backbone and {head_name} to int8 "
                f"({backend}), calibrated on {sum(len(b) for b in batches)} images")
    return qmodel.eval()


class _Observed(QuantizedBackbone):
    """The prepared (observing) backbone during calibration."""
