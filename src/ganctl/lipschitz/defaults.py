"""`ganctl gradnorm`'s defaults, in a module without torch so that `--help` can show them."""

GRADNORM_N = 4096  # points per set when one checkpoint is measured
TRAJECTORY_N = 1024  # points per set per checkpoint of a trajectory
TOL = 0.1  # norms above 1 + tol are violations, below 1 - tol under-use
