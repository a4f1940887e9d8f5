"""The architecture as data: the spec schema and its one-line form, the helpers plugins
transform it with, and ``build(spec, registry)`` that turns it into a torch model."""
