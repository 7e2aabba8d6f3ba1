"""The served model: the compiled forest, its verified bundle, its encoding and reasons."""
