"""soundlens.probing: see DESIGN.md; built in its own issue."""
