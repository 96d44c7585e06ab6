"""Fitting the frame pipeline on annotated road frames: the proposal ranking, "not a sign" crops, the sign map."""
