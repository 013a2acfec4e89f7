"""Inference-time evaluation of a trained model: validation ELBO as a function of the loop count.

More loops at inference = more compute: `loop_scaling` scores the same weights at n_loops = 1..K (beyond the
training count too) on the fixed validation work of diffusion.validation_elbo, with the forward FLOPs per
token each loop count costs, so loss can be read against inference compute.
"""

from . import diffusion, flops, loop_sampling


def loop_scaling(model, batches, mask_id: int, loops, n_t: int = 8, seed: int = 1234, autocast=None,
                 fixed=None) -> list[dict]:
    """One row per loop count: {"n_loops", "val_loss", "val_ppl", "forward_flops_per_token"}; `fixed` as
    diffusion.validation_elbo takes it (prompt tokens, never masked)."""
    was_training = model.training
    model.eval()
    seq_len = batches[0].shape[1]
    rows = []
    for k in loops:
        loss = diffusion.validation_elbo(model, batches, mask_id, n_t, seed, n_loops=k, autocast=autocast,
                                         fixed=fixed)
        rows.append({"n_loops": k, "val_loss": loss, "val_ppl": diffusion.perplexity(loss),
                     "forward_flops_per_token": flops.forward_flops_per_token(model.cfg, seq_len, k)})
    model.train(was_training)
    return rows


def inference_eval(model, data, cfg, max_loops: int = 0, attention_t: float = 0.5) -> dict:
    """What a sweep asks after training: validation ELBO at n_loops = 1..max_loops (0: twice the trained
    count; 1 only for a model trained with one pass, loop_sampling.trains_one_pass) and the mask-to-mask
    attention share per applied layer at mask ratio `attention_t` (0: skipped)."""
    from .analysis import masked_attention_share
    from .device import autocast_for
    device = next(model.parameters()).device
    batches, fixed = data.val_batches(cfg.eval.n_batches, cfg.eval.batch_size)  # host: masks are drawn there
    top = 1 if _one_pass(cfg) else max_loops or 2 * cfg.model.n_loops
    out = {"loop_scaling": loop_scaling(model, batches, data.mask_id, range(1, top + 1), cfg.eval.n_t, cfg.eval.seed,
                                        autocast=autocast_for(device, cfg.train.dtype),
                                        fixed=fixed)}
    if attention_t > 0:
        out["attention"] = masked_attention_share(model, batches[0].to(device), attention_t, data.mask_id, seed=cfg.eval.seed)
    return out


def _one_pass(cfg) -> bool:
    return loop_sampling.trains_one_pass(cfg.model.n_loops, cfg.train.loop_sampling)


def default_schedules(n_loops: int) -> list[str]:
    """Fixed 1..2x the trained loop count, and for a looped model three adaptive schedules over the same range."""
    top = 2 * n_loops
    out = [f"fixed:{k}" for k in range(1, top + 1)]
    if n_loops > 1:
        out += [f"ramp:{top}:1", f"confidence:1:{top}:0.9", f"convergence:0.05:1:{top}"]
    return out


def task_eval(model, data, cfg, test: str, n_problems: int, answer_tokens: int, n_steps: int,
              schedule_specs=()) -> list[dict]:
    """Accuracy and forward FLOPs per problem on a reasoning task's held-out problems, per loop schedule.
    `test` names the problems (tasks.py spec; "" = the test split of the task the model was trained with).
    A model trained on prompted rows (data.task_format) answers as it was trained, in the rest of a row of
    data.seq_len tokens (at least `answer_tokens`); otherwise in `answer_tokens` tokens. A model trained with
    one pass (loop_sampling.trains_one_pass) is scored at fixed:1 only, whatever `schedule_specs` asks."""
    from . import schedules, tasks
    problems = tasks.problems(test or cfg.data.task, "test", n_problems)
    fill_to = cfg.data.seq_len if cfg.data.task and cfg.data.task_format == "prompted" else 0
    rows = []
    specs = ["fixed:1"] if _one_pass(cfg) else schedule_specs or default_schedules(cfg.model.n_loops)
    for spec in specs:
        out = task_accuracy(model, data.tokenizer, problems, data.mask_id, answer_tokens, n_steps,
                            schedule=schedules.parse(spec), fill_to=fill_to, batch_size=256)
        rows.append({"schedule": spec, "accuracy": out["accuracy"], "problems": out["problems"],
                     "forward_flops_per_problem": out["forward_flops"] / out["problems"]})
    return rows


def task_accuracy(model, tokenizer, problems, mask_id: int, answer_tokens: int, n_steps: int, schedule=None,
                  method: str = "confidence", seed: int = 0, fill_to: int = 0, batch_size: int = 1,
                  autocast=None) -> dict:
    """Exact-match accuracy on `problems` (tasks.py): each prompt is completed greedily with `answer_tokens`
    generated tokens, or up to the end of a row of `fill_to` tokens (a prompted task's row), cut at the first end of
    document, the first number or letter answer extracted and compared; plus the forward FLOPs the generations
    cost. Problems whose prompts have the same length are generated together, up to `batch_size` at a time:
    every row's answer, loop counts and FLOPs are those it gets alone (greedy, per-row reveal order, per-row
    adaptive loop counts: sample.py), so the batch size changes the speed, not the scores."""
    import contextlib

    import torch

    from .sample import sample
    from .tasks import is_correct
    correct, spent = 0, 0
    by_length: dict[int, list] = {}
    for problem, ids in zip(problems, tokenizer.encode_batch([p.prompt for p in problems])):
        by_length.setdefault(len(ids), []).append((problem, ids))
    for prompt_len, items in by_length.items():
        # a prompted row is exactly the length the model was trained on: more masked tokens would change its input
        length = fill_to if fill_to > prompt_len else prompt_len + answer_tokens
        for lo in range(0, len(items), batch_size):
            chunk = items[lo:lo + batch_size]
            prompt = torch.tensor([ids for _, ids in chunk], dtype=torch.long)
            with autocast() if autocast else contextlib.nullcontext():
                result = sample(model, batch_size=len(chunk), length=length, mask_id=mask_id, n_tokens=mask_id,
                                n_steps=n_steps, method=method, prompt=prompt, schedule=schedule, seed=seed,
                                temperature=0.0)
            spent += result.flops
            for (problem, _), row in zip(chunk, result.tokens[:, prompt_len:].tolist()):
                if tokenizer.eos_id in row:  # what follows the end of the document is not part of the answer
                    row = row[:row.index(tokenizer.eos_id)]
                correct += is_correct(tokenizer.decode(row), problem)
    return {"accuracy": correct / len(problems), "problems": len(problems), "forward_flops": spent}
