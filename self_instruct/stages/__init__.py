"""The pipeline stages: bootstrap, classify, instances, dataset."""
