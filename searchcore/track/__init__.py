"""Records: MLflow runs for each trial and search, the model registry, ONNX export."""
