"""Pipeline stages, one module each, in DVC order: extract, split, augment, spectrograms."""
