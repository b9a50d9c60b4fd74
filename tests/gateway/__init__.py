"""Gateway tests: the rendered api-gateway chart on a real nginx in front of mock backends."""
