"""Generation samplers, retrieval, metrics and evaluation reports."""
