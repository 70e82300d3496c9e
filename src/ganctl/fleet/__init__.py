"""Many runs: jobs and where they run (this process, worker processes, Ray), the torchrun
launcher, comparisons, equal-budget tuning and their reports."""
