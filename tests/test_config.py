from pathlib import Path

import pytest

from loopmdm_core.config import RunConfig, apply_overrides, flatten, load_run_config, read_yaml
from loopmdm_core.errors import ConfigError
from loopmdm_core.plan import plan

ROOT = Path(__file__).resolve().parents[1]


def problems_of(data) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_run_config(data)
    return info.value.problems


def test_shipped_default_yaml_is_the_dataclass_default():
    assert load_run_config(read_yaml(ROOT / "configs" / "default.yaml")) == RunConfig()


def test_unknown_key_names_the_path_and_the_closest_key():
    [problem] = problems_of({"model": {"n_loop": 3}})
    assert problem.startswith("model.n_loop: unknown key") and "'model.n_loops'" in problem
    [problem] = problems_of({"trian": {}})
    assert "did you mean 'train'" in problem


def test_all_problems_are_reported_at_once():
    found = problems_of({"model": {"n_loops": 0, "d_model": 100, "n_heads": 3, "loop_end": 9},
                         "train": {"lr": -1, "batch_size": "big"}})
    prefixes = sorted(p.split(":")[0] for p in found)
    assert prefixes == ["train.batch_size"]  # type errors stop before the value checks...
    found = problems_of({"model": {"n_loops": 0, "d_model": 100, "n_heads": 3, "loop_end": 9}, "train": {"lr": -1}})
    prefixes = sorted(p.split(":")[0] for p in found)  # ...which then all come together
    assert prefixes == ["model.d_model", "model.loop_start/loop_end", "model.n_loops", "train.lr"]


@pytest.mark.parametrize("data, field", [
    ({"model": {"n_layers": 2.5}}, "model.n_layers: expected an integer"),
    ({"model": {"tie_embeddings": "yes"}}, "model.tie_embeddings: expected true or false"),
    ({"train": {"budget_flops": "lots"}}, "train.budget_flops: expected a number"),
    ({"eval": {"fractions": 0.5}}, "eval.fractions: expected a list"),
    ({"eval": {"fractions": [0.5, 1.5]}}, "eval.fractions: need at least one value in (0, 1]"),
    ({"data": {"tokenizer": "sentencepiece"}}, "data.tokenizer:"),
    ({"data": {"seq_len": 1}}, "data.seq_len:"),
    ({"train": {"schedule": "linear"}}, "train.schedule:"),
    ({"train": {"device": "tpu"}}, "train.device:"),
    ({"model": "big"}, "model: expected a mapping"),
])
def test_bad_values_name_the_field(data, field):
    assert any(p.startswith(field) for p in problems_of(data))


def test_numbers_in_yaml_exponent_form_are_accepted():
    # YAML 1.1 reads 1e13 (no dot) as a string; budgets are written that way all the time.
    assert load_run_config({"train": {"budget_flops": "1e13"}}).train.budget_flops == 1e13


def test_budget_smaller_than_one_step():
    with pytest.raises(ConfigError, match=r"train.budget_flops: .* buys no step"):
        plan(load_run_config({"train": {"budget_flops": 1e6}}))


def test_overrides_and_flatten():
    data = apply_overrides({"model": {"n_loops": 2}}, ["model.n_loops=4", "train.budget_flops=2e13",
                                                       "eval.fractions=[0.5, 1.0]"])
    cfg = load_run_config(data)
    flat = flatten(cfg)
    assert flat["model.n_loops"] == 4 and flat["train.budget_flops"] == 2e13
    assert flat["eval.fractions"] == [0.5, 1.0]
    assert set(flat) >= {"model.loop_start", "data.corpus", "train.seed", "eval.n_t"}
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        apply_overrides({}, ["model.n_loops"])


def test_yaml_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        read_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        read_yaml(bad)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"model:\n  n_loops: 2 # caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_yaml(latin)
