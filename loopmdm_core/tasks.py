"""Reasoning tasks, GSM8K-style: a prompt, a generated answer, the final number extracted, exact match.

`arithmetic` is a synthetic task small models learn on a CPU (2 digits: 95% of held-out problems after ~3
minutes on 2 cores as prompted rows, benchmarks/task_loops.py): multi-digit addition/subtraction made from a
seed, split into train and test by a hash of the problem text (the splits never share a problem).
`read_gsm8k` reads a GSM8K jsonl file ({"question", "answer"} with the answer ending in "#### N") when the user
has one. A task is named by a spec string (data.task, infer.task.test): `arithmetic[:DIGITS]` or `gsm8k:PATH`;
`problems` resolves it, `documents` gives its train problems (texts and their prompts) to mix into training.
"""

import hashlib
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


@dataclass(frozen=True)
class Problem:
    prompt: str  # what the model is given
    answer: str  # the final number, as text


def extract_answer(text: str) -> str | None:
    """The first number of a generated answer (commas dropped), None when there is none."""
    match = NUMBER.search(text)
    return match.group(0).replace(",", "") if match else None


def is_correct(generated: str, problem: Problem) -> bool:
    got = extract_answer(generated)
    if got is None:
        return False
    try:
        return float(got) == float(problem.answer)
    except ValueError:
        return False


def _split_of(text: str, test_fraction: float) -> str:
    h = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64
    return "test" if h < test_fraction else "train"


def _distinct(n: int, split: str, draw, test_fraction: float, what: str) -> list[Problem]:
    """`n` distinct problems from `draw()` (a seeded generator's next Problem) that fall in `split`."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be train or test, got {split!r}")
    seen, out = set(), []
    for _ in range(50 * n):
        problem = draw()
        if problem.prompt in seen or _split_of(problem.prompt, test_fraction) != split:
            continue
        seen.add(problem.prompt)
        out.append(problem)
        if len(out) == n:
            return out
    raise DataError(f"{what}: only {len(out)} distinct {split} problems found; ask for fewer")


def arithmetic(n: int, split: str, digits: int = 2, seed: int = 0, test_fraction: float = 0.2) -> list[Problem]:
    """`n` distinct problems "a+b=" / "a-b=" with `digits`-digit operands from `split` ("train" or "test")."""
    rng = random.Random(seed)

    def draw() -> Problem:
        a, b = rng.randrange(10 ** (digits - 1), 10 ** digits), rng.randrange(10 ** (digits - 1), 10 ** digits)
        op = rng.choice("+-")
        return Problem(f"{a}{op}{b}=", str(a + b if op == "+" else a - b))
    space = 2 * (9 * 10 ** (digits - 1)) ** 2
    return _distinct(n, split, draw, test_fraction, f"arithmetic with {digits} digits (about {space} exist)")


LETTERS = "abcdefghijklmnopqrstuvwxyz"


def chains(n: int, split: str, hops: int = 2, seed: int = 0, test_fraction: float = 0.2) -> list[Problem]:
    """`n` distinct variable-chasing problems: two chains of `hops` assignments ("a=3;b=a" ...), statements
    shuffled, then a query of one chain's last variable, e.g. "d=c;a=3;c=5;b=a;b?" -> "3". Each hop is one
    more lookup, so depth (or loops) is what solving longer chains takes. Split by a hash, like arithmetic."""
    rng = random.Random(seed)

    def draw() -> Problem:
        names = rng.sample(LETTERS, 2 * (hops + 1))
        values = rng.sample("0123456789", 2)
        statements = []
        for chain, value in zip((names[:hops + 1], names[hops + 1:]), values):
            statements.append(f"{chain[0]}={value}")
            statements += [f"{chain[i]}={chain[i - 1]}" for i in range(1, hops + 1)]
        rng.shuffle(statements)
        which = rng.randrange(2)
        return Problem(";".join(statements) + f";{names[which * (hops + 1) + hops]}?", values[which])
    return _distinct(n, split, draw, test_fraction, f"chains with {hops} hops")


def read_gsm8k(path: str | Path) -> list[Problem]:
    problems = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                question, answer = record["question"], record["answer"]
            except (ValueError, KeyError, TypeError):
                raise DataError(f"{path}:{lineno}: expected JSON with 'question' and 'answer'") from None
            final = answer.rsplit("####", 1)[-1].strip().replace(",", "")
            problems.append(Problem(f"Question: {question}\nAnswer:", final))
    return problems


def parse_spec(spec: str) -> tuple[str, str]:
    """("arithmetic", digits), ("chains", hops) or ("gsm8k", path); DataError naming the forms otherwise."""
    name, _, arg = spec.partition(":")
    if name in ("arithmetic", "chains") and (not arg or (arg.isdigit() and 1 <= int(arg) <= 9)):
        return name, arg or "2"
    if name == "gsm8k" and arg:
        return name, arg
    raise DataError(f"task {spec!r}: expected arithmetic[:DIGITS], chains[:HOPS] (1-9) or gsm8k:PATH.jsonl")


def problems(spec: str, split: str, n: int, seed: int = 0) -> list[Problem]:
    """`n` problems of the task's `split` (all of a GSM8K file when n is 0: the file is the split)."""
    name, arg = parse_spec(spec)
    if name == "arithmetic":
        return arithmetic(n, split, digits=int(arg), seed=seed)
    if name == "chains":
        return chains(n, split, hops=int(arg), seed=seed)
    path = Path(arg).expanduser()
    if not path.is_file():
        raise DataError(f"task {spec!r}: {path} is not a file")
    found = read_gsm8k(path)
    return found[:n] if n else found


def documents(spec: str, n: int) -> tuple[list[str], list[str]]:
    """The task's train problems as (texts, prompts): each text is a prompt with its answer, one per document;
    once tokenized an EOS follows every answer, which is where a generated answer is cut
    (evaluate.task_accuracy)."""
    train = problems(spec, "train", n)
    return [f"{p.prompt}{p.answer}" for p in train], [p.prompt for p in train]


