"""The data: the dataset catalog, fetching the official files, reading them as tensors, any image as a digit."""
