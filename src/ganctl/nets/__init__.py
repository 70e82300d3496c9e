"""The networks of a run (a generator, its EMA and a critic) and the checkpoint file that carries
them with their config and training state."""
