"""Text causal LMs: harvesting (`harvest`), SAE steering (`steer`), a tiny LM built locally (`tiny`)."""
