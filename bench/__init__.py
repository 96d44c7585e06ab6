"""signkit bench."""
