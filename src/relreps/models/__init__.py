"""Small trainable networks used by the experiments (autoencoders, CNNs, GNNs)."""
