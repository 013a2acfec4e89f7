"""Failpoints: named places where the reliability tests kill the process for real (SIGKILL, no cleanup).

Off unless LOOPMDM_FAULT is set, so production pays one environment lookup per point reached:
  LOOPMDM_FAULT=POINT[:N]    fire the N-th time (default 1st) this process reaches POINT
  LOOPMDM_FAULT_MARKER=PATH  fire once per test: the first process to fire creates PATH; later lives skip it
  LOOPMDM_FAULT_KILL=sweep   kill the whole sweep (the driver's process group, then this process), as a
                             crashed machine would; =interrupt: send the driver SIGINT (Ctrl-C) and go on, as a
                             user stopping the sweep would; default: only this process (a worker killed by the OS)
Points: trial_start, step, checkpoint_write (files written, folder not yet renamed), mlflow_log (a batch about
to be sent).
"""

import os
import signal
from collections import Counter

_seen: Counter = Counter()


def reached(point: str):
    spec = os.environ.get("LOOPMDM_FAULT")
    if not spec:
        return
    name, _, nth = spec.partition(":")
    if name != point:
        return
    _seen[point] += 1
    if _seen[point] != int(nth or 1):
        return
    marker = os.environ.get("LOOPMDM_FAULT_MARKER")
    if marker:
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))  # atomic: exactly one process fires
        except FileExistsError:
            return
    kill = os.environ.get("LOOPMDM_FAULT_KILL")
    if kill == "interrupt":
        os.kill(os.getsid(0), signal.SIGINT)  # the driver leads the session (run_sweep under setsid)
        return
    if kill == "sweep":
        os.killpg(os.getsid(0), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
