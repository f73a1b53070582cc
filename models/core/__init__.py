"""The ground layer: errors, artifact I/O, the generic registry and typed JSON.

Every other package of the project stands on it; it imports nothing else of the project.
"""
