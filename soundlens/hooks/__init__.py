"""soundlens.hooks: see DESIGN.md; built in its own issue."""
