"""Single-run CLI: `python -m loopmdm_core train --config run.yaml [--set model.n_loops=3 ...]`, then
`python -m loopmdm_core sample RUN` (generate) and `python -m loopmdm_core loops RUN` (inference loop scaling).

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
    parser = argparse.ArgumentParser(prog="python -m loopmdm_core", description=(
        "Train one LoopMDM run on its FLOPs budget (train), generate from a trained run (sample), or score it at "
        "each inference loop count (loops). No Ray, no MLflow: metrics go to <out>/metrics.jsonl; the same "
        "command with the same --out resumes."))
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train one run on its FLOPs budget")
    t.add_argument("--config", help="run config YAML (default: the built-in tiny config, configs/default.yaml)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value by its dotted key, e.g. --set model.n_loops=3 (repeatable)")
    t.add_argument("--out", help="run folder for metrics.jsonl and checkpoints; reuse it to resume "
                                 "(default: runs/<UTC time>)")
    t.add_argument("--dry-run", action="store_true", help="print the plan (params, FLOPs, steps) and stop")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    g = sub.add_parser("sample", help="generate text from a trained run")
    g.add_argument("run", help="a run folder of `train` (its checkpoints/ are read)")
    g.add_argument("--prompt", default="", help="text the samples start with (never masked)")
    g.add_argument("--length", type=int, help="tokens per sample, prompt included (default: the run's seq_len)")
    g.add_argument("-n", "--num-samples", type=int, default=2, help="how many samples to generate (default: 2)")
    g.add_argument("--steps", type=int, default=64, help="denoising steps: at most one network call each (default: 64)")
    g.add_argument("--method", choices=("ancestral", "confidence"), default="ancestral",
                   help="ancestral: reveal each masked token with probability 1 - s/t (MDLM); confidence: reveal "
                        "the most confident tokens first (LLaDA) (default: ancestral)")
    g.add_argument("--block-size", type=int, help="semi-autoregressive blocks of this many tokens")
    g.add_argument("--temperature", type=float, default=1.0,
                   help="softmax temperature of each draw; 0 is greedy (default: 1.0)")
    g.add_argument("--schedule", help="loops per step: fixed:K, ramp:A:B, table:..., confidence:LOW:HIGH:THR, "
                                      "convergence:TOL:MIN:MAX (default: the trained n_loops)")
    g.add_argument("--seed", type=int, default=0, help="seeds the sampler's draws: the same seed gives the same "
                                                       "samples (default: 0)")

    s = sub.add_parser("loops", help="validation loss of a trained run at each inference loop count")
    s.add_argument("run", help="a run folder of `train`")
    s.add_argument("--max-loops", type=int, help="score n_loops = 1..MAX (default: 2x the trained count)")
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
    from .plan import plan
    from .train import train
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


def _load_run(folder: str):
    """A trained run's model (newest checkpoint), config and token data (for the tokenizer and validation)."""
    from .checkpoint import load_model
    from .data import load_token_data
    model, config = load_model(Path(folder) / "checkpoints")
    cfg = load_run_config(config)
    return model, cfg, load_token_data(cfg.data)


def cmd_sample(args) -> int:
    import torch

    from . import schedules
    from .sample import sample
    model, cfg, data = _load_run(args.run)
    tok = data.tokenizer
    prompt = torch.tensor(tok.encode_batch([args.prompt])[0], dtype=torch.long) if args.prompt else None
    length = args.length or cfg.data.seq_len
    if prompt is not None and len(prompt) >= length:
        raise LoopMDMError(f"--prompt is {len(prompt)} tokens, not shorter than --length {length}")
    result = sample(model, batch_size=args.num_samples, length=length, mask_id=data.mask_id, n_tokens=data.mask_id,
                    n_steps=args.steps, method=args.method, prompt=prompt, block_size=args.block_size,
                    temperature=args.temperature, schedule=schedules.parse(args.schedule) if args.schedule else None,
                    seed=args.seed)
    for i, row in enumerate(result.tokens.tolist()):
        print(f"--- sample {i}\n{tok.decode(row)}")
    loops = " ".join("/".join(str(k) for k in sorted(set(rows))) for rows in result.loops)  # 1/3: rows differed
    print(f"--- {result.calls} network calls, loops per call: {loops}; {result.flops:.3g} forward FLOPs")
    return 0


def cmd_loops(args) -> int:
    from .evaluate import loop_scaling
    model, cfg, data = _load_run(args.run)
    batches, fixed = data.val_batches(cfg.eval.n_batches, cfg.eval.batch_size)
    top = args.max_loops or 2 * cfg.model.n_loops
    print(f"{'n_loops':>7}  {'val loss':>9}  {'val ppl':>8}  {'fwd FLOPs/token':>15}")
    for row in loop_scaling(model, batches, data.mask_id, range(1, top + 1), cfg.eval.n_t, cfg.eval.seed,
                            fixed=fixed):
        mark = "  (trained)" if row["n_loops"] == cfg.model.n_loops else ""
        print(f"{row['n_loops']:>7}  {row['val_loss']:>9.4f}  {row['val_ppl']:>8.1f}  "
              f"{row['forward_flops_per_token']:>15.3g}{mark}")
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return {"train": cmd_train, "sample": cmd_sample, "loops": cmd_loops}[args.command](args)
    except LoopMDMError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume from the last checkpoint", file=sys.stderr)
        return 130
