"""Data sources (synthetic, CSV, WebDataset), tags, transforms and collation."""
