"""Input drift: features and histograms of what the box sees, compared to training."""
