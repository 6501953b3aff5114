"""The 4M model, multimodal masking, token-shard data loading and the distributed trainer."""
