"""The data contract, the lowest layer of curate: Dataset folders and their manifests, step inputs, schemas and
column types, hashing, run-folder layout, errors, progress and fault points. Imports nothing else of curate."""
