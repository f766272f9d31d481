"""Data: volume I/O, the weak-annotation datalist, its validator and the synthetic HL60-like generator."""
