"""Controlled synthesis: the steering API (`api`), presets (`presets`) and dose-response (`evaluate`)."""
