"""Every random stream ganctl seeds, and how its seed derives from the run's `seed`.

One place for these numbers, so that no two streams meet by accident and a change to one is a
change to the record. Each function returns the integer given to `torch.Generator.manual_seed`.

    training          seed + RANK_STRIDE * rank              data, latents, interpolation
    evaluation        seed + EVAL + offset                   fixed latents and real points
    resume elsewhere  seed + RESUME_STEP * step (per rank)   another device type's state
    rollback          ... + ROLLBACK * attempt               --on-nonfinite rollback
"""

from __future__ import annotations

RANK_STRIDE = 104_729  # rank r's training stream: seed + r * stride (rank 0: the seed itself)
EVAL = 1_000_003  # evaluation never draws from the training stream
RESUME_STEP = 7_919  # a resume whose stream came from another device type: a function of (seed, step)
ROLLBACK = 1_000_003  # each rollback attempt continues on a fresh stream

# Offsets inside the evaluation stream (`eval_seed`).
EVAL_LATENTS = 0  # the evaluator's latents and real points
EVAL_GRADNORM_REAL = 1  # real points of the gradient-norm summary
EVAL_GRADNORM_INTERP = 2  # its interpolation coefficients
EVAL_REAL_FEATURES = 3  # the real images an image run's FID (and the rest) compares against
EVAL_W1_FLOOR = 4  # the real-against-real draws of the W1 floor
EVAL_COPYING = 5  # --holdout: the copying scores' training subsets and cells, the critic's augmentation
# `pop_stats` measures the last batch's interpolates with offset = the generator step.

# Offsets for commands that take their own --seed.
ANALYSIS_FAKE = 1  # gradnorm: latents, interpolation and noise at seed + 1 (real points at seed)
SAMPLE_REAL = 1  # sample: the real points drawn beside 2-D samples at seed + 1 (latents at seed)


def rank_seed(seed: int, rank: int) -> int:
    return seed + RANK_STRIDE * rank


def eval_seed(seed: int, offset: int = 0) -> int:
    return seed + EVAL + offset


def resume_seed(seed: int, step: int, rank: int) -> int:
    return rank_seed(seed + RESUME_STEP * step, rank)


def rollback_seed(seed: int, step: int, rank: int, attempt: int) -> int:
    return rank_seed(seed + RESUME_STEP * step + ROLLBACK * attempt, rank)
