"""The base layer: errors, config checks, result paths, file writes, units. Imports nothing else of the package."""
