"""The DSL as data: steps, workflows, tools, agents, operations, schemas and the registries."""
