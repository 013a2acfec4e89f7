"""Metric names, the one place they are defined (docs/mlflow.md#metrics). Step = optimizer step."""

TRAIN_LOSS = "train/loss"  # mean training loss over the steps since the last log
VAL_LOSS = "val/loss"  # negative ELBO, nats/token, on the fixed validation batches
VAL_PPL = "val/ppl"  # exp(val/loss)
# Task runs (data.task, prompted rows): the validation ELBO over answer tokens only (no prompt, no EOS padding),
# nats per answer token, and exact-match accuracy of greedy answers to held-out problems (eval.task_problems)
VAL_ANSWER_LOSS = "val/answer_loss"
VAL_ACCURACY = "val/accuracy"
FLOPS = "flops"  # cumulative training FLOPs (flops.py), logged with every loss so loss can be plotted against it
TOKENS = "tokens"  # cumulative training tokens
LR = "lr"
TOKENS_PER_S = "perf/tokens_per_s"
MFU = "perf/mfu"  # model FLOPs per second / the peak (train.peak_flops), per logging window; never above 1
# The run's MFU: all its training FLOPs over its perf/train_seconds, logged once, with the last step. The figure to
# quote for a run: trials sharing a GPU often log their last windows after the others finished, when perf/mfu reads
# higher than the run ever averaged
MFU_RUN = "perf/mfu_run"
TRAIN_SECONDS = "perf/train_seconds"  # cumulative wall time spent in training steps (no eval, no set-up)
# Wall time of a trial's other phases, cumulative over resumed sessions, logged with perf/train_seconds (the
# run's last checkpoint write comes after its last log); a sweep's closing summary sums them over trials
PHASE_SECONDS = {phase: f"perf/{phase}_seconds" for phase in ("startup", "data", "compile", "eval", "checkpoint")}
INFER_SECONDS = "perf/infer_seconds"  # the evaluations after training (evaluate.inference_eval, task_eval)
TRAIN_LOOPS = "train/n_loops"  # sampled loop counts (train.loop_sampling): their mean since the last log

ALL = (TRAIN_LOSS, VAL_LOSS, VAL_PPL, VAL_ANSWER_LOSS, VAL_ACCURACY, FLOPS, TOKENS, LR, TOKENS_PER_S, MFU,
       MFU_RUN, TRAIN_SECONDS, TRAIN_LOOPS, *PHASE_SECONDS.values())

# After training (evaluate.inference_eval); their step is not an optimizer step but the x of the curve:
INFER_VAL_LOSS = "infer/val_loss"  # step = n_loops used at inference
INFER_FLOPS_PER_TOKEN = "infer/forward_flops_per_token"  # step = n_loops
MASK_TO_MASK = "attn/mask_to_mask"  # step = position of the layer application in the unrolled stack (0-based)

# Reasoning-task evaluation after training, one pair per inference loop schedule (logged at step 0):
TASK_ACCURACY = "task/accuracy/"  # + schedule_key(spec): exact-match accuracy on the held-out problems
TASK_FLOPS = "task/forward_flops_per_problem/"  # + schedule_key(spec): mean forward FLOPs of one answer
TASK_PROBLEMS = "task/problems"  # how many problems each accuracy is over (for its binomial interval)


def schedule_key(spec: str) -> str:
    """A schedule string (schedules.py) as a metric-name suffix: MLflow names allow no ':' (on Windows) or ','."""
    return spec.replace(":", "_").replace(",", "-")


def schedule_from_key(key: str) -> str:
    """Inverse of schedule_key: schedule strings contain no '_' or '-' of their own."""
    return key.replace("_", ":").replace("-", ",")
