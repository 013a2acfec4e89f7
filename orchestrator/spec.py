"""Sweep files: parse and validate the YAML, expand the grid, derive the baselines.

A sweep is data only (no expressions): a `base` run config with the core's schema, the looped variants (a
grid or a list), the baselines to derive, budgets and seeds. Expansion gives one complete, validated run
config per trial. Every problem of the file is reported at once, each naming its YAML path, before any
compute starts.
"""

import dataclasses
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

from loopmdm_core import flops, schedules
from loopmdm_core.config import RunConfig, flatten, from_dict, read_yaml
from loopmdm_core.errors import ConfigError, DataError
from loopmdm_core.tasks import parse_spec
from loopmdm_core.model import ModelConfig, depth_matched, same_size
from loopmdm_core.train import RunPlan, plan

BASELINES = ("same_size", "depth_matched")
LOOP_KEYS = ("loop_start", "loop_end", "n_loops")
DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice")


@dataclass(frozen=True)
class Resources:
    cpu: float = 1.0
    gpu: float = 0.0  # fractions share a GPU between small trials; N >= 2: the trial trains data-parallel on N
    workers: int = 0  # data-parallel processes per trial; 0: one per GPU (1 without GPUs). CPU: gloo

    @property
    def n_workers(self) -> int:
        return self.workers or max(1, int(self.gpu))


@dataclass(frozen=True)
class Tracking:
    uri: str = ""  # "": --tracking-uri, then MLFLOW_TRACKING_URI, then sqlite:///<cwd>/mlflow.db


@dataclass(frozen=True)
class SearchParam:
    distribution: str = "loguniform"  # uniform | loguniform | int | choice
    low: float = 0.0
    high: float = 0.0
    choices: tuple[float, ...] = ()


@dataclass(frozen=True)
class Search:
    metric: str = "val/loss"  # minimized
    n_trials: int = 4  # per variant cell: one Optuna study each
    params: tuple = ()  # ((dotted key, SearchParam), ...)


@dataclass(frozen=True)
class TaskEval:
    """Reasoning-task accuracy per inference loop schedule (evaluate.task_eval)."""
    problems: int = 0  # held-out problems scored per schedule; 0 skips the task evaluation
    test: str = ""  # "": the test split of base.data.task; else a task (arithmetic[:DIGITS], gsm8k:TEST.jsonl)
    answer_tokens: int = 4  # tokens generated after each prompt (at least: a prompted task fills its row)
    steps: int = 4  # sampling steps for those tokens
    schedules: tuple[str, ...] = ()  # loop schedules (schedules.py); (): fixed 1..2x trained + adaptive ones


@dataclass(frozen=True)
class Infer:
    """Evaluations after training: validation loss per inference loop count, attention among masked tokens,
    reasoning-task accuracy per loop schedule."""
    max_loops: int = 0  # score n_loops = 1..max_loops; 0: twice the trained count
    attention_t: float = 0.5  # mask ratio of the attention analysis; 0 skips it
    task: TaskEval = field(default_factory=TaskEval)


@dataclass(frozen=True)
class SweepSpec:
    name: str = ""
    base: RunConfig = field(default_factory=RunConfig)
    loops: tuple = ()  # ((loop_start, loop_end, n_loops), ...)
    baselines: tuple[str, ...] = BASELINES
    budgets: tuple[float, ...] = ()
    seeds: tuple[int, ...] = (0,)
    resources: Resources = field(default_factory=Resources)
    max_concurrent: int = 0  # 0: as many as the resources allow
    max_failures: int = 2  # retries of a failing trial, each from its last checkpoint
    storage_path: str = ""  # Ray Tune results; "": <cwd>/ray_results
    tracking: Tracking = field(default_factory=Tracking)
    search: Search | None = None
    infer: Infer | None = None  # absent: no evaluation after training
    source: str = ""  # the YAML text, logged as an artifact


@dataclass(frozen=True)
class TrialSpec:
    key: str  # stable hash of the full run config: the identity of the trial (MLflow tag loopmdm.trial_key)
    variant: str  # loop | same_size | depth_matched
    label: str  # loop[1,3)x2, same_size(4L), depth_matched(6L)
    group: str  # the trials compared with each other: same budget and seed
    seed: int
    budget_flops: float
    config: RunConfig
    plan: RunPlan

    @property
    def tags(self) -> dict[str, str]:
        return {"loopmdm.role": "trial", "loopmdm.variant": self.variant, "loopmdm.label": self.label,
                "loopmdm.group": self.group, "loopmdm.seed": str(self.seed),
                "loopmdm.budget_flops": f"{self.budget_flops:g}", "loopmdm.trial_key": self.key}


def trial_key(cfg: RunConfig) -> str:
    return hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def variant_label(variant: str, model) -> str:
    if variant == "loop":
        return f"loop[{model.loop_start},{model.loop_end})x{model.n_loops}"
    return f"{variant}({model.n_layers}L)"


# ---------------------------------------------------------------------------------------------- parsing

def _int_list(value, path: str, problems: list[str], minimum: int | None = None) -> tuple[int, ...]:
    values = value if isinstance(value, list) else [value]
    out = []
    for i, v in enumerate(values):
        where = f"{path}[{i}]" if isinstance(value, list) else path
        if not isinstance(v, int) or isinstance(v, bool):
            problems.append(f"{where}: expected an integer, got {v!r}")
        elif minimum is not None and v < minimum:
            problems.append(f"{where}: must be >= {minimum}, got {v}")
        else:
            out.append(v)
    if isinstance(value, list) and not value:
        problems.append(f"{path}: empty list; give at least one value")
    return tuple(out)


def _parse_loops(raw, problems: list[str]) -> tuple:
    """`loops:` is a grid (a mapping of lists, every combination) or a list of {loop_start, loop_end, n_loops}."""
    if raw is None:
        problems.append("loops: missing; give the looped variants, e.g. loops: {loop_start: [1], loop_end: [3], "
                        "n_loops: [2, 3]}")
        return ()
    if isinstance(raw, dict):
        entries, where = [raw], ["loops"]
    elif isinstance(raw, list) and raw:
        entries, where = raw, [f"loops[{i}]" for i in range(len(raw))]
    else:
        problems.append(f"loops: expected a grid mapping or a non-empty list of mappings, got {raw!r}")
        return ()
    combos = []
    for entry, path in zip(entries, where):
        if not isinstance(entry, dict):
            problems.append(f"{path}: expected a mapping with {', '.join(LOOP_KEYS)}, got {entry!r}")
            continue
        unknown = set(entry) - set(LOOP_KEYS)
        for key in sorted(unknown, key=str):
            problems.append(f"{path}.{key}: unknown key; loops take {', '.join(LOOP_KEYS)}")
        missing = [k for k in LOOP_KEYS if k not in entry]
        if missing:
            problems.append(f"{path}: missing {', '.join(missing)}")
            continue
        lists = [_int_list(entry[k], f"{path}.{k}", problems, minimum=0) for k in LOOP_KEYS]
        for start, end, n in itertools.product(*lists):
            combos.append(((start, end, n), path))
    return tuple(combos)


def _parse_search(raw, problems: list[str]) -> Search | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        problems.append(f"search: expected a mapping, got {raw!r}")
        return None
    raw = dict(raw)
    params_raw = raw.pop("params", None)
    try:
        search = from_dict(Search, raw, "search")
    except ConfigError as e:
        problems.extend(e.problems)
        return None
    valid_keys = set(flatten(RunConfig()))
    params = []
    if not isinstance(params_raw, dict) or not params_raw:
        problems.append("search.params: give at least one parameter, e.g. train.lr: {distribution: loguniform, "
                        "low: 1.0e-4, high: 1.0e-2}")
    else:
        for key, value in params_raw.items():
            where = f"search.params.{key}"
            if key not in valid_keys:
                problems.append(f"{where}: not a run config key (dotted, e.g. train.lr)")
                continue
            try:
                param = from_dict(SearchParam, value, where)
            except ConfigError as e:
                problems.extend(e.problems)
                continue
            if param.distribution not in DISTRIBUTIONS:
                problems.append(f"{where}.distribution: {param.distribution!r} is not one of {', '.join(DISTRIBUTIONS)}")
            elif param.distribution == "choice" and not param.choices:
                problems.append(f"{where}.choices: a choice needs a non-empty list of values")
            elif param.distribution != "choice" and not param.low < param.high:
                problems.append(f"{where}: need low < high, got low={param.low}, high={param.high}")
            elif param.distribution == "loguniform" and param.low <= 0:
                problems.append(f"{where}.low: loguniform needs low > 0, got {param.low}")
            params.append((key, param))
    if search.n_trials < 1:
        problems.append(f"search.n_trials: must be >= 1, got {search.n_trials}")
    return dataclasses.replace(search, params=tuple(params))


def _base_without_loop(base_raw, problems: list[str]):
    """The base's model is the plain network the loops are applied to: its own loop fields would be
    overwritten by every variant, so setting them is an error, and it is validated as [0, n_layers) x 1."""
    if not isinstance(base_raw, dict) or not isinstance(base_raw.get("model", {}), dict):
        return base_raw
    model = dict(base_raw.get("model") or {})
    for key in LOOP_KEYS:
        if model.pop(key, None) is not None:
            problems.append(f"base.model.{key}: set by the sweep's loops:, not by base; remove it")
    n_layers = model.get("n_layers", ModelConfig.n_layers)
    if isinstance(n_layers, int) and n_layers >= 1:
        model.update(loop_start=0, loop_end=n_layers, n_loops=1)
    return {**base_raw, "model": model}


def parse(data: dict, source: str = "") -> SweepSpec:
    """Validate a sweep mapping; ConfigError lists every problem, each with its YAML path."""
    problems: list[str] = []
    data = dict(data or {})
    base_raw, loops_raw, search_raw = data.pop("base", None), data.pop("loops", None), data.pop("search", None)
    infer = None
    if "infer" in data:
        try:
            infer = from_dict(Infer, data.pop("infer"), "infer")
            if infer.max_loops < 0 or not 0 <= infer.attention_t < 1:
                problems.append("infer: max_loops must be >= 0 and attention_t in [0, 1)")
            problems.extend(_task_eval_problems(infer.task))
        except ConfigError as e:
            problems.extend(e.problems)
    loops = _parse_loops(loops_raw, problems)
    search = _parse_search(search_raw, problems)
    try:
        spec = from_dict(SweepSpec, {k: v for k, v in data.items() if k != "source"}, "")
    except ConfigError as e:
        problems.extend(e.problems)
        spec = SweepSpec()
    if "source" in data:
        problems.append("source: unknown key")
    base = RunConfig()
    if base_raw is None:
        problems.append("base: missing; give a run config (model, data, train, eval), e.g. configs/default.yaml")
    else:
        base_raw = _base_without_loop(base_raw, problems)
        try:
            base = from_dict(RunConfig, base_raw, "base")  # unknown keys and types named with their YAML path
        except ConfigError as e:
            problems.extend(e.problems)
        else:
            problems.extend(f"base.{p}" for p in base.problems())
    if not spec.name:
        problems.append("name: missing; the sweep's name is its MLflow experiment")
    if not spec.budgets:
        problems.append("budgets: missing; give at least one training budget in FLOPs, e.g. [5.0e12, 1.0e13]")
    for i, b in enumerate(spec.budgets):
        if not b > 0:
            problems.append(f"budgets[{i}]: must be > 0, got {b}")
    if not spec.seeds:
        problems.append("seeds: empty; give at least one seed")
    for i, name in enumerate(spec.baselines):
        if name not in BASELINES:
            problems.append(f"baselines[{i}]: {name!r} is not one of {', '.join(BASELINES)}")
    if spec.resources.cpu <= 0 and spec.resources.gpu <= 0:
        problems.append("resources: a trial needs some cpu or gpu")
    if spec.resources.cpu < 0 or spec.resources.gpu < 0:
        problems.append("resources: cpu and gpu must be >= 0")
    if spec.resources.gpu > 1 and not float(spec.resources.gpu).is_integer():
        problems.append(f"resources.gpu: above 1, ask for whole GPUs, got {spec.resources.gpu}")
    if base.train.device.startswith("cuda") and spec.resources.gpu <= 0:
        problems.append(f"base.train.device: {base.train.device!r} but resources.gpu is 0, so trials get no GPU; "
                        f"set resources.gpu or train.device: auto")
    if spec.resources.workers < 0:
        problems.append(f"resources.workers: must be >= 0, got {spec.resources.workers}")
    elif spec.resources.gpu >= 1 and spec.resources.workers not in (0, int(spec.resources.gpu)):
        problems.append(f"resources.workers: {spec.resources.workers} with gpu {spec.resources.gpu:g}: one worker per "
                        f"GPU; leave workers at 0")
    elif spec.resources.n_workers > 1 and base.train.batch_size % spec.resources.n_workers:
        problems.append(f"base.train.batch_size: {base.train.batch_size} does not split over "
                        f"{spec.resources.n_workers} data-parallel workers; use a multiple of it")
    elif 0 < spec.resources.gpu < 1 and spec.resources.workers > 1:
        problems.append("resources.workers: a fraction of a GPU cannot hold several workers")
    if spec.max_concurrent < 0 or spec.max_failures < 0:
        problems.append("max_concurrent/max_failures: must be >= 0")
    n_layers = base.model.n_layers
    for (start, end, n), path in loops:
        where = f"{path} (loop_start={start}, loop_end={end}, n_loops={n})"
        if end > n_layers:
            problems.append(f"{where}: loop_end {end} > base.model.n_layers={n_layers}")
        elif start >= end:
            problems.append(f"{where}: empty loop, need loop_start < loop_end (list the valid combinations "
                            f"under loops: as a list instead of a grid)")
        if n < 2:
            problems.append(f"{where}: n_loops must be >= 2 for a looped variant (n_loops=1 is the "
                            f"same_size baseline: list it under baselines)")
    if infer and infer.task.problems and not infer.task.test and not base.data.task:
        problems.append("infer.task.test: the base trains on no task (base.data.task is empty); set "
                        "base.data.task (e.g. arithmetic) or name the test problems here")
    if problems:
        raise ConfigError(problems)
    if infer and infer.task.test:
        infer = dataclasses.replace(infer, task=dataclasses.replace(infer.task, test=_absolute_task(infer.task.test)))
    return dataclasses.replace(spec, base=_absolute_paths(base), loops=tuple(c for c, _ in loops), search=search,
                               infer=infer, source=source)


def _task_eval_problems(task: TaskEval) -> list[str]:
    p = []
    if task.problems < 0 or task.answer_tokens < 1 or task.steps < 1:
        p.append("infer.task: problems must be >= 0, answer_tokens and steps >= 1")
    for i, sched in enumerate(task.schedules):
        try:
            schedules.parse(sched)
        except ConfigError as e:
            p.append(f"infer.task.schedules[{i}]: {e}")
    if task.test:
        try:
            parse_spec(task.test)
        except DataError as e:
            p.append(f"infer.task.test: {e}")
    return p


def _absolute_task(task: str) -> str:
    """A gsm8k:PATH task with its path resolved against the driver's working directory; others unchanged."""
    return "gsm8k:" + str(Path(task[6:]).expanduser().resolve()) if task.startswith("gsm8k:") else task


def _absolute_paths(base: RunConfig) -> RunConfig:
    """Local paths of the base resolved against the driver's working directory: Ray runs trials elsewhere."""
    data = base.data
    if ":" not in data.corpus.split("/")[0] and data.corpus != "none":  # not builtin:... or hf:...
        data = dataclasses.replace(data, corpus=str(Path(data.corpus).expanduser().resolve()))
    data = dataclasses.replace(data, task=_absolute_task(data.task))
    if data.cache_dir:
        data = dataclasses.replace(data, cache_dir=str(Path(data.cache_dir).expanduser().resolve()))
    return dataclasses.replace(base, data=data)


def load(path: str | Path) -> SweepSpec:
    path = Path(path)
    data = read_yaml(path)
    return parse(data, source=path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------- expansion

def expand(spec: SweepSpec) -> list[TrialSpec]:
    """One TrialSpec per (variant, budget, seed); identical run configs (a baseline shared by several loop
    configs) appear once. Order: budgets, seeds, then loops each followed by its baselines."""
    trials: dict[str, TrialSpec] = {}
    problems = []
    for budget, seed in itertools.product(spec.budgets, spec.seeds):
        group = f"b{budget:.3g}-s{seed}"
        for start, end, n in spec.loops:
            looped = dataclasses.replace(spec.base.model, loop_start=start, loop_end=end, n_loops=n)
            variants = [("loop", looped)]
            variants += [(name, {"same_size": same_size, "depth_matched": depth_matched}[name](looped))
                         for name in spec.baselines]
            for variant, model in variants:
                cfg = dataclasses.replace(spec.base, model=model,
                                          train=dataclasses.replace(spec.base.train, budget_flops=budget, seed=seed))
                key = trial_key(cfg)
                if key in trials:
                    continue
                try:
                    run_plan = plan(cfg)
                except ConfigError as e:
                    problems.extend(f"budgets: {budget:g} for {variant_label(variant, model)}: {p}" for p in e.problems)
                    continue
                trials[key] = TrialSpec(key, variant, variant_label(variant, model), group, seed, budget, cfg,
                                        run_plan)
    if problems:
        raise ConfigError(problems)
    return list(trials.values())


def trial_table(trials: list[TrialSpec]) -> str:
    """The dry-run table: one row per trial, with what it will cost."""
    head = ("variant", "layers", "loop", "loops", "params", "FLOPs/token", "steps", "budget", "seed")
    rows = []
    for t in trials:
        m = t.plan.config.model
        rows.append((t.label, str(m.n_layers), f"[{m.loop_start},{m.loop_end})", str(m.n_loops),
                     f"{t.plan.params:,}", f"{flops.train_flops_per_token(m, t.config.data.seq_len):.3g}",
                     f"{t.plan.steps:,}", f"{t.budget_flops:.3g}", str(t.seed)))
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(head), line(tuple("-" * w for w in widths))] + [line(r) for r in rows])
