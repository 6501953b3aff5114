"""Pseudo-labelling: one module per specialist labeler and the Ray runner that feeds them decoded images."""
