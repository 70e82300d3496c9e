"""Everything that measures: quality evaluation (the data's own metrics and image metrics in named
feature spaces), gradient norms and Lipschitz bounds, samples and pictures, and which way every
metric is better."""
