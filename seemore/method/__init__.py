"""Training objectives and updaters: plain, BDN (stage one), LMA (stage two)."""
