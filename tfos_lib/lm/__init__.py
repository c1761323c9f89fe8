"""Language models: n-gram baselines counted in Spark, and text generation from a trained Keras model."""
