"""Single-run CLI: `python -m loopmdm_core train --config run.yaml [--set model.n_loops=3 ...]`.

No Ray and no MLflow: metrics go to <out>/metrics.jsonl, checkpoints to <out>/checkpoints, and running the
same command again with the same --out resumes. User errors print one line and exit 2, without a traceback.
"""

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import yaml

from . import checkpoint, metrics
from .config import apply_overrides, load_run_config, read_yaml
from .errors import LoopMDMError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loopmdm_core", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train one run on its FLOPs budget")
    t.add_argument("--config", help="run config YAML (default: the built-in tiny config, configs/default.yaml)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value by its dotted key, e.g. --set model.n_loops=3 (repeatable)")
    t.add_argument("--out", help="run folder for metrics.jsonl and checkpoints; reuse it to resume "
                                 "(default: runs/<UTC time>)")
    t.add_argument("--dry-run", action="store_true", help="print the plan (params, FLOPs, steps) and stop")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return parser


class JsonlSink:
    """Appends one JSON line per report to <out>/metrics.jsonl, creating the run folder (with the resolved
    config.yaml) at the first report, so a run that fails before training leaves nothing behind. On resume it
    first drops the lines past the checkpoint being resumed: no step is ever written twice."""

    def __init__(self, out: Path, config: dict, resume_step: int):
        self.out, self.config, self.resume_step = out, config, resume_step
        self._file = None

    def _open(self):
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.yaml").write_text(yaml.safe_dump(self.config, sort_keys=False))
        path = self.out / "metrics.jsonl"
        if path.exists():
            kept = [line for line in path.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= self.resume_step]
            path.write_text("".join(line + "\n" for line in kept))
        self._file = open(path, "a")

    def __call__(self, step: int, values: dict):
        if self._file is None:
            self._open()
        self._file.write(json.dumps({"step": step, **values}) + "\n")
        self._file.flush()


class ProgressBar:
    """tqdm over optimizer steps, showing the latest loss, tokens/s and the ETA."""

    def __init__(self, total: int, initial: int, enabled: bool):
        from tqdm import tqdm
        self.bar = tqdm(total=total, initial=initial, unit="step", disable=not enabled, dynamic_ncols=True)
        self.shown = {}

    def __call__(self, step: int, values: dict):
        for key, label in ((metrics.TRAIN_LOSS, "loss"), (metrics.VAL_LOSS, "val"),
                           (metrics.TOKENS_PER_S, "tok/s")):
            if key in values:
                self.shown[label] = f"{values[key]:.4g}" if label != "tok/s" else f"{values[key]:,.0f}"
        self.bar.set_postfix(self.shown, refresh=False)
        self.bar.update(step - self.bar.n)

    def close(self):
        self.bar.close()


def cmd_train(args) -> int:
    from .train import plan, train
    data = read_yaml(args.config) if args.config else {}
    cfg = load_run_config(apply_overrides(data, args.overrides))
    run = plan(cfg)
    print(f"model: {run.config.model.n_layers} layers x {run.config.model.d_model}, loop "
          f"[{run.config.model.loop_start}, {run.config.model.loop_end}) x {run.config.model.n_loops} "
          f"({run.config.model.applied_layers()} applied), {run.params:,} params")
    print(f"budget: {cfg.train.budget_flops:.3g} FLOPs = {run.steps:,} steps x {run.flops_per_step:.3g} FLOPs "
          f"({run.flops_per_token:.3g}/token, {run.tokens_per_step:,} tokens/step)")
    if args.dry_run:
        return 0
    out = Path(args.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S", time.gmtime())).resolve()
    ckpt_dir = out / "checkpoints"
    resume = checkpoint.latest(ckpt_dir)
    start = resume.step if resume else 0
    jsonl = JsonlSink(out, run.config.to_dict(), start)
    bar = ProgressBar(run.steps, start, enabled=not args.quiet)
    print(f"run folder: {out}" + (f" (resuming from step {start})" if resume else ""))

    def sink(step, values):
        jsonl(step, values)
        bar(step, values)

    try:
        result = train(cfg, sink=sink, checkpoint_dir=ckpt_dir)
    finally:
        bar.close()
    trained = (result.steps - result.resumed_from) * run.tokens_per_step
    print(f"done: {result.steps:,} steps, {result.flops:.3g} FLOPs, {result.tokens:,} tokens, attention "
          f"{result.attention_backend}; this session trained "
          f"{trained:,} tokens in {result.train_seconds:.0f} s ({trained / max(result.train_seconds, 1e-9):,.0f} tokens/s)")
    print(f"validation: {result.val_loss:.4f} nats/token (ELBO bound), perplexity {result.val_ppl:.1f}; "
          f"unigram reference perplexity {result.unigram_ppl:.1f} ({result.unigram_ppl / result.val_ppl:.2f}x better)")
    print(f"metrics: {out / 'metrics.jsonl'}")
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return cmd_train(args)
    except LoopMDMError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume from the last checkpoint", file=sys.stderr)
        return 130
