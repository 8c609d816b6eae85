"""Developer tools that keep the docs honest: tables generated from the code and dvc.yaml."""
