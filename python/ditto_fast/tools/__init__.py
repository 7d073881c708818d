"""Tooling around the runtime: synthetic checkpoints, ONNX export, TensorRT engine building,
benchmarks, demo inputs, downloads. The CLI and the tests use it; the runtime (`Renderer`,
`engine/`, `pipeline/`, `backends/`) never imports it."""
