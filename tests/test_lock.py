"""One live run per output folder (fna_d2.utils.lock): a second ``python -m fna_d2.pipeline``
into a folder another live process holds exits 2 naming that process; the lock of a holder
that died (killed with SIGKILL: no clean-up ran) is taken over, with a logged note."""
import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from fna_d2.utils import OutputDirLock, lock_holder
from fna_d2.utils.lock import LOCK_NAME

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PIPELINE_CFG = os.path.join(ROOT, "configs", "instant_test", "trees_pipeline.yaml")
ENV = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))

pytestmark = pytest.mark.timeout(600)

HOLD = """
import sys, time
from fna_d2.utils import OutputDirLock
lock = OutputDirLock(sys.argv[1])
assert lock.try_acquire()
print("held", flush=True)
time.sleep(600)
"""


@pytest.fixture
def holder(tmp_path):
    """A child process that takes the lock of ``tmp_path/run`` and sleeps holding it."""
    out = str(tmp_path / "run")
    child = subprocess.Popen([sys.executable, "-c", HOLD, out], stdout=subprocess.PIPE,
                             text=True, env=ENV, cwd=ROOT)
    try:
        assert child.stdout.readline().strip() == "held"
        yield out, child
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()


def _pipeline(out, *args):
    return subprocess.run([sys.executable, "-m", "fna_d2.pipeline", "--config-file",
                           PIPELINE_CFG, "--output-dir", out, *args], capture_output=True,
                          text=True, env=ENV, cwd=ROOT, timeout=540)


def test_second_pipeline_into_a_held_folder_exits_2_naming_the_holder(holder):
    out, child = holder
    # "derive" alone would stop at its missing input; the held folder must be refused first
    proc = _pipeline(out, "--stages", "derive")
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("fna_d2.pipeline")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    msg = lines[0]
    assert msg.startswith("fna_d2.pipeline: error: ")
    assert f"pid {child.pid} on host {socket.gethostname()}" in msg, msg
    assert os.path.join(out, LOCK_NAME) in msg and "started 20" in msg and "python" in msg
    assert child.poll() is None  # the holder is left alone
    # --status reads without taking the folder, and says who runs it
    status = _pipeline(out, "--status")
    assert status.returncode == 0, status.stderr
    assert f"is being run by pid {child.pid}" in status.stdout


def test_lock_of_a_killed_holder_is_taken_over_with_a_note(holder, caplog):
    out, child = holder
    assert lock_holder(out).pid == child.pid
    child.send_signal(signal.SIGKILL)  # no clean-up: its record stays in the lock file
    child.wait()
    assert json.load(open(os.path.join(out, LOCK_NAME)))["pid"] == child.pid
    assert lock_holder(out) is None  # the kernel released the flock with the process
    # the pipeline takes the folder over and logs it (then stops: derive's input is missing)
    proc = _pipeline(out, "--stages", "derive")
    assert proc.returncode == 2 and "from stage 'search', which is new" in proc.stderr, proc.stderr
    log = open(os.path.join(out, "pipeline_log.txt")).read()
    assert "taking it over from a run that ended without releasing it" in log
    assert f"pid {child.pid} on host {socket.gethostname()}" in log
    assert open(os.path.join(out, LOCK_NAME)).read() == ""  # released cleanly on exit


def test_lock_semantics_in_one_process(tmp_path, caplog):
    d = str(tmp_path / "d")
    a, b = OutputDirLock(d), OutputDirLock(d)
    assert a.try_acquire() and a.previous is None and a.held
    assert a.try_acquire()  # re-entrant for its owner
    assert not b.try_acquire()  # another open file: refused, even in the same process
    assert b.holder.pid == os.getpid() and lock_holder(d).pid == os.getpid()
    assert f"pid {os.getpid()}" in b.refusal() and d in b.refusal()
    a.release()
    assert lock_holder(d) is not None  # still held once
    a.release()
    assert lock_holder(d) is None and not a.held
    with caplog.at_level("WARNING"):
        assert b.try_acquire()
    assert b.previous is None and "taking it over" not in caplog.text  # clean release
    b.release()


def test_unreadable_or_foreign_records_do_not_block_a_free_lock(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / LOCK_NAME).write_text("{not json")
    lock = OutputDirLock(str(d))
    assert lock.try_acquire() and lock.previous is None
    lock.release()


def test_a_folder_inside_a_held_one_is_refused_when_asked(tmp_path):
    """What train_net.py would use for its OUTPUT_DIR: a stage folder of a running pipeline
    counts as held."""
    root = str(tmp_path / "run")
    pipe = OutputDirLock(root)
    assert pipe.try_acquire()
    inner = OutputDirLock(os.path.join(root, "adapt"))
    assert not inner.try_acquire(enclosing=True)
    msg = inner.refusal("a pipeline")
    assert f"{inner.directory} is inside {root}, which is in use by a pipeline" in msg
    assert f"pid {os.getpid()}" in msg and os.path.join(root, LOCK_NAME) in msg
    pipe.release()
    assert inner.try_acquire(enclosing=True)
    inner.release()


def test_train_net_into_a_held_folder_exits_2_naming_the_holder(holder):
    out, child = holder
    cfg = os.path.join(ROOT, "configs", "instant_test", "trees_adapt.yaml")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "train_net.py"), "--config-file",
                           cfg, "OUTPUT_DIR", out], capture_output=True, text=True, env=ENV,
                          cwd=ROOT, timeout=540)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("train_net.py: error")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert str(child.pid) in lines[0] and out in lines[0]
