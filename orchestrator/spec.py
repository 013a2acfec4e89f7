"""Sweep files: parse and validate the YAML into a typed SweepSpec.

A sweep is data only (no expressions): a `base` run config with the core's schema, the looped variants (a
grid or a list), the baselines to derive, budgets and seeds. Every problem of the file is reported at once,
each naming its YAML path, before any compute starts. `trials.expand` turns the spec into its trials.

With `lr_ladder:` a sweep has two stages: the ladder (every variant at every listed lr, at the smallest
budget) and then the larger budgets, each variant at the lr whose seed-mean final validation loss was lowest
in the ladder (`lr_ladder.choose_lrs`).
"""

import dataclasses
import difflib
import itertools
from dataclasses import dataclass, field
from pathlib import Path

from loopmdm_core import loop_sampling, schedules
from loopmdm_core.config import RunConfig, flatten, from_dict, read_yaml
from loopmdm_core.errors import ConfigError, DataError
from loopmdm_core.tasks import parse_spec
from loopmdm_core.model import BASELINES, ModelConfig

LOOP_KEYS = ("loop_start", "loop_end", "n_loops")
LOOP_OPTIONS = ("loop_sampling", "loop_backprop")  # how a looped variant trains; its baselines train fixed
DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice")
# Run config fields the sweep's own keys set per trial: set in base, they would be silently overwritten.
SWEPT = {("model", k): "loops:" for k in LOOP_KEYS} | {("train", k): "loops:" for k in LOOP_OPTIONS} | \
    {("train", "budget_flops"): "budgets:", ("train", "seed"): "seeds:"}
SWEPT_HINTS = {"loop_sampling": " (per looped variant, e.g. loops: [{loop_start: 1, loop_end: 3, n_loops: 2, "
                                "loop_sampling: uniform:1:3}]; the baselines always train with fixed loops)",
               "loop_backprop": " (per looped variant, e.g. loops: [{..., loop_backprop: 2}])",
               "budget_flops": " (list the training budgets under budgets:)", "seed": " (list them under seeds:)",
               "lr": " (or drop lr_ladder: to train every trial at base.train.lr)"}


@dataclass(frozen=True)
class Resources:
    cpu: float = 1.0
    gpu: float = 0.0  # fractions share a GPU between small trials; N >= 2: the trial trains data-parallel on N
    workers: int = 0  # data-parallel processes per trial; 0: one per GPU (1 without GPUs). CPU: gloo
    # A Ray worker process trains trial after trial (Tune's reuse_actors), keeping its imports, CUDA context and
    # compiled kernels: start-up cost paid once per process instead of once per trial (benchmarks/sweep_reuse.py)
    reuse_workers: bool = False

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
class LrLadder:
    """Each variant's learning rate, chosen at the smallest budget: there every variant trains at every one of
    `values` for every seed, and at the larger budgets only at the value with the lowest seed-mean final
    validation loss (one shared lr would favour whichever variant it happens to suit)."""
    values: tuple[float, ...] = ()


@dataclass(frozen=True)
class LoopVariant:
    """One entry of `loops:` after grid expansion: the loop, and how its training draws loop counts."""
    loop_start: int
    loop_end: int
    n_loops: int  # what validation and inference run (and every training step with fixed sampling)
    loop_sampling: str = "fixed"  # train.loop_sampling of this variant only
    loop_backprop: int = 0  # train.loop_backprop of this variant only

    def model(self, base: ModelConfig) -> ModelConfig:
        """The base network with this loop."""
        return dataclasses.replace(base, loop_start=self.loop_start, loop_end=self.loop_end, n_loops=self.n_loops)

    def as_list(self) -> list:
        """For the parent run's params: fixed, fully backpropagated loops keep the [start, end, n] form that
        sweeps logged before loop sampling existed."""
        short = [self.loop_start, self.loop_end, self.n_loops]
        return short if (self.loop_sampling, self.loop_backprop) == ("fixed", 0) else \
            short + [self.loop_sampling, self.loop_backprop]


@dataclass(frozen=True)
class SweepSpec:
    name: str = ""
    base: RunConfig = field(default_factory=RunConfig)
    loops: tuple = ()  # LoopVariant, ...
    baselines: tuple[str, ...] = BASELINES
    budgets: tuple[float, ...] = ()
    seeds: tuple[int, ...] = (0,)
    resources: Resources = field(default_factory=Resources)
    max_concurrent: int = 0  # 0: as many as the resources allow
    max_failures: int = 2  # retries of a failing trial, each from its last checkpoint
    storage_path: str = ""  # Ray Tune results; "": <cwd>/ray_results
    tracking: Tracking = field(default_factory=Tracking)
    search: Search | None = None
    lr_ladder: LrLadder | None = None  # absent: every trial trains at base.train.lr
    infer: Infer | None = None  # absent: no evaluation after training
    source: str = ""  # the YAML text, logged as an artifact


SWEEP_KEYS = [f.name for f in dataclasses.fields(SweepSpec) if f.name != "source"]  # what a sweep file may hold

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


def _sampler_list(value, path: str, problems: list[str]) -> tuple[str, ...]:
    """`loop_sampling`: one sampler string or a list of them (a grid axis), each checked by the core's parser."""
    values = value if isinstance(value, list) else [value]
    out = []
    for i, v in enumerate(values):
        where = f"{path}[{i}]" if isinstance(value, list) else path
        if not isinstance(v, str):
            problems.append(f"{where}: expected a sampler ({loop_sampling.FORMS}), got {v!r}")
            continue
        try:
            loop_sampling.parse(v)
        except ConfigError as e:  # the core names its own field; here the YAML path says where it is
            problems.extend(f"{where}: {p.removeprefix('train.loop_sampling: ')}" for p in e.problems)
            continue
        out.append(v)
    if isinstance(value, list) and not value:
        problems.append(f"{path}: empty list; give at least one value")
    return tuple(out)


def _parse_loops(raw, problems: list[str]) -> tuple:
    """`loops:` is a grid (a mapping of lists, every combination) or a list of {loop_start, loop_end, n_loops},
    each optionally with loop_sampling (default fixed) and loop_backprop (default 0)."""
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
        unknown = set(entry) - set(LOOP_KEYS) - set(LOOP_OPTIONS)
        for key in sorted(unknown, key=str):
            problems.append(f"{path}.{key}: unknown key; loops take {', '.join(LOOP_KEYS)} and optionally "
                            f"{', '.join(LOOP_OPTIONS)}")
        missing = [k for k in LOOP_KEYS if k not in entry]
        if missing:
            problems.append(f"{path}: missing {', '.join(missing)}")
            continue
        lists = [_int_list(entry[k], f"{path}.{k}", problems, minimum=0) for k in LOOP_KEYS]
        lists.append(_sampler_list(entry.get("loop_sampling", "fixed"), f"{path}.loop_sampling", problems))
        lists.append(_int_list(entry.get("loop_backprop", 0), f"{path}.loop_backprop", problems, minimum=0))
        for combo in itertools.product(*lists):
            combos.append((LoopVariant(*combo), path))
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


def _parse_ladder(raw, problems: list[str]) -> LrLadder | None:
    if raw is None:
        return None
    try:
        ladder = from_dict(LrLadder, raw, "lr_ladder")
    except ConfigError as e:
        problems.extend(e.problems)
        return None
    if len(ladder.values) < 2:
        problems.append(f"lr_ladder.values: give at least two learning rates to choose from, e.g. "
                        f"[1.0e-3, 3.0e-3], got {list(ladder.values)}")
    for i, lr in enumerate(ladder.values):
        if not lr > 0:
            problems.append(f"lr_ladder.values[{i}]: must be > 0, got {lr}")
        elif lr in ladder.values[:i]:
            problems.append(f"lr_ladder.values[{i}]: {lr:g} is listed twice")
    return ladder


def _base_without_swept(base_raw, problems: list[str], ladder: bool):
    """The base's model is the plain network the loops are applied to, trained the way the baselines are:
    the fields the sweep sets per trial (SWEPT; train.lr too under an lr ladder) would be overwritten, so setting
    them is an error, and the model is validated as [0, n_layers) x 1."""
    if not isinstance(base_raw, dict):
        return base_raw
    swept = SWEPT | ({("train", "lr"): "lr_ladder:"} if ladder else {})
    sections = {name: dict(base_raw.get(name) or {}) for name in ("model", "train")
                if isinstance(base_raw.get(name) or {}, dict)}
    for (name, key), owner in swept.items():
        if name in sections and key in sections[name]:
            del sections[name][key]
            problems.append(f"base.{name}.{key}: set by the sweep's {owner}, not by base; remove it"
                            f"{SWEPT_HINTS.get(key, '')}")
    if "model" in sections:
        n_layers = sections["model"].get("n_layers", ModelConfig.n_layers)
        if isinstance(n_layers, int) and n_layers >= 1:
            sections["model"].update(loop_start=0, loop_end=n_layers, n_loops=1)
    return {**base_raw, **sections}


def _top_level(data: dict, problems: list[str]) -> tuple[SweepSpec, set[str]]:
    """The sweep's top-level keys, each parsed on its own: one bad or misspelled key is reported alone and the
    others still count (a typo in `seed:` must not also report `name` and `budgets` as missing). Returns the
    spec and the valid names that misspelled keys were taken for (their 'missing' would repeat the typo)."""
    kept, misspelled = {}, set()
    for key, value in data.items():
        try:
            kept[key] = getattr(from_dict(SweepSpec, {key: value}, ""), key)
        except ConfigError as e:
            problems.extend(e.problems)
            if key not in SWEEP_KEYS:
                misspelled.update(difflib.get_close_matches(str(key), SWEEP_KEYS, n=1))
    return dataclasses.replace(SweepSpec(), **kept), misspelled


def parse(data: dict, source: str = "") -> SweepSpec:
    """Validate a sweep mapping; ConfigError lists every problem, each with its YAML path."""
    problems: list[str] = []
    data = dict(data or {})
    base_raw, loops_raw, search_raw = data.pop("base", None), data.pop("loops", None), data.pop("search", None)
    ladder = _parse_ladder(data.pop("lr_ladder", None), problems)
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
    if search and ladder:
        problems.append("lr_ladder: cannot be combined with search: (both tune the learning rate); keep one")
    spec, misspelled = _top_level({k: v for k, v in data.items() if k != "source"}, problems)
    if "source" in data:
        problems.append("source: unknown key")
    base = RunConfig()
    if base_raw is None:
        problems.append("base: missing; give a run config (model, data, train, eval), e.g. configs/default.yaml")
    else:
        base_raw = _base_without_swept(base_raw, problems, ladder is not None)
        try:
            base = from_dict(RunConfig, base_raw, "base")  # unknown keys and types named with their YAML path
        except ConfigError as e:
            problems.extend(e.problems)
        else:
            problems.extend(f"base.{p}" for p in base.problems())
    if not spec.name and "name" not in misspelled:
        problems.append("name: missing; the sweep's name is its MLflow experiment")
    if not spec.budgets and "budgets" not in misspelled:
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
    for asked, setting, other_fix in ((base.train.device.startswith("cuda"), f"train.device: {base.train.device!r}",
                                       "train.device: auto"),
                                      (base.train.cuda_graphs, "train.cuda_graphs: true", "train.cuda_graphs: false")):
        if asked and spec.resources.gpu <= 0:  # settings that need a GPU
            problems.append(f"base.{setting} but resources.gpu is 0, so trials get no GPU; set resources.gpu or "
                            f"{other_fix}")
    if base.train.cuda_graphs and spec.resources.reuse_workers:
        # seen on an H200 (results/lm_iso_flops/README.md, "Cost"): reused workers died of segmentation faults as
        # their next trial started, 5 times in 75 trials; each cost a retry
        problems.append("base.train.cuda_graphs: true with resources.reuse_workers: true: a reused worker can crash "
                        "as its next trial starts, with the last trial's CUDA graphs still in the process; set "
                        "one of them to false (reuse_workers saves more in a sweep of small trials: "
                        "docs/performance.md)")
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
    for loop, path in loops:  # the core's own check of the loop range, said where the loop is in the file
        where = f"{path} (loop_start={loop.loop_start}, loop_end={loop.loop_end}, n_loops={loop.n_loops})"
        problems.extend(f"{where}: {p}" for p in loop.model(base.model).problems())
        if loop.loop_start >= loop.loop_end and isinstance(loops_raw, dict):
            problems.append(f"{where}: a grid combines every loop_start with every loop_end; list the valid "
                            f"combinations under loops: as a list instead")
        if loop.n_loops < 2:
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
                               lr_ladder=ladder, infer=infer, source=source)


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
