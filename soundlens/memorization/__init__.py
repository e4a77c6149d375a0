"""soundlens.memorization: see DESIGN.md; built in its own issue."""
