"""Named architectures and search spaces, in one place: the seeds selectable by
``cfg.MODEL.FNA.SEED`` (MobileNetV2, EfficientNet-Lite0; their macro structure, i.e. widths and
strides, defines the search spaces and is what derived architectures must match), the
architecture FNA published for RetinaNet, and the paper's detection and segmentation spaces."""
from __future__ import annotations

from typing import Callable, Dict, Iterable, Optional, Sequence, Tuple, Union

from ..errors import ArchError
from .files import parse_authors_format
from .opnames import (FIRST_LAYER_OPS, OTHER_LAYER_OPS, SKIP, check_positive_int, location,
                      op_name)
from .types import Arch, SearchSpace, SearchStage, Stage

__all__ = ["mobilenetv2_arch", "efficientnet_lite0_arch", "fna_retinanet_arch", "SEED_ARCHS",
           "seed_arch", "space_from_seed", "seed_in_space", "detection_space",
           "segmentation_space", "SSDLITE_TAP_OPS", "ssdlite_tap_stage", "ssdlite_space"]

#: MobileNetV2 1.0 stages as (t, c, n, s); stage 0 is the fixed first block.
_MBV2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
         (6, 160, 3, 2), (6, 320, 1, 1))


def _stacked(rows: Iterable[Tuple[int, int, int, int, int]], name: str) -> Arch:
    """Stem 32, then one stage of ``n`` identical ``k{k}_e{e}`` layers per ``(k, e, c, n, s)``
    row (``c`` output channels, stride ``s``)."""
    stages, cin = [], 32
    for k, e, c, n, s in rows:
        stages.append(Stage(cin, c, s, (op_name(k, e),) * n))
        cin = c
    return Arch(tuple(stages), 32, {"name": name}).validate()


def mobilenetv2_arch() -> Arch:
    """The seed: MobileNetV2 1.0 (all k3, e6 except the first block)."""
    return _stacked(((3, t, c, n, s) for t, c, n, s in _MBV2), "mobilenetv2")


def fna_retinanet_arch() -> Arch:
    """The architecture FNA found for RetinaNet on COCO (paper, Table/figure in sec. 7)."""
    text = ("[[32, 16], ['k3_e1'], 1]|[[16, 24], ['k3_e6', 'k3_e6', 'skip', 'skip'], 2]|"
            "[[24, 32], ['k7_e6', 'k5_e6', 'skip', 'skip'], 2]|"
            "[[32, 64], ['k3_e6', 'k5_e6', 'k7_e6', 'k3_e6'], 2]|"
            "[[64, 96], ['k5_e6', 'k7_e6', 'skip', 'skip'], 1]|"
            "[[96, 160], ['k7_e6', 'k7_e6', 'k7_e3', 'k7_e6'], 2]|[[160, 320], ['k7_e6'], 1]")
    arch = parse_authors_format(text)
    return Arch(arch.stages, arch.stem_channels, {"name": "fna_retinanet_coco",
                                                  "source": "FNA paper (ICLR 2020)"})


#: EfficientNet-Lite0 stages as (e, c, n, s, k); stem 32; no SE, ReLU6 (the "lite" variant).
_EFFNET_LITE0 = ((1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 40, 2, 2, 5), (6, 80, 3, 2, 3),
                 (6, 112, 3, 1, 5), (6, 192, 4, 2, 5), (6, 320, 1, 1, 3))


def efficientnet_lite0_arch() -> Arch:
    """EfficientNet-Lite0 as an :class:`Arch` (the 1280 head conv is not part of it)."""
    return _stacked(((k, e, c, n, s) for e, c, n, s, k in _EFFNET_LITE0), "efficientnet_lite0")


#: ``cfg.MODEL.FNA.SEED`` value -> seed architecture factory
SEED_ARCHS: Dict[str, Callable[[], Arch]] = {
    "mobilenetv2": mobilenetv2_arch,
    "efficientnet_lite0": efficientnet_lite0_arch,
}


def seed_arch(name: str) -> Arch:
    """The seed architecture called ``name`` (``ArchError`` naming MODEL.FNA.SEED otherwise)."""
    try:
        return SEED_ARCHS[name]()
    except KeyError:
        raise ArchError(f"MODEL.FNA.SEED: unknown seed {name!r}; known seeds: "
                        f"{', '.join(sorted(SEED_ARCHS))}") from None


def space_from_seed(seed: Arch, depths: Sequence[int], name: str = "custom") -> SearchSpace:
    """Expand ``seed`` into a search space: stage 0 stays fixed; stage ``s>0`` gets
    ``depths[s-1]`` layers whose first layer chooses among :data:`FIRST_LAYER_OPS` and the
    rest among :data:`OTHER_LAYER_OPS` (the paper's rule; the seed's macro structure, i.e. its
    widths and strides, defines the space)."""
    seed.validate("seed")
    if len(depths) != len(seed.stages) - 1:
        raise ArchError(f"depths has {len(depths)} entries but the seed has "
                        f"{len(seed.stages) - 1} searchable stages")
    stages = [SearchStage(seed.stages[0].cin, seed.stages[0].cout, seed.stages[0].stride,
                          tuple((op,) for op in seed.stages[0].ops), seed.stages[0].dilation)]
    for s, (st, n) in enumerate(zip(seed.stages[1:], depths), start=1):
        check_positive_int(n, "depth", location("", s))
        cands = []
        for i in range(n):
            cin, cout, stride = st.layer_io(i)
            shape_kept = cin == cout and stride == 1
            cands.append(OTHER_LAYER_OPS if (i > 0 and shape_kept) else FIRST_LAYER_OPS)
        stages.append(SearchStage(st.cin, st.cout, st.stride, tuple(cands), st.dilation))
    return SearchSpace(tuple(stages), seed.stem_channels, name).validate()


def seed_in_space(seed: Arch, space: SearchSpace) -> Arch:
    """``seed`` as a path of ``space``: each stage's seed layers first, ``skip`` after
    (:class:`ArchError` if the seed does not fit the space)."""
    if len(seed.stages) != len(space.stages):
        raise ArchError(f"seed has {len(seed.stages)} stages, search space {space.name!r} "
                        f"{len(space.stages)}")
    stages = []
    for s, (st, sp) in enumerate(zip(seed.stages, space.stages)):
        if st.depth > sp.depth:
            raise ArchError(f"stage {s}: the seed has {st.depth} layers, the space {sp.depth}")
        stages.append(Stage(st.cin, st.cout, st.stride,
                            tuple(st.ops) + (SKIP,) * (sp.depth - st.depth), sp.dilation))
    arch = Arch(tuple(stages), seed.stem_channels, dict(seed.meta))
    if not space.contains(arch):
        raise ArchError(f"the seed is not a path of search space {space.name!r}")
    return arch


def detection_space(seed: Optional[Arch] = None) -> SearchSpace:
    """The paper's RetinaNet space: 4,4,4,4,4,1 layers (21 searchable)."""
    return space_from_seed(seed or mobilenetv2_arch(), (4, 4, 4, 4, 4, 1), "detection")


def segmentation_space(seed: Optional[Arch] = None) -> SearchSpace:
    """The paper's DeepLabv3 space: 4,4,6,6,4,1 layers (25 searchable)."""
    return space_from_seed(seed or mobilenetv2_arch(), (4, 4, 6, 6, 4, 1), "segmentation")


#: candidates of SSDLite's tap layer (the first layer of the stride-16 -> 32 stage): its
#: expansion output feeds the head, and the head's first level has 6 x 96 = 576 channels
SSDLITE_TAP_OPS: Tuple[str, ...] = tuple(op_name(k, 6) for k in (3, 5, 7))


def ssdlite_tap_stage(net: Union[Arch, SearchSpace]) -> int:
    """Index of the stage SSDLite taps: the stride-2 stage entered at stride 16 (MobileNetV2:
    the 96->160 stage); its first layer's expansion output is the head's first input."""
    stride = 2  # the stem
    for s, st in enumerate(net.stages):
        if stride == 16 and st.stride == 2:
            return s
        stride *= st.stride
    raise ArchError("SSDLite needs a stride-2 stage entered at stride 16 (MobileNetV2's "
                    "96->160 stage); this network has none")


def ssdlite_space(space: SearchSpace) -> SearchSpace:
    """``space`` with the first layer of the tapped stage (:func:`ssdlite_tap_stage`)
    choosing among :data:`SSDLITE_TAP_OPS` only (FNA's SSDLite space; name ``<name>_ssdlite``)."""
    s = ssdlite_tap_stage(space)
    st = space.stages[s]
    cands = (SSDLITE_TAP_OPS,) + tuple(st.candidates[1:])
    stages = list(space.stages)
    stages[s] = SearchStage(st.cin, st.cout, st.stride, cands, st.dilation)
    return SearchSpace(tuple(stages), space.stem_channels, f"{space.name}_ssdlite").validate()
