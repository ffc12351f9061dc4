"""Research workflows on top of fit: hyperparameter search, MatBench runs, embeddings."""
