"""What a new user sees first in the MLflow UI of a sweep, checked in a real browser; takes the README's screenshot.

python benchmarks/mlflow_ui_check.py [--store results/positive_control/mlflow.db | --synthetic]
                                     [--out docs/mlflow_loss_vs_flops.png] [--first-visit]

Copies the store (or writes a synthetic 20-trial sweep shaped like sweeps/iso_flops.yaml) to a temporary folder,
gives its latest sweep what `orchestrator/run_sweep.py` gives a new one (orchestrator.tracking.publish_sweep_ui;
sweeps run before it existed have none), starts a real `mlflow server` on 127.0.0.1, opens the URL that
run_sweep.py prints in headless Chromium (driven over the DevTools protocol: stdlib only), waits until the chart
has drawn, counts the trials listed and the curves drawn, saves a screenshot and opens the parent run's page to
check its description. MLflow's Assistant panel opens by itself on a browser's first visit to a local server;
closing it once is remembered. The screenshot shows the page after that click, unless --first-visit.
Exit status 0 when every trial is listed and plotted and the description is there, 1 otherwise.
"""

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlflow.tracking import MlflowClient  # noqa: E402

from orchestrator import tracking  # noqa: E402

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]
# what the first click on a local MLflow server's page does for good: the Assistant panel stays closed
ASSISTANT_SEEN = "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');"
SECTION = tracking.SECTION_NAME
# The runs listed, and per chart of our section its title and the curves drawn (one trace per run in Plotly).
PAGE_STATE = """(() => {
  const text = document.body ? document.body.innerText : '';
  const listed = (text.match(/(\\d+) matching runs?/) || [])[1];
  const section = [...document.querySelectorAll('*')].find(e => e.childElementCount === 0
      && (e.textContent || '').startsWith('%s'));
  let charts = [];
  if (section) {
    let box = section;
    while (box && box.querySelectorAll('.js-plotly-plot').length === 0) box = box.parentElement;
    charts = box ? [...box.querySelectorAll('.js-plotly-plot')].map(p => (
      {curves: new Set((p.data || []).filter(t => (t.x || []).length).map(t => t.name)).size})) : [];
  }
  return {listed: listed ? Number(listed) : null, section: Boolean(section), charts: charts,
          assistant: text.includes('Ask questions about your experiments'), shared: text.includes('shared view'),
          title: document.title};
})()""" % SECTION


# the parent run's page shows its description, with the link to the sweep's view
DESCRIBED = """(() => document.body && document.body.innerText.includes('LoopMDM sweep')
  && [...document.querySelectorAll('a')].some(a => (a.getAttribute('href') || '').includes('%s')))()"""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


class WebSocket:
    """The client side of RFC 6455, as much as the DevTools protocol needs: text frames, masked when sent."""

    def __init__(self, url: str, timeout: float = 60):
        u = urllib.parse.urlsplit(url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {u.path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                           ).encode())
        self.buffer = bytearray()
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, _, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        self.buffer = bytearray(rest)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise ConnectionError(f"no WebSocket upgrade: {head[:200]!r}")

    def _fill(self):
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("the browser closed the connection")
        self.buffer += chunk

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self._fill()
        out = bytes(self.buffer[:n])
        del self.buffer[:n]
        return out

    def send(self, text: str):
        data, mask = text.encode(), os.urandom(4)
        n = len(data)
        head = bytearray([0x81])
        if n < 126:
            head.append(0x80 | n)
        elif n < 1 << 16:
            head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
        else:
            head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
        self.sock.sendall(bytes(head) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def recv(self) -> str:
        message = bytearray()
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(self._read(2), "big")
            elif n == 127:
                n = int.from_bytes(self._read(8), "big")
            mask = self._read(4) if b1 & 0x80 else None
            payload = self._read(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            opcode = b0 & 0x0F
            if opcode == 0x8:
                raise ConnectionError("the browser closed the connection")
            if opcode in (0x0, 0x1, 0x2):
                message += payload
                if b0 & 0x80:
                    return message.decode()


class Browser:
    """Headless Chromium in its own process group with a throwaway profile, one page driven over DevTools."""

    def __init__(self, binary: str, profile: Path, width: int, height: int):
        self.proc = subprocess.Popen([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                      f"--window-size={width},{height}", "--remote-debugging-port=0",
                                      "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        port_file, deadline = profile / "DevToolsActivePort", time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("Chromium did not start")
            time.sleep(0.2)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            page = next(t for t in json.load(response) if t["type"] == "page")
        self.ws, self.next_id = WebSocket(page["webSocketDebuggerUrl"]), 0
        self.call("Page.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def open(self, url: str):
        self.call("Page.navigate", url=url)

    def screenshot(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))

    def close(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)


def start_server(db: Path) -> tuple[subprocess.Popen, str]:
    """A real `mlflow server` on 127.0.0.1 over the SQLite file; returns (process, URL) once /health answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                               "--backend-store-uri", f"sqlite:///{db}", "--workers", "1"], cwd=db.parent,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(url + "/health", timeout=2).read()
            return server, url
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("mlflow server did not start") from None
            time.sleep(0.5)


def stop(proc: subprocess.Popen):
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def latest_sweep(client: MlflowClient, experiment: str | None):
    """The newest parent run (tag loopmdm.role = sweep) of the experiment, or of any experiment."""
    exps = [client.get_experiment_by_name(experiment)] if experiment else client.search_experiments()
    runs = client.search_runs([e.experiment_id for e in exps if e], "tags.`loopmdm.role` = 'sweep'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise SystemExit(f"no sweep (a run tagged loopmdm.role = sweep) in {experiment or 'the store'}")
    return runs[0]


def give_sweep_its_ui(client: MlflowClient, parent) -> tuple[int, bool]:
    """What run_sweep.py gives a new sweep (publish_sweep_ui), for a sweep that began before it did; returns the
    number of trials and whether the sweep had it already."""
    exp_id, parent_id = parent.info.experiment_id, parent.info.run_id
    trials = tracking.child_runs(client, exp_id, parent_id)
    if tracking.VIEW_TAG + tracking.view_key(parent_id) in client.get_experiment(exp_id).tags:
        return len(trials), True
    keys = {k for t in trials for k in t.data.metrics}
    metric_keys = [k for k in ("val/loss", "val/answer_loss", "val/accuracy") if k in keys]
    summary = tracking.summary_from_trials(client, parent, trials)
    tracking.publish_sweep_ui(client, exp_id, parent_id, summary, metric_keys, client.tracking_uri)
    return len(trials), False


def wait_for_chart(browser: Browser, trials: int, timeout: float) -> dict:
    """Poll the page until our section's first chart draws a curve per trial (or time runs out); the last state."""
    deadline, state = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        state = browser.evaluate(PAGE_STATE) or {}
        if state.get("charts") and state["charts"][0]["curves"] >= trials and state.get("listed") == trials:
            time.sleep(1.5)  # let the chart finish its transition before the screenshot
            return browser.evaluate(PAGE_STATE) or state
        time.sleep(0.5)
    return state


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--store", default=str(ROOT / "results" / "positive_control" / "mlflow.db"),
                        help="an MLflow SQLite file to copy (default: the positive control's)")
    source.add_argument("--synthetic", action="store_true",
                        help="a synthetic sweep shaped like sweeps/iso_flops.yaml (20 trials) instead")
    parser.add_argument("--experiment", help="the sweep's experiment (default: the latest sweep of the store)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "mlflow_loss_vs_flops.png"), help="the screenshot")
    parser.add_argument("--size", default="1600x1000", help="browser window, WIDTHxHEIGHT")
    parser.add_argument("--first-visit", action="store_true",
                        help="leave MLflow's Assistant panel open, as a browser's first visit shows it")
    parser.add_argument("--timeout", type=float, default=90, help="seconds to wait for the chart")
    parser.add_argument("--workdir", help="folder for the store's copy, the browser profile and the parent run's "
                                           "screenshot (default: a new temporary folder)")
    args = parser.parse_args(argv)
    browser_binary = find_chromium()
    if browser_binary is None:
        print("error: Chromium is not installed (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    width, height = (int(x) for x in args.size.split("x"))
    folder = Path(args.workdir or tempfile.mkdtemp(prefix="mlflow_ui_check_"))
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "mlflow.db"
    if args.synthetic:
        sys.path.insert(0, str(ROOT / "tests"))
        from synthetic_sweep import make_sweep
        tracking.check_store(f"sqlite:///{db}")
        make_sweep(f"sqlite:///{db}", args.experiment or "iso_flops", budgets=(4e11, 1e12), seeds=(0, 1),
                   loops=((2, 1.3), (3, 1.6)), depth_factor=1.4, noise=0.01)
    else:
        shutil.copy(args.store, db)
    client = MlflowClient(f"sqlite:///{db}")
    parent = latest_sweep(client, args.experiment)
    trials, had_ui = give_sweep_its_ui(client, parent)
    exp_id, parent_id = parent.info.experiment_id, parent.info.run_id
    server, base = start_server(db)
    browser = None
    try:
        browser = Browser(browser_binary, folder / "chromium-profile", width, height)
        if not args.first_visit:
            browser.call("Page.addScriptToEvaluateOnNewDocument", source=ASSISTANT_SEEN)
        url = f"{base}/{tracking.sweep_path(exp_id, parent_id)}"
        start = time.monotonic()
        browser.open(url)
        state = wait_for_chart(browser, trials, args.timeout)
        seconds = time.monotonic() - start
        out = Path(args.out)
        browser.screenshot(out)
        browser.open(f"{base}/{tracking.run_path(exp_id, parent_id)}")
        deadline, described = time.monotonic() + args.timeout, False
        while time.monotonic() < deadline and not described:
            described = bool(browser.evaluate(DESCRIBED % tracking.view_key(parent_id)))
            time.sleep(0.5)
        browser.screenshot(folder / "parent_run.png")
    finally:
        if browser:
            browser.close()
        stop(server)
    charts = state.get("charts") or []
    curves = charts[0]["curves"] if charts else 0
    print(f"store: {'synthetic sweep' if args.synthetic else args.store} (copy in {folder}); the sweep's view and "
          f"description: {'as run_sweep.py made them' if had_ui else 'added here (the sweep predates them)'}")
    print(f"URL (as run_sweep.py prints it, here on port {urllib.parse.urlsplit(base).port}): {url}")
    print(f"after {seconds:.1f} s: {state.get('listed')} runs listed of {trials} trials; our section "
          f"{'shown' if state.get('section') else 'MISSING'} with {len(charts)} chart(s), the first drawing "
          f"{curves} curve(s); the Assistant panel {'open' if state.get('assistant') else 'closed'}; "
          f"{'a shared-view banner' if state.get('shared') else 'no shared-view banner'}")
    print(f"parent run page: description {'shown, with the link to the view' if described else 'MISSING'} "
          f"({folder / 'parent_run.png'})")
    print(f"screenshot: {out}")
    ok = state.get("listed") == trials and curves >= trials and described
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
