"""Data: the built-in spoken corpus, WebDataset shards, safe decoders and the budget-batching loader."""

from mmchunk.data.loader import Batch, DataConfig, Sample, Skipped, expand_urls, make_dataset, make_loader

__all__ = ["Batch", "DataConfig", "Sample", "Skipped", "expand_urls", "make_dataset", "make_loader"]
