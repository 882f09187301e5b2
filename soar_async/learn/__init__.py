"""The learning loop: training data from the archive and seeds, the daemon around the conductor."""
