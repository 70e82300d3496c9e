"""How good a generator is, for any data: the data's own metrics (2-D modes and high quality, the
`shapes` judge, class consistency: `modes`), image metrics in named feature spaces (`scores`,
`fidelity`, `features`, `dinov2`, `reference`), scores from a classifier of the user's labelled
data (`classifier`), the CI thresholds and which way each metric is better (`thresholds`), and
`ganctl eval` as one library call (`evaluate`)."""
