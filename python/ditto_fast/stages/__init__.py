"""The pipeline's stages, one module each, backend-agnostic: networks are called through the
`backends.base.Network` protocol with NumPy arrays."""
