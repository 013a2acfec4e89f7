"""What the report says besides its numbers: how each table and figure reads (the same texts on the page, in
speedups.md and on stdout), the notation of a speedup cell and how the intervals are computed."""

INTERVALS = ("intervals: a speedup is the median over seeds (a seed that never reaches the target ranks below every "
             "reached value) with a percentile bootstrap 95% interval over seeds; a paired difference (loop minus "
             "baseline, same seed) has a Student t 95% interval over seeds")

# What each table and figure shows and how to read it: one place for the HTML page, speedups.md and stdout.
CAPTIONS = {
    "speedups": "Each looped config against its two baselines at the same training budget: same-size runs the same "
                "layers (the same parameters) once each; depth-matched has as many distinct layers as the loop "
                "applies (at the mean loop count when it is sampled): the same FLOPs per token, more parameters. "
                "Losses are seed means with a bootstrap 95% interval over seeds; the speedup cells read as listed "
                "under the table.",
    "noise": "Whether each difference stands above the seed-to-seed noise. Per looped config and baseline: the "
             "baseline's final loss ± its standard deviation over seeds, the loss difference at the baseline's final "
             "FLOPs (loop minus baseline, same seed; negative = the looped config is better) with a Student t 95% "
             "interval, and two verdicts. A verdict reads 'no detectable difference' when its 95% interval includes "
             "0 (loss) or 1.0x (speedup); a speedup interval end that is 'not reached' counts as below 1.0x.",
    "learning_rates": "Which learning rate each variant trained with. With an LR ladder: every rate tried at the "
                      "smallest budget with its seed-mean final loss, '(chosen)' marking the one the variant then "
                      "used.",
    "accuracy": "Exact-match accuracy on held-out problems at the end of training: pooled over all seeds' problems "
                "(Wilson 95% interval) and as a mean over seeds (t interval). For looped configs: the gap to "
                "same-size (loop minus same-size, same seed; positive = more accurate) with its verdict, and how "
                "many times fewer FLOPs the looped config needs to reach same-size's final accuracy (read like a "
                "speedup). '(1 seed: sampling noise only)': the interval covers the finite problem set, not "
                "seed-to-seed spread.",
    "iso": "Speedups across budgets: each variant's curve through its final (finished-schedule) losses at every "
           "budget rather than one run's training curve; the same notation and verdicts as the speedup table.",
    "loop_scaling": "Validation loss of the trained weights run with another number of loops at inference (seed "
                    "means). * marks the loop count the model was trained with; a lower loss right of * means extra "
                    "inference loops help. A baseline, trained with one pass, is shown at that pass only: more "
                    "would repeat a whole stack it never learned to repeat.",
    "attention": "Share of the attention of masked query positions that goes to masked key positions, per layer "
                 "application in unrolled order (L1#2: layer 1 on its 2nd loop), seed means. Higher: masked "
                 "positions attend more to each other than to the visible tokens.",
    "task": "Reasoning-task accuracy per inference loop schedule (fixed:k runs k loops; the other schedules choose "
            "the loop count as they go), pooled over seeds with a Wilson 95% interval, and the forward FLOPs one "
            "answer costs. For adaptive schedules: the compute saved against the cheapest fixed loop count that is "
            "at least as accurate. A baseline, trained with one pass, is scored at fixed:1 only.",
    "extrapolations": "Power-law fits L(C) = E + A·C^-α of the seed-mean loss curves at the largest budget, "
                      "projected to 10x and 100x that budget: a fit, not a measurement. A value is shown only with a "
                      "bootstrap interval over seeds and when both fits pass the quality gate (at least 4 points, R² "
                      "≥ 0.95 in log loss, a sane exponent, an interval narrower than 10x); otherwise the reason it "
                      "is withheld.",
    "figures": "Each variant keeps one colour in every figure: same-size grey, depth-matched orange, looped configs "
               "blue, green, purple; a dashed line is a sampled loop count.",
    "loss_vs_flops": "The compared loss against training FLOPs, one panel per budget: each line is a variant's seed "
                     "mean (of each seed's best loss so far), the band spans its best to its worst seed. Lower at "
                     "the same FLOPs is better; at a given loss, the horizontal distance between two lines is the "
                     "speedup.",
    "speedup_bars": "The speedup table as bars, one panel per budget: the median speedup over seeds with its "
                    "bootstrap 95% interval; above the line at 1.0x the looped config needs fewer FLOPs than the "
                    "baseline. A hatched empty bar: the median seed never reached the target (drawn up to the "
                    "interval's high end); each bar says how many seeds reached it.",
    "loss_vs_loops": "Final loss at the same training budget against the loop count, one panel per budget: 1 is the "
                     "same-size baseline, a line joins it to the looped configs of one loop range (a sampled loop "
                     "count sits at its mean, dashed); error bars are bootstrap 95% intervals over seeds.",
    "accuracy_vs_flops": "Held-out exact-match accuracy against training FLOPs, one panel per budget: the line is "
                         "the mean over seeds, the band spans the lowest to the highest seed (seeds of a sampled "
                         "loop count are interpolated to common FLOPs).",
    "loss_vs_inference_loops": "The validation loss at each inference loop count as lines, one panel per budget; the "
                               "star marks the loop count each model was trained with.",
    "attention_shares": "The mask-to-mask attention share per layer application in unrolled order, one panel per "
                        "budget; the tick names are those of the variant with the most layer applications, the "
                        "others are drawn at their own positions.",
    "accuracy_vs_inference_flops": "Task accuracy against forward GFLOPs per answer, one panel per budget: a line "
                                   "per variant through its fixed loop counts (Wilson 95% intervals), diamonds for "
                                   "adaptive schedules; a point above and left of a line reaches that accuracy with "
                                   "less compute.",
}
FIGURE_TITLES = {
    "loss_vs_flops": "Loss vs training FLOPs",
    "speedup_bars": "Speedups",
    "loss_vs_loops": "Final loss vs loop count",
    "accuracy_vs_flops": "Held-out accuracy vs training FLOPs",
    "loss_vs_inference_loops": "Loss vs inference loops",
    "attention_shares": "Attention shares per layer",
    "accuracy_vs_inference_flops": "Task accuracy vs inference compute",
}
# How to read a speedup cell: under the speedup table.
NOTATION = [
    "speedup: how many times fewer training FLOPs the looped config needs than the baseline to reach the baseline's "
    "final loss (baseline FLOPs / looped FLOPs, same budget and seed), read off the looped config's loss-vs-FLOPs "
    "curve, never extrapolated; above 1.00x the looped config is cheaper, below it dearer.",
    "2.00x [1.50, 3.00]: the median over seeds and its bootstrap 95% interval.",
    "reached k/n seeds: in k of the n seeds the looped config's curve got down to the target within its budget.",
    "not reached: the curve never got down to the target within its budget; such a seed ranks below every reached "
    "value. 'not reached (median)': at least half the seeds did not reach it; as an interval end: the interval "
    "extends below every speedup measured.",
    "≥: the looped config already beat the target at its first evaluation, so the speedup is at least the value "
    "shown.",
    "(1 seed: no interval): a single seed, so there is no seed-to-seed spread to judge a difference against.",
    "n/a (no baseline): the sweep has no such baseline for this config; '-': not a looped config.",
]
EXTRAPOLATIONS = "Extrapolations (fit, not measured)"
