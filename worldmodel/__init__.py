"""Video models and the data they eat: tokenizers, transformers, likelihoods, metrics, datasets."""
