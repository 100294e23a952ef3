"""Online learning of per-entity load: features, models, and the learner that ties them."""
