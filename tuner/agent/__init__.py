"""The tuner agent: the loop that turns probe windows into steering decisions."""
