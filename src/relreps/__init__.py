"""relreps: relative representations (Moschella et al., ICLR 2023)."""

__version__ = "0.1.0"
