"""Run configuration: dataclasses with strict loading from dicts and YAML.

Unknown keys and wrong types are errors naming the dotted path and the closest valid key; every problem of
a config is reported at once. `flatten()` gives the dotted keys used as MLflow params and in `--set` overrides.
"""

import copy
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import loop_sampling
from .errors import ConfigError
from .model import ModelConfig


@dataclass(frozen=True)
class DataConfig:
    corpus: str = "builtin:shakespeare"  # builtin:NAME, a .txt/.jsonl/.parquet file or folder, hf:NAME[:CONFIG],
    # or none (only the task below)
    task: str = ""  # mix a reasoning task's train problems into the corpus: arithmetic[:DIGITS] or gsm8k:PATH
    task_problems: int = 10000  # arithmetic: train problems generated for the mix (gsm8k: 0 = the whole file)
    # prompted: each problem is its own row, prompt tokens never masked, the answer then EOS up to seq_len
    # (LLaDA's SFT format: every masked token is something the prompt determines); text: problems are plain
    # documents packed with the corpus, every token maskable (the model must also learn to write prompts)
    task_format: str = "prompted"
    text_field: str = "text"  # the text column of .jsonl/.parquet/hf corpora
    tokenizer: str = "bpe"  # bpe: a byte-level BPE trained on the corpus; gpt2: GPT-2's BPE (tiktoken)
    bpe_vocab_size: int = 512  # size of the trained BPE, special tokens included
    seq_len: int = 64
    val_fraction: float = 0.05  # share of documents held out (at least one)
    cache_dir: str = ""  # "": $LOOPMDM_CACHE or ~/.cache/loopmdm

    def problems(self) -> list[str]:
        p = []
        if self.tokenizer not in ("bpe", "gpt2"):
            p.append(f"data.tokenizer: {self.tokenizer!r} is not one of bpe, gpt2")
        if self.tokenizer == "bpe" and not 256 < self.bpe_vocab_size <= 1 << 20:
            p.append(f"data.bpe_vocab_size: must be in (256, 1048576] (byte-level BPE starts from 256 bytes), "
                     f"got {self.bpe_vocab_size}")
        if self.seq_len < 2:
            p.append(f"data.seq_len: must be >= 2, got {self.seq_len}")
        if self.corpus == "none" and not self.task:
            p.append("data.corpus: none needs data.task (e.g. arithmetic) to train on")
        from .corpus import spec_problems
        p.extend(spec_problems(self.corpus))
        if self.task:
            from .errors import DataError
            from .tasks import parse_spec
            try:
                parse_spec(self.task)
            except DataError as e:
                p.append(f"data.{e}")
        if self.task_format not in ("prompted", "text"):
            p.append(f"data.task_format: {self.task_format!r} is not one of prompted, text")
        if self.task_problems < 0:
            p.append(f"data.task_problems: must be >= 0, got {self.task_problems}")
        if not 0 < self.val_fraction < 1:
            p.append(f"data.val_fraction: must be in (0, 1), got {self.val_fraction}")
        return p


@dataclass(frozen=True)
class TrainConfig:
    budget_flops: float = 1.5e13  # cumulative training FLOPs (flops.py); fixes the number of steps
    batch_size: int = 16
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # the schedule ends at lr * min_lr_ratio
    schedule: str = "cosine"  # cosine | wsd (warmup-stable-decay)
    warmup_frac: float = 0.05  # share of steps of linear warmup
    decay_frac: float = 0.2  # wsd only: share of steps of the final linear decay
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 0 disables clipping
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | bf16 | fp32
    compile: bool = False  # torch.compile the transformer blocks (CUDA)
    # with compile, on CUDA: replay each block's kernels as one CUDA graph (torch.compile's "reduce-overhead"):
    # a small model's step waits on kernel launches from the host, not on the GPU (docs/performance.md)
    cuda_graphs: bool = False
    checkpoint_loops: bool = False  # recompute each pass of the looped block in backward: less memory, more time
    # loop count per optimizer step (loop_sampling.py): fixed (model.n_loops), uniform:LO:HI or
    # poisson_lognormal:MEAN:SIGMA; model.n_loops stays the count validation and inference use
    loop_sampling: str = "fixed"
    loop_backprop: int = 0  # backpropagate through the last K passes of the loop only; 0: all passes
    log_every: int = 10  # steps between train-loss/throughput metrics
    checkpoint_every: int = 0  # steps between checkpoints; 0: at every evaluation
    peak_flops: float = 0.0  # FLOP/s for MFU; 0: the card's datasheet bf16 peak (measured on unknown CUDA cards;
    # on a CPU none is known and perf/mfu is not logged). MFU above 1 is never logged: the peak would be wrong

    def problems(self) -> list[str]:
        p = []
        if not self.budget_flops > 0:
            p.append(f"train.budget_flops: must be > 0, got {self.budget_flops}")
        for name in ("batch_size", "log_every"):
            if getattr(self, name) < 1:
                p.append(f"train.{name}: must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            p.append(f"train.lr: must be > 0, got {self.lr}")
        for name in ("min_lr_ratio", "warmup_frac", "decay_frac"):
            if not 0 <= getattr(self, name) <= 1:
                p.append(f"train.{name}: must be in [0, 1], got {getattr(self, name)}")
        if self.schedule not in ("cosine", "wsd"):
            p.append(f"train.schedule: {self.schedule!r} is not one of cosine, wsd")
        if self.dtype not in ("auto", "bf16", "fp32"):
            p.append(f"train.dtype: {self.dtype!r} is not one of auto, bf16, fp32")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            p.append(f"train.device: {self.device!r} is not one of auto, cpu, cuda, cuda:N")
        for name in ("weight_decay", "grad_clip", "checkpoint_every", "peak_flops", "loop_backprop"):
            if getattr(self, name) < 0:
                p.append(f"train.{name}: must be >= 0, got {getattr(self, name)}")
        if self.cuda_graphs and not self.compile:
            p.append("train.cuda_graphs: needs train.compile: true (the graphs are of the compiled blocks)")
        if self.cuda_graphs and self.checkpoint_loops:  # torch 2.11: "graph recording observed an input tensor
            # deallocate during graph recording that did not occur during replay" (benchmarks/cuda_graphs.py)
            p.append("train.cuda_graphs: cannot record the passes train.checkpoint_loops recomputes; turn one off")
        try:
            loop_sampling.parse(self.loop_sampling)
        except ConfigError as e:
            p.extend(e.problems)
        return p


@dataclass(frozen=True)
class EvalConfig:
    fractions: tuple[float, ...] = (0.125, 0.25, 0.5, 0.75, 1.0)  # of the budget, where validation runs
    n_batches: int = 4  # fixed validation batches (the same sequences every time)
    batch_size: int = 16
    n_t: int = 8  # points of the stratified t grid each sequence is scored at
    seed: int = 1234  # seeds the validation masks; keep it fixed across a sweep
    # With data.task: held-out problems whose answers are generated (greedy, the model's n_loops) at every
    # evaluation, for val/accuracy; 0 skips it. task_steps: sampling steps per answer.
    task_problems: int = 256
    task_steps: int = 4

    def problems(self) -> list[str]:
        p = []
        if self.task_problems < 0 or self.task_steps < 1:
            p.append(f"eval.task_problems/task_steps: need task_problems >= 0 and task_steps >= 1, got "
                     f"{self.task_problems}, {self.task_steps}")
        if not self.fractions or any(not 0 < f <= 1 for f in self.fractions):
            p.append(f"eval.fractions: need at least one value in (0, 1], got {list(self.fractions)}")
        for name in ("n_batches", "batch_size", "n_t"):
            if getattr(self, name) < 1:
                p.append(f"eval.{name}: must be >= 1, got {getattr(self, name)}")
        return p


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def problems(self) -> list[str]:
        return self.model.problems() + self.data.problems() + self.train.problems() + self.eval.problems()

    def with_model(self, model: ModelConfig) -> "RunConfig":
        return dataclasses.replace(self, model=model)

    def to_dict(self) -> dict:
        return _to_plain(dataclasses.asdict(self))


def _to_plain(value):
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------- loading

def _coerce(value, annotation, path: str):
    """Check `value` against a field's type; return it converted, or raise ConfigError naming `path`."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, path)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0])
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        item_type = typing.get_args(annotation)[0]
        return tuple(_coerce(v, item_type, f"{path}[{i}]") for i, v in enumerate(value))
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e13 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{path}: expected a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{path}: expected a string, got {value!r}")
    raise TypeError(f"unsupported config field type {annotation} at {path}")


def from_dict(cls, data, path: str):
    """Build dataclass `cls` from a mapping strictly: unknown keys and wrong types are ConfigErrors naming
    `path`.key; all problems of the mapping are reported together."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping of keys, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs, problems = {}, []
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f"; did you mean '{path + '.' if path else ''}{close[0]}'?" if close else \
                f"; valid keys: {', '.join(fields)}"
            problems.append(f"{where}: unknown key{hint}")
            continue
        try:
            if dataclasses.is_dataclass(hints[key]):
                kwargs[key] = from_dict(hints[key], value, where)
            else:
                kwargs[key] = _coerce(value, hints[key], where)
        except ConfigError as e:
            problems.extend(e.problems)
    if problems:
        raise ConfigError(problems)
    return cls(**kwargs)


def load_run_config(data: dict | None) -> RunConfig:
    """Build and validate a RunConfig from a plain dict; every problem is reported in one ConfigError."""
    cfg = from_dict(RunConfig, data, "")
    problems = cfg.problems()
    if problems:
        raise ConfigError(problems)
    return cfg


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data or {}


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `dotted.key=value` strings (values parsed as YAML scalars) to a nested dict, returning a copy."""
    out = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected dotted.key=value, e.g. model.n_loops=3")
        node = out
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part} is not a section")
        try:
            node[leaf] = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: cannot parse the value: {e}") from None
    return out


def flatten(cfg: RunConfig | dict, prefix: str = "") -> dict[str, object]:
    """Dotted keys to leaf values: {'model.n_loops': 2, ...}. Lists are kept as values."""
    data = cfg.to_dict() if isinstance(cfg, RunConfig) else cfg
    flat = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat
