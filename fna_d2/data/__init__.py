"""fna_d2's data: the demo datasets (:mod:`.demo` registers them with Detectron2 at import;
:mod:`.trees` and :mod:`.nuclei` build them from package-shipped data, with the shared
machinery in :mod:`.builder`) and the search's arch/weight split of the training set
(:mod:`.split`)."""
from . import demo  # noqa: F401  (registers the demo datasets)
from .builder import atomic_build, datasets_root, is_complete
from .demo import DEMO_DATASETS, NUCLEI_DATASETS, TREE_DATASETS, ensure_demo_data, register_demo_datasets
from .nuclei import prepare_nuclei_demo
from .split import SPLIT_FORMAT, DataSplit, image_ids_hash, make_split, save_split, split_indices
from .trees import prepare_tree_demo

__all__ = ["demo", "DEMO_DATASETS", "TREE_DATASETS", "NUCLEI_DATASETS", "ensure_demo_data",
           "register_demo_datasets", "prepare_tree_demo", "prepare_nuclei_demo", "datasets_root",
           "is_complete", "atomic_build", "DataSplit", "SPLIT_FORMAT", "split_indices",
           "image_ids_hash", "make_split", "save_split"]
