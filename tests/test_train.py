import math
import shutil

import pytest
import torch
from safetensors.torch import load_file

from loopmdm_core import checkpoint, metrics
from loopmdm_core.errors import CheckpointError, ConfigError
from loopmdm_core.plan import plan
from loopmdm_core.train import train

from conftest import Recorder


def test_training_reports_every_metric_and_learns(tiny_config):
    # 180 steps of a width-64 model: enough to leave the unigram plateau every MDM starts on
    cfg = tiny_config(model={"d_model": 64, "n_heads": 4}, data={"seq_len": 64},
                      train={"budget_flops": 3e11, "batch_size": 16, "log_every": 20})
    run = plan(cfg)
    rec = Recorder()
    result = train(cfg, sink=rec)
    assert result.steps == run.steps and result.flops == run.steps * run.flops_per_step <= 3e11
    for step, values in rec.rows.items():
        assert set(values) <= set(metrics.ALL)
        assert values[metrics.FLOPS] == step * run.flops_per_step  # flops beside every loss
        assert values[metrics.TOKENS] == step * run.tokens_per_step
    evals = [s for s, v in rec.rows.items() if metrics.VAL_LOSS in v]
    assert evals == list(run.eval_steps)
    first, last = rec.rows[evals[0]][metrics.VAL_LOSS], rec.rows[evals[-1]][metrics.VAL_LOSS]
    assert last < first < math.log(384) + 1  # 384: the padded vocabulary of a 320-id BPE + mask
    assert result.val_loss == last and result.val_ppl == pytest.approx(math.exp(last))
    assert result.val_ppl < result.unigram_ppl  # learned more than token frequencies


def test_cuda_graphs_need_compile_and_a_cuda_device(tiny_config):
    with pytest.raises(ConfigError, match="train.cuda_graphs: needs train.compile: true"):
        train(tiny_config(train={"cuda_graphs": True}))
    with pytest.raises(ConfigError, match="train.cuda_graphs: cannot record the passes train.checkpoint_loops"):
        train(tiny_config(train={"cuda_graphs": True, "compile": True, "checkpoint_loops": True}))
    if not torch.cuda.is_available():  # refused before any compile or step (benchmarks/cuda_graphs.py: on CUDA)
        with pytest.raises(ConfigError, match="train.cuda_graphs: needs a CUDA device, and this run trains on cpu"):
            train(tiny_config(train={"cuda_graphs": True, "compile": True}))


def test_resume_gives_the_same_weights_and_metrics(tiny_config, tmp_path):
    cfg = tiny_config(train={"checkpoint_every": 4})
    steps = plan(cfg).steps
    assert steps > 12
    full = Recorder()
    train(cfg, sink=full, checkpoint_dir=tmp_path / "a")

    first = Recorder(stop_at=10)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, sink=first, checkpoint_dir=tmp_path / "b")
    assert checkpoint.latest(tmp_path / "b").step == 8
    second = Recorder()
    result = train(cfg, sink=second, checkpoint_dir=tmp_path / "b")
    assert result.resumed_from == 8 and min(second.rows) == 10

    assert {**first.rows, **second.rows} == full.rows  # bit-identical losses, lr, flops
    final_a = load_file(str(checkpoint.latest(tmp_path / "a").path / "model.safetensors"))
    final_b = load_file(str(checkpoint.latest(tmp_path / "b").path / "model.safetensors"))
    assert final_a.keys() == final_b.keys()
    assert all((final_a[k] == final_b[k]).all() for k in final_a)


def test_corrupt_checkpoint_falls_back_then_fails_clearly(tiny_config, tmp_path, caplog):
    cfg = tiny_config(train={"checkpoint_every": 4, "budget_flops": 1.5e9})
    train(cfg, checkpoint_dir=tmp_path)
    newest, older = sorted(p for p in tmp_path.iterdir() if p.name.startswith("step_"))[::-1]
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # truncated
    assert checkpoint.latest(tmp_path).path == older
    assert "does not match its checksum" in caplog.text
    (older / "state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="no intact checkpoint"):
        train(cfg, checkpoint_dir=tmp_path)


def test_checkpoint_of_another_config_is_refused(tiny_config, tmp_path):
    train(tiny_config(train={"budget_flops": 1e9}), checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointError, match=r"another config \(model.d_model: 32 -> 64\)"):
        train(tiny_config(model={"d_model": 64}, train={"budget_flops": 1e9}), checkpoint_dir=tmp_path)


def test_interrupted_write_leaves_no_checkpoint(tiny_config, tmp_path):
    train(tiny_config(train={"budget_flops": 1e9}), checkpoint_dir=tmp_path)
    good = checkpoint.latest(tmp_path)
    half = tmp_path / ".tmp-step_000000099-123"  # what a crash mid-save leaves behind
    shutil.copytree(good.path, half)
    (half / "model.safetensors").write_bytes(b"")
    assert checkpoint.latest(tmp_path).path == good.path
    layer = torch.nn.Linear(2, 2)
    checkpoint.save(tmp_path, good.step + 1, layer, torch.optim.AdamW(layer.parameters()), {})
    assert not half.exists()  # the next write clears what the killed one left


def test_vocab_too_small_is_a_config_error(tiny_config):
    with pytest.raises(ConfigError, match="model.vocab_size"):
        plan(tiny_config(model={"vocab_size": 320}))


def test_two_data_parallel_workers_follow_one_worker(tiny_config, tmp_path):
    """2 gloo ranks with the same global batch: the same loss curve as one process (to float reduction order),
    the whole batch's FLOPs and tokens in the metrics, and checkpoints written by rank 0 alone."""
    from loopmdm_core import distributed
    cfg = tiny_config(train={"batch_size": 8, "log_every": 2})
    one, two = {}, {}
    train(cfg, sink=lambda step, values: one.update({step: values}))
    out = distributed.launch(2, train, (cfg,), {"sink": lambda step, values: two.update({step: values}),
                                                "checkpoint_dir": tmp_path / "ckpt"}, use_cuda=False)
    assert sorted(one) == sorted(two)
    for step in one:
        assert two[step]["flops"] == one[step]["flops"] and two[step]["tokens"] == one[step]["tokens"]
        for key in ("train/loss", "val/loss"):
            if key in one[step]:
                assert abs(two[step][key] - one[step][key]) < 1e-4 * abs(one[step][key]), (step, key)
    assert out.val_loss == pytest.approx(one[max(one)]["val/loss"], rel=1e-4)
    assert len(list((tmp_path / "ckpt").iterdir())) >= 1
    with pytest.raises(ConfigError, match="does not split over 2"):  # rank 0 refuses; the others are stopped
        distributed.launch(2, train, (tiny_config(train={"batch_size": 7}),), use_cuda=False)


def test_phases_are_timed_and_carried_over_a_resume(tiny_config, tmp_path):
    """perf/<phase>_seconds beside perf/train_seconds: data, start-up, evaluation and checkpoint time of the run
    so far; a resumed run carries the earlier sessions' time in its checkpoint and adds its own."""
    cfg = tiny_config(train={"checkpoint_every": 4})
    first = Recorder(stop_at=10)
    seen = {}
    with pytest.raises(KeyboardInterrupt):
        train(cfg, sink=lambda step, values: (seen.update({step: values}), first(step, values)),
              checkpoint_dir=tmp_path)
    before = seen[8]
    assert before[metrics.PHASE_SECONDS["data"]] > 0 and before[metrics.PHASE_SECONDS["startup"]] > 0
    assert before[metrics.PHASE_SECONDS["checkpoint"]] > 0 and before[metrics.PHASE_SECONDS["compile"]] == 0
    after = {}
    train(cfg, sink=lambda step, values: after.update({step: values}), checkpoint_dir=tmp_path)
    last = after[max(after)]
    for phase in ("data", "startup", "checkpoint"):  # this session's own on top of the saved sessions'
        assert last[metrics.PHASE_SECONDS[phase]] > before[metrics.PHASE_SECONDS[phase]], phase
    assert last[metrics.PHASE_SECONDS["eval"]] > 0 and last[metrics.TRAIN_SECONDS] > before[metrics.TRAIN_SECONDS]
