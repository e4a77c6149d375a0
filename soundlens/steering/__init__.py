"""soundlens.steering: see DESIGN.md; built in its own issue."""
