"""The export stage's work: ONNX and torch.export files, their verification and the model card."""
