"""`ganctl eval`'s defaults, in a module without torch so that `--help` can show them."""

EVAL_N = 10_000  # generated samples (and real ones, all of a smaller finite set) per `ganctl eval`
