"""How Lipschitz a critic is: the distribution of its input-gradient norm on point sets
(`norms`), certified upper bounds on its constant (`bounds`), exact transport between samples
and the lower bounds it gives (`transport`), and the whole report, its verdict, trajectories and
pictures (`analysis`). `ganctl gradnorm` is one call of `analysis`."""
