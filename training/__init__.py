"""Central side: datasets, training, export, quantisation and signed model packages."""
