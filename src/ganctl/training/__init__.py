"""Training: the step (`engine`), its numerical guard and stats, its state in and out, the loop and
its run folder, the events it reports, several processes (`distributed`) and the hand-written MLP
step."""
