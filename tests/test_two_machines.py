"""Two machines of one process each on localhost, the way a user outgrows one server:
``train_net.py --num-machines 2 --machine-rank 0|1 --dist-url tcp://127.0.0.1:PORT`` as two
commands, one search iteration, with every process of both machines (the spawned workers too,
through a ``sitecustomize``) under the NCCL-like condition of ``_nccl_like``. Rank 0 (machine 0)
writes the outputs and records a world of 2; both commands exit 0."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from _search_cfg import REPO, search_cfg

TESTS = os.path.dirname(os.path.abspath(__file__))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(600)
def test_search_on_two_single_process_machines(tmp_path):
    out = tmp_path / "out"
    cfg = search_cfg(out, **{"SOLVER.MAX_ITER": 1, "MODEL.FNA.SEARCH.WARMUP_ITERS": 0,
                             "MODEL.FNA.SEARCH.DERIVE_PERIOD": 0,
                             "SOLVER.CHECKPOINT_PERIOD": 100})
    cfg_file = tmp_path / "search.yaml"
    cfg_file.write_text(cfg.dump())
    url = f"tcp://127.0.0.1:{_free_port()}"
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        f"import sys\nsys.path.insert(0, {TESTS!r})\n"
        "from _nccl_like import install_nccl_like\ninstall_nccl_like()\n")
    path = os.pathsep.join([str(site), REPO, os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path)
    procs = [subprocess.Popen([sys.executable, os.path.join(REPO, "train_net.py"),
                               "--config-file", str(cfg_file), "--num-gpus", "1",
                               "--num-machines", "2", "--machine-rank", str(rank),
                               "--dist-url", url],
                              cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
             for rank in (0, 1)]
    logs = [p.communicate(timeout=540)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    meta = json.loads((out / "searched_arch.json").read_text())["meta"]
    assert meta["world_size"] == 2 and meta["total_batch"] == 2
