"""Benchmarks and evaluations: speed (Whisper, its engines, packing) and quality (the lexicon, spoken words)."""
