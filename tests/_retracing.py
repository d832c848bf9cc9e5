"""Count TensorFlow's "retracing" warnings of a script run in a fresh process.

TensorFlow counts traces per Python function across the whole process, so other tests'
models would count towards a run's warning: the script runs in its own interpreter.
"""

from __future__ import annotations

import subprocess
import sys

_HARNESS = """
import logging, os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
messages = []
class Catch(logging.Handler):
    def emit(self, record):
        messages.append(record.getMessage())
logging.getLogger("tensorflow").addHandler(Catch())
"""


def retracing_warnings(body: str, timeout: float = 300) -> int:
    """Run ``body`` (Python source) in a fresh interpreter; return its retracing warnings."""
    script = _HARNESS + body + '\nprint("RETRACING", sum("retracing" in m for m in messages))\n'
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(proc.stdout.rsplit("RETRACING", 1)[1].split()[0])
