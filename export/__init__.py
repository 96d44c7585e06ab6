"""signkit export."""
