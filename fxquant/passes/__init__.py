"""Graph passes, one per file; fxquant.pipeline names those a recipe may list."""
