"""Ingestion: URL lists (CC12M, COYO), folders, WebDataset, C4 text and the offline demo sources -> image shards."""
