"""For tests that run several processes: every rank's result dict, gathered to rank 0 and saved
to one file the test process reads (imported by the spawned workers)."""
import torch
from detectron2.utils import comm


def save_gathered(mine: dict, result_path: str) -> None:
    gathered = comm.all_gather(mine)
    if comm.is_main_process():
        torch.save(gathered, result_path)
    comm.synchronize()
