"""SAM instances, SAM edges and a fast automatic mask generator (4M-21 sam_instance / tok_sam_edge)."""
