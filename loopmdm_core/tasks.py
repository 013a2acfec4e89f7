"""Reasoning tasks, GSM8K-style: a prompt, a generated answer, the final number extracted, exact match.

`arithmetic` is a synthetic task small models learn on a CPU (2 digits: 95% of held-out problems after ~3
minutes on 2 cores as prompted rows, benchmarks/task_loops.py): multi-digit addition/subtraction made from a
seed, split into train and test by a hash of the problem text (the splits never share a problem).
`phop` is the positive control: p-hop induction (Sanford, Hsu & Telgarsky 2024), on which a k-layer block
looped L times is known to nearly match a kL-layer model while the k-layer model fails (Saunshi et al. 2025);
the hop count is its depth knob.
`read_gsm8k` reads a GSM8K jsonl file ({"question", "answer"} with the answer ending in "#### N") when the user
has one. A task is named by a spec string (data.task, infer.task.test): `arithmetic[:DIGITS]`, `chains[:HOPS]`,
`phop:HOPS[:LENGTH[:ALPHABET]]` or `gsm8k:PATH`;
`problems` resolves it, `documents` gives its train problems (texts and their prompts) to mix into training.
"""

import hashlib
import random
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError
from .hashing import sha256_files
from .jsonl import read_fields

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
    """Numeric answers: the first number of the generation equals it. Others (phop's letter): the generation,
    stripped, is exactly the answer."""
    if not NUMBER.fullmatch(problem.answer):
        return generated.strip() == problem.answer
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


PHOP_LENGTH, PHOP_ALPHABET = 48, 4  # defaults of phop:HOPS (see phop for what was calibrated)


def phop_answer(seq: str, hops: int) -> str | None:
    """The p-hop of the last position: `hops` times, jump to the token right after the previous occurrence of
    the current token; the token reached. None when some hop finds no previous occurrence."""
    i = len(seq) - 1
    for _ in range(hops):
        j = seq.rfind(seq[i], 0, i)
        if j < 0:
            return None
        i = j + 1
    return seq[i]


def phop(n: int, split: str, hops: int = 4, seed: int = 0, length: int = PHOP_LENGTH,
         alphabet: int = PHOP_ALPHABET, test_fraction: float = 0.2) -> list[Problem]:
    """`n` distinct p-hop induction problems: a uniformly random string of `length` letters from the first
    `alphabet` letters, then '=', answered by the letter `hops` hops back (phop_answer). Strings where a hop
    finds no earlier occurrence are redrawn. Each hop is one more induction step, so solving more hops takes
    more layers (or loops); the answer is a single letter, chance is 1/alphabet.
    With bpe_vocab_size 257 (bytes only) every letter is one token. Split by a hash, like arithmetic.

    Calibrated on one H200 (benchmarks/phop_calibration.py, benchmarks/results/phop_calibration_h200*.json):
    held-out accuracy of greedy answers, width 128, batch 256, lr 1e-3, 1e14 training FLOPs (about 1 GPU-minute
    per run, 8 runs sharing the card):
        phop:2:16:4   2 layers 0.641   loop [0,2) x 3 0.633   4 layers 0.992   6 layers 0.697
        phop:3:16:4   2 layers 0.648   loop [0,2) x 3 0.615   4 layers 0.963   6 layers 0.865
    At 2e15 with width 256, phop:4:48:4 and phop:8:48:4 stayed at 0.44-0.52 for 2, 4 and 6 layers alike: too
    hard to learn at that budget. Two layers stall at a partial solution (0.64-0.71, well above chance 0.25,
    on every seed); learning the hops breaks through late and abruptly (4 layers: 0.66 at half the budget,
    0.975 at three quarters), and deeper models take more steps to get there, so at equal FLOPs the 6-layer
    and 6-application runs had not yet. sweeps/positive_control.yaml: phop:2:16:4 at 2e14 (results/)."""
    rng = random.Random(seed)
    letters = LETTERS[:alphabet]

    def draw() -> Problem:
        while True:
            seq = "".join(rng.choices(letters, k=length))
            answer = phop_answer(seq, hops)
            if answer is not None:
                return Problem(seq + "=", answer)
    return _distinct(n, split, draw, test_fraction, f"phop with {hops} hops over {length} letters")


def read_gsm8k(path: str | Path) -> list[Problem]:
    rows = read_fields(path, ("question", "answer"), "a GSM8K file has 'question' and 'answer' on every line")
    return [Problem(f"Question: {question}\nAnswer:", answer.rsplit("####", 1)[-1].strip().replace(",", ""))
            for question, answer in rows]


def _phop_args(arg: str) -> tuple[int, int, int] | None:
    """(hops, length, alphabet) of phop:HOPS[:LENGTH[:ALPHABET]], or None when out of range."""
    parts = arg.split(":")
    if not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        return None
    hops, length, alphabet = (list(map(int, parts)) + [PHOP_LENGTH, PHOP_ALPHABET][len(parts) - 1:])[:3]
    if not (1 <= hops <= 64 and 2 <= alphabet <= len(LETTERS) and hops < length <= 4096):
        return None
    return hops, length, alphabet


def parse_spec(spec: str) -> tuple[str, str]:
    """("arithmetic", digits), ("chains", hops), ("phop", "HOPS[:LENGTH[:ALPHABET]]") or ("gsm8k", path);
    DataError naming the forms otherwise."""
    name, _, arg = spec.partition(":")
    if name in ("arithmetic", "chains") and (not arg or (arg.isdigit() and 1 <= int(arg) <= 9)):
        return name, arg or "2"
    if name == "phop" and _phop_args(arg):
        return name, arg
    if name == "gsm8k" and arg:
        return name, arg
    raise DataError(f"task {spec!r}: expected arithmetic[:DIGITS], chains[:HOPS] (1-9), "
                    f"phop:HOPS[:LENGTH[:ALPHABET]] (1 <= HOPS < LENGTH, 2 <= ALPHABET <= 26) or gsm8k:PATH.jsonl")


def problems(spec: str, split: str, n: int, seed: int = 0) -> list[Problem]:
    """`n` problems of the task's `split` (all of a GSM8K file when n is 0: the file is the split)."""
    name, arg = parse_spec(spec)
    if name == "arithmetic":
        return arithmetic(n, split, digits=int(arg), seed=seed)
    if name == "chains":
        return chains(n, split, hops=int(arg), seed=seed)
    if name == "phop":
        hops, length, alphabet = _phop_args(arg)
        return phop(n, split, hops, seed, length, alphabet)
    found = read_gsm8k(_gsm8k_file(spec, arg))
    return found[:n] if n else found


def _gsm8k_file(spec: str, arg: str) -> Path:
    path = Path(arg).expanduser()
    if not path.is_file():
        raise DataError(f"task {spec!r}: {path} is not a file")
    return path


def source_fingerprint(spec: str) -> str:
    """What a task's problems come from beyond its spec: a GSM8K file's bytes (the generated tasks are a pure
    function of the spec and the seed). Part of the token cache's key, so an edited file is tokenized again."""
    name, arg = parse_spec(spec)
    return sha256_files([_gsm8k_file(spec, arg)]) if name == "gsm8k" else ""


def documents(spec: str, n: int) -> tuple[list[str], list[str]]:
    """The task's train problems as (texts, prompts): each text is a prompt with its answer, one per document;
    once tokenized an EOS follows every answer, which is where a generated answer is cut
    (evaluate.task_accuracy)."""
    train = problems(spec, "train", n)
    return [f"{p.prompt}{p.answer}" for p in train], [p.prompt for p in train]


