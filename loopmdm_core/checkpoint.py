"""Checkpoints: one folder per step holding model.safetensors, optimizer.safetensors and state.json.

A checkpoint is written into a temporary folder and renamed into place, so a reader sees it whole or not at
all; state.json records a sha256 of every file, so truncated or altered files are detected on load and the
previous checkpoint is used instead. Nothing is unpickled: tensors are safetensors, the rest is JSON.
"""

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from . import failpoints
from .errors import CheckpointError
from .hashing import sha256_files

log = logging.getLogger(__name__)
STEP_DIR = re.compile(r"^step_(\d{9})$")
KEEP = 2  # checkpoints kept: the newest and one to fall back on


@dataclass
class Checkpoint:
    path: Path
    step: int
    state: dict  # everything state.json holds besides the file checksums


def _fsync(path: Path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # Tied weights appear under two names; safetensors refuses shared storage, so keep the first name only.
    seen, out = set(), {}
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        out[name] = tensor.detach().contiguous().cpu()
    return out


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    sd = optimizer.state_dict()
    tensors = {f"{idx}/{key}": value.detach().contiguous().cpu()
               for idx, state in sd["state"].items() for key, value in state.items()}
    return tensors, sd["param_groups"]


def save(root: str | Path, step: int, model, optimizer, state: dict) -> Path:
    """Write the checkpoint of `step` atomically under `root`; prune all but the newest KEEP. Returns its folder."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:09d}"
    for stale in root.glob(".tmp-step_*"):  # a write killed midway: one writer per folder, so none is live
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    tmp.mkdir()
    save_file(_model_tensors(model), str(tmp / "model.safetensors"))
    opt_tensors, param_groups = _optimizer_tensors(optimizer)
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    files = {name: sha256_files([tmp / name]) for name in ("model.safetensors", "optimizer.safetensors")}
    record = {"step": step, "files": files, "param_groups": param_groups, **state}
    (tmp / "state.json").write_text(json.dumps(record, indent=2))
    for name in (*files, "state.json"):
        _fsync(tmp / name)
    if final.exists():  # the same step saved again (a resumed run): replace it
        shutil.rmtree(final)
    failpoints.reached("checkpoint_write")
    os.rename(tmp, final)
    _fsync(root)
    for old in sorted(p for p in root.iterdir() if STEP_DIR.match(p.name))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def verify(path: Path) -> Checkpoint:
    """Read a checkpoint's state.json and check every file's checksum; CheckpointError if anything is off."""
    try:
        record = json.loads((path / "state.json").read_text())
        files = record.pop("files")
        step = record["step"]
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: unreadable state.json ({e})") from None
    for name, digest in files.items():
        if not (path / name).exists():
            raise CheckpointError(f"{path}: {name} is missing")
        if sha256_files([path / name]) != digest:
            raise CheckpointError(f"{path}: {name} does not match its checksum (truncated or altered)")
    return Checkpoint(path, step, record)


def latest(root: str | Path | None) -> Checkpoint | None:
    """The newest intact checkpoint under `root`, skipping corrupt ones with a warning; None if there is none.

    CheckpointError if there are checkpoints but none is intact: resuming from scratch silently would lose work.
    """
    if root is None or not Path(root).is_dir():
        return None
    candidates = sorted((p for p in Path(root).iterdir() if STEP_DIR.match(p.name)), reverse=True)
    problems = []
    for path in candidates:
        try:
            return verify(path)
        except CheckpointError as e:
            log.warning("skipping corrupt checkpoint: %s", e)
            problems.append(str(e))
    if problems:
        raise CheckpointError("no intact checkpoint to resume from:\n" + "\n".join(problems) +
                              "\nremove the folder to start over")
    return None


def restore(ckpt: Checkpoint, model, optimizer=None):
    """Load a verified checkpoint's weights (and optimizer state) in place."""
    try:
        tensors = load_file(str(ckpt.path / "model.safetensors"))
        missing, unexpected = model.load_state_dict(tensors, strict=False)
        tied = {n for n in missing if n == "head.weight" and model.cfg.tie_embeddings}
        if set(missing) - tied or unexpected:
            raise CheckpointError(f"{ckpt.path}: weights do not match this model (missing {sorted(set(missing) - tied)}, "
                                  f"unexpected {sorted(unexpected)}); was it written by another config?")
        if optimizer is not None:
            flat = load_file(str(ckpt.path / "optimizer.safetensors"))
            state: dict = {}
            for key, value in flat.items():
                idx, name = key.split("/", 1)
                state.setdefault(int(idx), {})[name] = value
            optimizer.load_state_dict({"state": state, "param_groups": ckpt.state["param_groups"]})
    except (RuntimeError, ValueError) as e:
        raise CheckpointError(f"{ckpt.path}: cannot load: {e}") from None


def load_model(root: str | Path, device="cpu"):
    """The model of the newest intact checkpoint under `root` (a run's checkpoints folder), for inference.
    Returns (model in eval mode, the run's config as a dict)."""
    from .config import load_run_config
    from .model import LoopMDM
    if not Path(root).is_dir():
        run = Path(root).parent if Path(root).name == "checkpoints" else Path(root)
        raise CheckpointError(f"{run}: no such run folder; give the --out folder of a `train` run"
                              if not run.is_dir() else
                              f"{root}: no such folder; give the --out folder of a `train` run")
    ckpt = latest(root)
    if ckpt is None:
        raise CheckpointError(f"{root}: no checkpoint here (the run has not reached its first checkpoint)")
    cfg = load_run_config(ckpt.state["config"])
    model = LoopMDM(cfg.model)
    restore(ckpt, model)
    return model.to(device).eval(), ckpt.state["config"]
