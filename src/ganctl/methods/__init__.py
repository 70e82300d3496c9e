"""What a method is: the registry of methods and their recipes, resolving a config, the defaults in
words, each method's strategy, and the losses and penalties as pure tensor maths. The registry,
resolve and help import no torch, so `--help` stays fast."""
