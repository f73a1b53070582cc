"""Torch -> ONNX export driver, torch-level op replacements, ONNX passes and TensorRT build configuration."""
